import type { RequestHandler } from 'express';
import type { z } from 'zod';
import { normalizePath } from '../../core/path.js';
import { ProblemWriter } from '../../problems/problem-details.js';
import { systemClock, type Clock } from '../../core/clock.js';
import { compileTrust } from '../../core/client-ip.js';
import { ensureContext } from '../../core/request-id.js';
import { requestHeaderPlan } from './headers.js';
import { ProxyStage } from './proxy.js';
import { upstreamSchema } from './schema.js';
import { UpstreamPool } from './upstream-pool.js';

export interface ProxyOptions extends z.input<typeof upstreamSchema> {
  /** Rewrite upstream errors as problem+json (default), only the 5xx ones, or pass them through. */
  upstreamErrors?: 'rewrite' | 'rewrite-5xx' | 'passthrough';
  /** Problem `type` base for the problems this middleware makes. */
  typeBase?: string;
  /** Largest request body streamed without a Content-Length. Default 1 MiB. */
  bodyLimit?: number;
  /** As Express' `trust proxy`, for `X-Forwarded-*`. Default: trust nobody. */
  trustProxy?: boolean | number | string | string[];
  /** Header name of API keys (not forwarded). Default `x-api-key`. */
  apiKeyHeader?: string;
  /** API key prefix (a `Bearer <prefix>_…` credential is not forwarded). Default `tg`. */
  apiKeyPrefix?: string;
  clock?: Clock;
}

/**
 * Express middleware that forwards the request to `targets` (round-robin, passive health,
 * retries, timeouts) and streams the answer back. Errors go to `next` as Problems, for
 * `problemDetails()` to answer.
 *
 * @example
 * app.use(requestId());
 * app.use('/orders', proxy({ targets: ['http://127.0.0.1:9001'], timeoutMs: 5000 }));
 * app.use(problemDetails());
 */
export function proxy(options: ProxyOptions): RequestHandler {
  const {
    upstreamErrors,
    typeBase,
    bodyLimit,
    trustProxy,
    apiKeyHeader,
    apiKeyPrefix,
    clock: givenClock,
    ...rest
  } = options;
  const upstream = upstreamSchema.parse(rest);
  const clock = givenClock ?? systemClock;
  const trustsNobody = trustProxy === undefined || trustProxy === false;
  const stage = new ProxyStage({
    upstream,
    upstreamErrors: upstreamErrors ?? 'rewrite',
    pool: new UpstreamPool(upstream, clock),
    headers: requestHeaderPlan({
      apiKeyHeader: (apiKeyHeader ?? 'x-api-key').toLowerCase(),
      apiKeyPrefix: apiKeyPrefix ?? 'tg',
      preserveHost: upstream.preserveHost,
      trust: compileTrust(trustProxy ?? false),
      trustsNobody,
    }),
    writer: new ProblemWriter({ typeBase: typeBase ?? 'https://tollgate.dev/problems/' }),
    clock,
    bodyLimit: bodyLimit ?? 1_048_576,
  });
  return function proxyMiddleware(req, res, next) {
    const ctx = ensureContext(req, res, clock);
    try {
      // In a mounted app `req.url` is relative to the mount point, as the upstream should see it.
      const q = req.url.indexOf('?');
      ctx.path = normalizePath(q === -1 ? req.url : req.url.slice(0, q));
      ctx.search = q === -1 ? '' : req.url.slice(q);
    } catch (err) {
      next(err);
      return;
    }
    stage.run(ctx).then(undefined, next);
  };
}
