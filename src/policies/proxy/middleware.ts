import { ServerResponse, type IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { RequestHandler } from 'express';
import { newContext } from '../../core/request-id.js';
import { runStages } from '../../core/stage.js';
import { toProblem } from '../../problems/problem-details.js';
import { createWebSocketStage } from '../websocket/websocket.js';
import { WebSocketTunnels } from './websocket-tunnel.js';
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
import type { Tracer } from '@opentelemetry/api';
import { libraryTrace } from '../../observability/telemetry.js';

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
  /** Idle timeout of proxied WebSockets (`upgrade`), seconds. Default 300. */
  idleTimeoutSec?: number;
  /**
   * An OpenTelemetry tracer of the app (`trace.getTracer('my-app')` from `@opentelemetry/api`, with
   * the app's own SDK registered): each upstream attempt gets a client span, a child of the app's
   * active span (its HTTP instrumentation's server span) or else of the request's `traceparent`,
   * and the upstream gets that span as its parent. Without one, `traceparent` is forwarded as it came
   * (or as `requestId()` started it) and no tracer is called.
   */
  tracer?: Tracer;
}

/**
 * The proxy middleware, and its WebSocket path: `upgrade` is a listener for the server's
 * `upgrade` event that proxies WebSocket handshakes to the same targets (a malformed handshake or
 * an upstream failure is answered as problem+json on the socket).
 */
export type ProxyMiddleware = RequestHandler & {
  upgrade: (req: IncomingMessage, socket: Duplex, head: Buffer) => void;
  /** The open WebSockets (`closeAll(1001)` when the server drains). */
  readonly websockets: WebSocketTunnels;
};

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
export function proxy(options: ProxyOptions): ProxyMiddleware {
  const {
    upstreamErrors,
    typeBase,
    instance,
    bodyLimit,
    trustProxy,
    apiKeyHeader,
    apiKeyPrefix,
    clock: givenClock,
    idleTimeoutSec,
    tracer,
    ...rest
  } = options;
  const upstream = upstreamSchema.parse(rest);
  const apiKeys = apiKeysSchema.parse({ header: apiKeyHeader, prefix: apiKeyPrefix });
  const clock = givenClock ?? systemClock;
  const trustsNobody = trustProxy === undefined || trustProxy === false;
  const websockets = new WebSocketTunnels();
  const writer = new ProblemWriter({ typeBase: typeBaseSchema.parse(typeBase), instance });
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
    writer,
    clock,
    bodyLimit: bodyBytesSchema.parse(bodyLimit),
    websocket: { idleTimeoutMs: (idleTimeoutSec ?? 300) * 1000, tunnels: websockets },
  });
  const handshake = [createWebSocketStage(), stage];
  const upgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    socket.on('error', () => socket.destroy());
    const res = new ServerResponse(req);
    res.shouldKeepAlive = false;
    res.assignSocket(socket as Socket);
    const ctx = newContext(req, res, clock);
    if (tracer !== undefined) ctx.trace = libraryTrace(tracer, ctx);
    const state = { socket, head, established: false, closeCode: undefined };
    ctx.upgrade = state;
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    ctx.path = normalizePath(q === -1 ? url : url.slice(0, q));
    ctx.search = q === -1 ? '' : url.slice(q);
    res.once('finish', () => {
      if (!state.established) (socket as Socket).destroySoon();
    });
    res.once('close', () => ctx.close(() => undefined));
    const fail = (err: unknown) => {
      if (!res.writableEnded && !res.destroyed) writer.write(res, toProblem(err), ctx.requestId);
    };
    try {
      const pending = runStages(ctx, handshake);
      if (pending !== undefined) pending.then(undefined, fail);
    } catch (err) {
      fail(err);
    }
  };
  const middleware = toMiddleware('proxy', [stage], {
    clock,
    // In a mounted app `req.url` is relative to the mount point, as the upstream should see it.
    prepare(ctx, req) {
      const url = req.url ?? '/';
      const q = url.indexOf('?');
      ctx.path = normalizePath(q === -1 ? url : url.slice(0, q));
      ctx.search = q === -1 ? '' : url.slice(q);
      if (tracer !== undefined && ctx.trace === undefined) ctx.trace = libraryTrace(tracer, ctx);
    },
  });
  return Object.assign(middleware, { upgrade, websockets });
}
