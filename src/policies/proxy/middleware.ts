import type { RequestHandler } from 'express';
import { normalizePath } from '../../core/path.js';
import { systemClock, type Clock } from '../../core/clock.js';
import { compileTrust } from '../../core/client-ip.js';
import { toMiddleware } from '../../core/middleware.js';
import { ProblemWriter, type InstanceOption } from '../../problems/problem-details.js';
import { typeBaseSchema } from '../../problems/schema.js';
import { apiKeysSchema } from '../authenticate/schema.js';
import { bodyBytesSchema } from '../body-limit/schema.js';
import { requestHeaderPlan } from './headers.js';
import { ProxyStage } from './proxy.js';
import { upstreamErrorsSchema, upstreamSchema, type UpstreamOptions } from './schema.js';
import { UpstreamPool } from './upstream-pool.js';

export interface ProxyOptions extends UpstreamOptions {
  /** Rewrite upstream errors as problem+json (default), only the 5xx ones, or pass them through. */
  upstreamErrors?: 'rewrite' | 'rewrite-5xx' | 'passthrough';
  /** Problem `type` base for the problems this middleware makes. Default: `problems.typeBase`'s. */
  typeBase?: string;
  /** `instance` of the problems it writes (upstream errors): a base the request id is appended to, or a function. Default `/requests/<id>`. */
  instance?: InstanceOption;
  /** Largest request body streamed without a Content-Length. Default: `limits.bodyBytes`' default. */
  bodyLimit?: number;
  /** As Express' `trust proxy`, for `X-Forwarded-*`. Default: trust nobody. */
  trustProxy?: boolean | number | string | string[];
  /** Header name of API keys (not forwarded). Default: `auth.apiKeys.header`'s (`x-api-key`). */
  apiKeyHeader?: string;
  /** API key prefix (a `Bearer <prefix>_…` credential is not forwarded). Default `auth.apiKeys.prefix`'s. */
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
    instance,
    bodyLimit,
    trustProxy,
    apiKeyHeader,
    apiKeyPrefix,
    clock: givenClock,
    ...rest
  } = options;
  const upstream = upstreamSchema.parse(rest);
  const apiKeys = apiKeysSchema.parse({ header: apiKeyHeader, prefix: apiKeyPrefix });
  const clock = givenClock ?? systemClock;
  const trustsNobody = trustProxy === undefined || trustProxy === false;
  const stage = new ProxyStage({
    upstream,
    upstreamErrors: upstreamErrorsSchema.parse(upstreamErrors),
    pool: new UpstreamPool(upstream, clock),
    headers: requestHeaderPlan({
      apiKeyHeader: apiKeys.header,
      apiKeyPrefix: apiKeys.prefix,
      preserveHost: upstream.preserveHost,
      trust: compileTrust(trustProxy ?? false),
      trustsNobody,
    }),
    writer: new ProblemWriter({ typeBase: typeBaseSchema.parse(typeBase), instance }),
    clock,
    bodyLimit: bodyBytesSchema.parse(bodyLimit),
  });
  return toMiddleware('proxy', [stage], {
    clock,
    // In a mounted app `req.url` is relative to the mount point, as the upstream should see it.
    prepare(ctx, req) {
      const url = req.url ?? '/';
      const q = url.indexOf('?');
      ctx.path = normalizePath(q === -1 ? url : url.slice(0, q));
      ctx.search = q === -1 ? '' : url.slice(q);
    },
  });
}
