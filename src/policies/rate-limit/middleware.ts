import type { RequestHandler } from 'express';
import { systemClock, type Clock } from '../../core/clock.js';
import { toMiddleware } from '../../core/middleware.js';
import type { RateLimitBy } from '../../core/identity.js';
import { MemoryCounters, type CounterStore } from './counters.js';
import { createRateLimitStage } from './rate-limit.js';
import { rateLimitListSchema } from './schema.js';

/** One rate limit as a library user writes it (`cost` defaults to 1). */
export interface RateLimitRuleOptions {
  name: string;
  by: RateLimitBy;
  limit: number;
  windowSec: number;
  cost?: number;
}

export interface RateLimitOptions {
  /** Policies, as a route's `rateLimits`. */
  limits: RateLimitRuleOptions[];
  /** Where counters live. Default: in this process (`MemoryCounters`); `RedisCounters` to share them. */
  store?: CounterStore;
  /** Names the counters (as a route id does). Default `express`. */
  id?: string;
  clock?: Clock;
}

/**
 * Express middleware enforcing rate limits, with `RateLimit-Policy`/`RateLimit` headers and 429
 * rate-limit-exceeded (for `problemDetails()`). Limits by key, subject or tenant use the identity
 * `authenticate()` set; anonymous requests count by client IP.
 *
 * @example
 * app.use('/search', rateLimit({ limits: [{ name: 'burst', by: 'ip', limit: 20, windowSec: 1 }] }));
 */
export function rateLimit(options: RateLimitOptions): RequestHandler {
  const clock = options.clock ?? systemClock;
  return toMiddleware(
    'rateLimit',
    [
      createRateLimitStage({
        routeId: options.id ?? 'express',
        rateLimits: rateLimitListSchema.parse(options.limits),
        quotaCost: undefined,
        plans: {},
        counters: options.store ?? new MemoryCounters(),
        clock,
        local: false,
      }),
    ],
    { clock },
  );
}
