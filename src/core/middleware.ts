import type { IncomingMessage, ServerResponse } from 'node:http';
import type { RequestHandler } from 'express';
import { contextOf, type RequestContext } from './context.js';
import { systemClock, type Clock } from './clock.js';
import { splitTarget } from './path.js';
import { newContext } from './request-id.js';
import { runStages, type Stage } from './stage.js';

export interface MiddlewareOptions {
  /** The clock of the context a first Tollgate middleware makes. Default: the system clock. */
  clock?: Clock | undefined;
  /** Per-request set-up before the stages run (the proxy reads the path relative to its mount). */
  prepare?: ((ctx: RequestContext, req: IncomingMessage) => void) | undefined;
  /** Told about a close hook that threw (the others still run). Default: a process warning. */
  onHookError?: ((err: unknown) => void) | undefined;
}

const warnHookError = (err: unknown) =>
  process.emitWarning(`tollgate: a close hook failed: ${err instanceof Error ? err.message : String(err)}`);

/**
 * The request context of a request in a plain Express app: the one an earlier Tollgate
 * middleware made, or a new one whose close hooks run — each on its own, a throwing hook cannot
 * stop the next — when the response is over.
 */
export function ensureContext(
  req: IncomingMessage,
  res: ServerResponse,
  clock: Clock = systemClock,
  onHookError: (err: unknown) => void = warnHookError,
): RequestContext {
  const known = contextOf(req);
  if (known !== undefined) return known;
  const ctx = newContext(req, res, clock);
  const { path, search } = splitTarget(req.url ?? '/');
  ctx.path = path;
  ctx.search = search;
  res.once('close', () => ctx.close(onHookError));
  return ctx;
}

/**
 * The one adapter from pipeline stages to Express middleware, used by every middleware Tollgate
 * exports (and by custom policies written as stages): runs `stages` on the request's context;
 * a stage that answered (it set `ctx.handled`, or started the response) ends the chain, anything
 * thrown or rejected goes to `next(err)` for `problemDetails()`, otherwise `next()`.
 *
 * @example
 * app.use('/orders', toMiddleware('orders', [myStage]));
 */
export function toMiddleware(
  name: string,
  stages: readonly Stage[],
  options: MiddlewareOptions = {},
): RequestHandler {
  const clock = options.clock ?? systemClock;
  const prepare = options.prepare;
  const onHookError = options.onHookError ?? warnHookError;
  const middleware: RequestHandler = (req, res, next) => {
    const ctx = ensureContext(req, res, clock, onHookError);
    const after = () => {
      if (!ctx.handled && !res.headersSent) next();
    };
    try {
      prepare?.(ctx, req);
      const pending = runStages(ctx, stages);
      if (pending === undefined) after();
      else pending.then(after, next);
    } catch (err) {
      next(err);
    }
  };
  // Named after what it runs, for readable stacks.
  Object.defineProperty(middleware, 'name', { value: `${name}Middleware` });
  return middleware;
}

/**
 * Express middleware: accepts or makes the request id (SPEC §4), echoes it as `X-Request-Id`,
 * and starts the Tollgate request context the other middlewares share.
 *
 * @example
 * app.use(requestId());
 * app.get('/', (req, res) => res.json({ id: res.getHeader('x-request-id') }));
 */
export function requestId(options: { clock?: Clock } = {}): RequestHandler {
  const clock = options.clock ?? systemClock;
  return function requestIdMiddleware(req, res, next) {
    const ctx = ensureContext(req, res, clock);
    res.setHeader('x-request-id', ctx.requestId);
    next();
  };
}
