import { z } from 'zod';
import { positiveInt } from '../../config/primitives.js';

/** `limits.bodyBytes`: the largest request body accepted. */
export const bodyBytesSchema = positiveInt().default(1_048_576).describe('Largest request body accepted.');

/** The default body limit (the schema's own), for middleware given none. */
export const DEFAULT_BODY_BYTES: number = bodyBytesSchema.parse(undefined);

/** A route's `limits`: its own body limit, overriding the top-level `limits.bodyBytes` (SPEC §9). */
export const routeLimitsSchema = z
  .strictObject({
    bodyBytes: positiveInt()
      .optional()
      .describe('Largest request body this route accepts; unset: the top-level `limits.bodyBytes`.'),
  })
  .describe('Limits of this route, overriding the top-level `limits`.');

export type RouteLimitsConfig = z.output<typeof routeLimitsSchema>;
