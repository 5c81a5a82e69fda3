import { z } from 'zod';
import { positiveInt } from '../../config/primitives.js';
import type { RateLimitRule } from '../../core/identity.js';

/** A meter's name (`meters.<name>`, `meter: <name>`). */
export const meterName = z
  .string()
  .regex(/^[A-Za-z0-9_-]{1,64}$/, 'must be 1-64 letters, digits, "_" or "-"');

/** HTTP field names are tokens (RFC 9110 §5.1); kept lower case, as Node gives them. */
const fieldName = z
  .string()
  .regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$/, 'must be an HTTP header name')
  .transform((n) => n.toLowerCase());

/**
 * A route's meters (SPEC §10): what the upstream reports a request cost, in a response header or
 * a trailer of that name (the trailer wins). Limits with `meter:` count it instead of requests.
 */
export const metersSchema = z
  .record(
    meterName,
    z
      .strictObject({
        responseHeader: fieldName.describe(
          'The response header (or HTTP trailer) carrying the value: a non-negative integer below 2^53.',
        ),
      })
      .describe('One meter.'),
  )
  .optional()
  .describe(
    'Meters of the route: `{tokens: {responseHeader: x-usage-tokens}}`. A missing, non-numeric, negative, fractional or too large value adds 0 and is counted in `tollgate_meter_missing_total`.',
  );

export type MetersConfig = NonNullable<z.output<typeof metersSchema>>;

export const rateLimitBy = z.enum(['ip', 'key', 'subject', 'tenant', 'route', 'global']);

export const rateLimitSchema = z
  .strictObject({
    name: z
      .string()
      .regex(/^[A-Za-z0-9_.-]{1,64}$/, 'must be 1-64 letters, digits, ".", "_" or "-"')
      .describe('The policy name shown in `RateLimit-Policy` and in the 429 `policy` member.'),
    by: rateLimitBy.describe(
      'What is counted: `ip`, `key` (credential id), `subject`, `tenant`, `route` or `global`. Anonymous requests fall back to the client IP for key/subject/tenant.',
    ),
    limit: positiveInt().describe('Units allowed per window.'),
    windowSec: positiveInt().describe('Window length in seconds.'),
    cost: positiveInt()
      .default(1)
      .describe('Units one request consumes (ignored with `meter`: the reported value is the cost).'),
    algorithm: z
      .enum(['fixed-window', 'sliding-window'])
      .optional()
      .describe(
        '`fixed-window` (default: windows aligned to the epoch) or `sliding-window`: never more than `limit` in any `windowSec` span (the previous window weighted by tenths, rounded up).',
      ),
    mode: z
      .enum(['enforce', 'shadow'])
      .optional()
      .describe(
        '`enforce` (default) refuses with 429; `shadow` counts and reports would-be refusals (metric, access log, audit) and never refuses.',
      ),
    meter: meterName
      .optional()
      .describe(
        "Counts this meter of the route (`meters`) instead of requests: refused when already at or over `limit`, the upstream's reported value added when the response ends. A plan's metered limit applies only on routes that declare the meter.",
      ),
  })
  .describe('One rate limit policy.');

export const rateLimitListSchema = z
  .array(rateLimitSchema)
  .default([])
  .superRefine((list, ctx) => {
    const seen = new Set<string>();
    list.forEach((rl, i) => {
      if (seen.has(rl.name))
        ctx.addIssue({ code: 'custom', path: [i, 'name'], message: `duplicate name "${rl.name}"` });
      seen.add(rl.name);
      if (rl.cost > rl.limit)
        ctx.addIssue({
          code: 'custom',
          path: [i, 'cost'],
          message: 'must not exceed limit (no request could pass)',
        });
    });
  });

/** One rate limit as validated: the plain `RateLimitRule` of core (checked below). */
export type RateLimitConfig = RateLimitRule;
// The schema's output and the plain type must agree both ways (a field added to one but not the other fails here).
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const _sameShape: Same<z.output<typeof rateLimitSchema>, RateLimitRule> = true;
void _sameShape;
