import { z } from 'zod';
import { positiveInt } from '../../config/primitives.js';
import type { RateLimitRule } from '../../core/identity.js';

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
    windowSec: positiveInt().describe('Window length in seconds (fixed windows).'),
    cost: positiveInt().default(1).describe('Units one request consumes.'),
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
