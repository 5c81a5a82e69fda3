import type { RequestHandler } from 'express';
import { systemClock, type Clock } from '../../core/clock.js';
import { toMiddleware } from '../../core/middleware.js';
import { MemoryCounters, type CounterStore } from './counters.js';
import { createRateLimitStage } from './rate-limit.js';
import { metersSchema, rateLimitListSchema } from './schema.js';
import type { RateLimitBy } from '../../core/identity.js';

/**
 * One rate limit as a library user writes it: a route's `rateLimits` entry (SPEC §7, §10), with
 * `cost` defaulting to 1 and `algorithm`, `mode` and `meter` as in the config file (validated by
 * the same schema when the middleware is made).
 */
export interface RateLimitRuleOptions {
  name: string;
  by: RateLimitBy;
  limit: number;
  windowSec: number;
  cost?: number;
  /** `fixed-window` (default) or `sliding-window`. */
  algorithm?: 'fixed-window' | 'sliding-window';
  /** `enforce` (default) or `shadow`: counts and reports would-be refusals, refuses nothing. */
  mode?: 'enforce' | 'shadow';
  /** Counts this meter (one of `meters`) instead of requests. */
  meter?: string;
}

export interface RateLimitOptions {
  /** Policies, as a route's `rateLimits`. */
  limits: RateLimitRuleOptions[];
  /** Where counters live. Default: in this process (`MemoryCounters`); `RedisCounters` to share them. */
  store?: CounterStore;
  /**
   * The meters limits may name (`meter:`), as a route's `meters`: `{tokens: {responseHeader:
   * 'x-usage-tokens'}}`. The handler reports a request's value in that response header; it is
   * added to the metered counters once the response ends.
   */
  meters?: Record<string, { responseHeader: string }>;
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
  const rateLimits = rateLimitListSchema.parse(options.limits);
  const meters = metersSchema.parse(options.meters);
  for (const rl of rateLimits)
    if (rl.meter !== undefined && meters?.[rl.meter] === undefined)
      throw new TypeError(
        `rateLimit(): limit "${rl.name}" counts meter "${rl.meter}", which \`meters\` lacks`,
      );
  return toMiddleware(
    'rateLimit',
    [
      createRateLimitStage({
        routeId: options.id ?? 'express',
        rateLimits,
        quotaCost: undefined,
        plans: {},
        counters: options.store ?? new MemoryCounters(),
        clock,
        // The answer is the Express app's own: a metered value is what the handler set on `res`.
        local: true,
        meters,
      }),
    ],
    { clock },
  );
}
