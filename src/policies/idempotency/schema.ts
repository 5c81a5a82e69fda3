import { z } from 'zod';
import { httpMethod, positiveInt, bool } from '../../config/primitives.js';

export const idempotencySchema = z
  .strictObject({
    methods: z
      .array(httpMethod)
      .min(1)
      .default(['POST', 'PATCH'])
      .describe('Methods the `Idempotency-Key` applies to.'),
    required: bool().default(false).describe('A missing key is a 400 validation-failed.'),
    ttlSec: positiveInt().default(86_400).describe('How long a stored response is replayed.'),
    storeServerErrors: bool()
      .default(false)
      .describe('Keep 5xx and 504 responses too (payments: replay rather than risk a second execution).'),
    maxResponseBytes: positiveInt()
      .default(1_048_576)
      .describe('Larger responses pass through unstored and release the key.'),
  })
  .describe('Idempotency keys (Stripe / IETF httpapi draft semantics).');

export type IdempotencyConfig = z.output<typeof idempotencySchema>;
