import type { RequestHandler } from 'express';
import { toMiddleware } from '../../core/middleware.js';
import { createConcurrencyStage } from './concurrency.js';
import { concurrencySchema } from './schema.js';
import { MemoryConcurrency, type ConcurrencyStore } from './store.js';

export interface ConcurrencyOptions {
  /** Requests in flight at once per `by` value. */
  limit: number;
  /** What is counted, as for rate limits. */
  by: 'ip' | 'key' | 'subject' | 'tenant' | 'route' | 'global';
  /** Lease of a slot in Redis (renewed while the request runs). Default 60. */
  leaseSec?: number;
  /**
   * Where slots live: per process by default; `new ResilientConcurrency(redis)` across instances
   * (while Redis is away it follows the handle's `onError`: `closed` 503, `open` per-process slots).
   */
  store?: ConcurrencyStore;
  /** A name for the counted scope (the gateway uses the route id). Default `express`. */
  scope?: string;
}

/**
 * Express middleware: a concurrency limit (SPEC §9) — one over is a 429 Problem for
 * `problemDetails()`; the slot is freed when the response ends or the client leaves.
 *
 * @example
 * app.use('/stream', authenticate({...}), concurrency({ limit: 2, by: 'key' }));
 */
export function concurrency(options: ConcurrencyOptions): RequestHandler {
  const { store, scope, ...rest } = options;
  return toMiddleware('concurrency', [
    createConcurrencyStage({
      routeId: scope ?? 'express',
      config: concurrencySchema.parse(rest),
      store: store ?? new MemoryConcurrency(),
    }),
  ]);
}
