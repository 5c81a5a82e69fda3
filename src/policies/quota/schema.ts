import { z } from 'zod';
import { positiveInt } from '../../config/primitives.js';
import { meterName } from '../rate-limit/schema.js';

export const planQuotaSchema = z
  .strictObject({
    limit: positiveInt().describe('Units allowed per period.'),
    period: z
      .enum(['day', 'month', 'lifetime'])
      .describe('Calendar UTC day, calendar UTC month, or lifetime.'),
    meter: meterName
      .optional()
      .describe(
        "Counts this meter (the upstream's reported value) instead of the route's `quota.cost`, on routes that declare the meter and charge the quota; refused (402) when already at or over `limit`.",
      ),
  })
  .describe("A plan's quota.");

export const routeQuotaSchema = z
  .strictObject({
    cost: positiveInt()
      .default(1)
      .describe(
        'Units charged per request that the upstream answers below 500 (or that reached it before its client hung up).',
      ),
  })
  .describe(
    "The route's charge against the plan quota. A key's `remaining` is separate: every authenticated request a route answers is a use, with or without this block.",
  );

export type PlanQuotaConfig = z.output<typeof planQuotaSchema>;
export type RouteQuotaConfig = z.output<typeof routeQuotaSchema>;
