import type { RequestHandler } from 'express';
import type { z } from 'zod';
import { systemClock, type Clock } from '../../core/clock.js';
import { ensureContext } from '../../core/request-id.js';
import { planQuotaSchema } from '../quota/schema.js';
import { MemoryCounters, type CounterStore } from './counters.js';
import { createLimitsStage, type QuotaBy } from './rate-limit.js';
import { rateLimitListSchema } from './schema.js';
import type { Stage } from '../../core/stage.js';

function toMiddleware(stage: Stage, clock: Clock): RequestHandler {
  return function limitsMiddleware(req, res, next) {
    const ctx = ensureContext(req, res, clock);
    try {
      const pending = stage.run(ctx);
      if (pending === undefined) next();
      else pending.then(() => next(), next);
    } catch (err) {
      next(err);
    }
  };
}

export interface RateLimitOptions {
  /** Policies, as a route's `rateLimits` (name, by, limit, windowSec, cost). */
  limits: z.input<typeof rateLimitListSchema>;
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
    createLimitsStage({
      routeId: options.id ?? 'express',
      rateLimits: rateLimitListSchema.parse(options.limits),
      quotaCost: undefined,
      plans: {},
      counters: options.store ?? new MemoryCounters(),
      clock,
      local: false,
    }),
    clock,
  );
}

export interface QuotaOptions extends z.input<typeof planQuotaSchema> {
  /** Units per request (charged only when the response is below 500). Default 1. */
  cost?: number;
  /** Whose quota: the credential's (default; a self-service key's owner), its tenant's or its owner's. */
  by?: QuotaBy;
  store?: CounterStore;
  id?: string;
  clock?: Clock;
}

/**
 * Express middleware charging a quota per credential (after `authenticate()`): 402
 * quota-exceeded with `limit` and `resets_at` when it is used up; a request answered with 500 or
 * more is not charged.
 *
 * @example
 * app.use('/reports', authenticate({ keys }), quota({ limit: 1000, period: 'month' }), handler);
 */
export function quota(options: QuotaOptions): RequestHandler {
  const clock = options.clock ?? systemClock;
  const config = planQuotaSchema.parse({ limit: options.limit, period: options.period });
  return toMiddleware(
    createLimitsStage({
      routeId: options.id ?? 'express',
      rateLimits: [],
      quotaCost: options.cost ?? 1,
      plans: {},
      counters: options.store ?? new MemoryCounters(),
      clock,
      // In an Express app the handler answers: what is owed follows the response status.
      local: true,
      quota: { config, by: options.by },
    }),
    clock,
  );
}
