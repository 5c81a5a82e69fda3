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

export const idempotencyStoreSchema = z
  .strictObject({
    maxEntries: positiveInt()
      .default(100_000)
      .describe(
        'Keys (locks and kept responses) held at once; a new key beyond this is 503 service-unavailable with Retry-After (a lock or a kept response is never dropped to make room).',
      ),
    maxBytes: positiveInt()
      .default(67_108_864)
      .describe(
        'Approximate bytes of keys and kept responses held at once (64 MiB); full, new keys are 503 and a response that no longer fits is not kept (its key is released).',
      ),
    callerShare: z
      .number({ error: 'must be a number above 0, at most 1' })
      .gt(0, 'must be a number above 0, at most 1')
      .max(1, 'must be a number above 0, at most 1')
      .default(0.5)
      .describe(
        'The share of `maxEntries` and `maxBytes` one caller (a credential, or a client IP on a public route) may hold, so that one caller cannot fill the store for everyone.',
      ),
  })
  .describe(
    'The in-memory idempotency store (no Redis; with Redis, records live under its own `maxmemory`, which should not evict them).',
  );

export type IdempotencyStoreConfig = z.output<typeof idempotencyStoreSchema>;
