import { z } from 'zod';
import { bool, nonNegativeInt } from '../../config/primitives.js';

/** The longest a mock route may take to answer (`delayMs` + `jitterMs`). */
export const MAX_MOCK_DELAY_MS = 60_000;

export const mockSchema = z
  .strictObject({
    status: z.int().min(200).max(599).default(200).describe('Status code answered.'),
    headers: z
      .record(z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, 'must be a valid header name'), z.string())
      .default({})
      .describe('Headers answered.'),
    body: z
      .unknown()
      .optional()
      .describe('Body answered: a string is sent as text/plain, anything else as JSON.'),
    echo: bool()
      .default(false)
      .describe(
        'Answer the request itself as JSON instead of `body`: method, path, query, headers (credentials redacted) and body (read within the body limit).',
      ),
    delayMs: nonNegativeInt(MAX_MOCK_DELAY_MS)
      .default(0)
      .describe('Wait this long before answering (a stand-in for a service’s latency).'),
    jitterMs: nonNegativeInt(MAX_MOCK_DELAY_MS)
      .default(0)
      .describe('Wait up to this many milliseconds more, uniformly at random.'),
  })
  .superRefine((mock, ctx) => {
    if (mock.echo && mock.body !== undefined)
      ctx.addIssue({ code: 'custom', path: ['echo'], message: 'cannot be combined with body' });
    if (mock.delayMs + mock.jitterMs > MAX_MOCK_DELAY_MS)
      ctx.addIssue({
        code: 'custom',
        path: ['jitterMs'],
        message: `delayMs + jitterMs must not exceed ${MAX_MOCK_DELAY_MS}`,
      });
  })
  .describe('Answer locally without an upstream (demo routes, load-test targets).');

export type MockConfig = z.output<typeof mockSchema>;
