import { z } from 'zod';
import { positiveInt } from '../../config/primitives.js';
import { rateLimitBy } from '../rate-limit/schema.js';

export const concurrencySchema = z
  .strictObject({
    limit: positiveInt().describe('Requests, streams or WebSockets in flight at once per `by` value.'),
    by: rateLimitBy.describe(
      'What is counted, as for rate limits: `ip`, `key`, `subject`, `tenant`, `route` or `global` (anonymous requests count by client IP).',
    ),
    leaseSec: positiveInt(3600)
      .default(60)
      .describe(
        'How long a slot is held without renewal (Redis): renewed every leaseSec/3 while the request runs, so a dead gateway frees its slots within this.',
      ),
  })
  .describe(
    'A concurrency limit (SPEC §9): one over is 429 rate-limit-exceeded with `policy: "concurrency"` and `Retry-After: 1`.',
  );

export type ConcurrencyConfig = z.output<typeof concurrencySchema>;
