import { z } from 'zod';
import { nonNegativeInt, positiveInt } from '../../config/primitives.js';

/** The statuses an injected abort may answer, with the catalog slug each is sent as. */
export const FAULT_ABORT_SLUGS = {
  500: 'internal-error',
  502: 'bad-gateway',
  503: 'service-unavailable',
  504: 'gateway-timeout',
  429: 'rate-limit-exceeded',
} as const;
export type FaultAbortStatus = keyof typeof FAULT_ABORT_SLUGS;
const STATUSES = Object.keys(FAULT_ABORT_SLUGS).map(Number);

/** The longest an injected delay (`ms` + `jitterMs`) may be: the default `server.requestTimeoutMs`. */
export const MAX_FAULT_DELAY_MS = 60_000;

const percentMessage = 'must be a number from 0 to 100';
/** A share of requests, 0–100, decimals allowed (`0.5` is one request in 200). */
const percent = () =>
  z.preprocess(
    (v) => (typeof v === 'string' && /^\s*\d+(\.\d+)?\s*$/.test(v) ? Number(v) : v),
    z.number({ error: percentMessage }).min(0, percentMessage).max(100, percentMessage),
  );

export const faultDelaySchema = z
  .strictObject({
    ms: nonNegativeInt(MAX_FAULT_DELAY_MS).describe('The delay, in milliseconds.'),
    jitterMs: nonNegativeInt(MAX_FAULT_DELAY_MS)
      .default(0)
      .describe('Up to this many milliseconds more, uniformly at random (0: exactly `ms`).'),
    percent: percent().describe('Share of requests delayed, 0–100.'),
  })
  .superRefine((d, ctx) => {
    if (d.ms + d.jitterMs > MAX_FAULT_DELAY_MS)
      ctx.addIssue({
        code: 'custom',
        path: ['jitterMs'],
        message: `ms + jitterMs must not exceed ${MAX_FAULT_DELAY_MS}`,
      });
  })
  .describe(
    'Holds a share of requests before they go on (after authentication and limits); a client that leaves ends the wait.',
  );

export const faultAbortSchema = z
  .strictObject({
    status: positiveInt()
      .refine((s) => STATUSES.includes(s), `must be one of ${STATUSES.join(', ')}`)
      .transform((s) => s as FaultAbortStatus)
      .describe(
        'The status answered: 500 internal-error, 502 bad-gateway, 503 service-unavailable, 504 gateway-timeout or 429 rate-limit-exceeded.',
      ),
    percent: percent().describe('Share of requests aborted, 0–100.'),
  })
  .describe('Answers a share of requests with a problem+json of that status and `injected: true`.');

export const faultSchema = z
  .strictObject({
    delay: faultDelaySchema.optional(),
    abort: faultAbortSchema.optional(),
  })
  .superRefine((f, ctx) => {
    if (f.delay === undefined && f.abort === undefined)
      ctx.addIssue({ code: 'custom', path: [], message: 'needs delay, abort or both' });
  })
  .describe(
    'Fault injection for load and resilience tests (Envoy’s fault filter): delays and aborts a share of requests after authentication and limits, before idempotency and the upstream or mock.',
  );

export type FaultConfig = z.output<typeof faultSchema>;
export type FaultDelayConfig = z.output<typeof faultDelaySchema>;
export type FaultAbortConfig = z.output<typeof faultAbortSchema>;
