import { z } from 'zod';

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
  })
  .describe('Answer locally without an upstream (demo routes, load-test targets).');

export type MockConfig = z.output<typeof mockSchema>;
