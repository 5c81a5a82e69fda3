import type { RequestHandler } from 'express';
import { systemClock, type Clock } from '../../core/clock.js';
import { toMiddleware } from '../../core/middleware.js';
import { createFaultStage } from './fault.js';
import { faultSchema } from './schema.js';

export interface FaultOptions {
  /** Hold `percent` % of requests for `ms` plus up to `jitterMs` milliseconds (at most 60 000 in all). */
  delay?: { ms: number; jitterMs?: number; percent: number };
  /** Answer `percent` % of requests with a problem of `status` (500, 502, 503, 504 or 429) and `injected: true`. */
  abort?: { status: number; percent: number };
  /** Uniform in [0, 1). Default `Math.random`. */
  random?: () => number;
  clock?: Clock;
}

/**
 * Express middleware injecting faults (for `problemDetails()`): delays and aborts a share of the
 * requests it sees. Put it after authentication and limits, so a load test exercises them.
 *
 * @example
 * app.use('/orders', fault({ delay: { ms: 200, jitterMs: 100, percent: 10 }, abort: { status: 503, percent: 1 } }));
 */
export function fault(options: FaultOptions): RequestHandler {
  const { random, clock = systemClock, ...config } = options;
  return toMiddleware('fault', [createFaultStage({ fault: faultSchema.parse(config), clock, random })], {
    clock,
  });
}
