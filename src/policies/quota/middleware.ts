import type { RequestHandler } from 'express';
import { systemClock, type Clock } from '../../core/clock.js';
import { toMiddleware } from '../../core/middleware.js';
import type { QuotaPeriod } from '../../core/identity.js';
import { MemoryCounters, type CounterStore } from '../rate-limit/counters.js';
import { createRateLimitStage } from '../rate-limit/rate-limit.js';
import type { QuotaBy } from './quota.js';
import { planQuotaSchema, routeQuotaSchema } from './schema.js';

export interface QuotaOptions {
  /** Units allowed per period. */
  limit: number;
  period: QuotaPeriod;
  /** Units per request (charged only when the response is below 500). Default: the route quota's default. */
  cost?: number;
  /** Whose quota: the credential's (default), its tenant's, or its owner's. */
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
    'quota',
    [
      createRateLimitStage({
        routeId: options.id ?? 'express',
        rateLimits: [],
        quotaCost: routeQuotaSchema.parse({ cost: options.cost }).cost,
        plans: {},
        counters: options.store ?? new MemoryCounters(),
        clock,
        // In an Express app the handler answers: what is owed follows the response status.
        local: true,
        quota: { config, by: options.by ?? 'credential' },
      }),
    ],
    { clock },
  );
}
