import { z } from 'zod';
import { positiveInt, bool, type Accepts } from '../../config/primitives.js';

export const replayCacheSchema = z
  .strictObject({
    maxEntries: positiveInt()
      .default(200_000)
      .describe(
        'Signatures remembered at once; full, a new signed request is 503 service-unavailable with Retry-After (a signature inside its window is never forgotten early: it could be replayed).',
      ),
    maxEntriesPerKey: positiveInt()
      .default(20_000)
      .describe(
        'Signatures remembered for one key: a key that fills its share gets 503 alone, other keys go on.',
      ),
  })
  .describe('The in-memory replay protection store (no Redis; Redis keeps each signature with a TTL).');

/** `auth.hmac`: how signed requests are judged (SPEC §5). */
export const hmacSchema = z
  .strictObject({
    toleranceSec: positiveInt().default(300).describe('Allowed clock skew of `X-Timestamp`.'),
    replayProtection: bool().default(true).describe('Accept a given signature only once inside the window.'),
    replayCache: replayCacheSchema.prefault({}),
  })
  .prefault({});

/** A route's `auth.hmac`. */
export const routeHmacSchema = z
  .enum(['off', 'optional', 'required'])
  .default('off')
  .describe('HMAC request signing (API keys).');

export type ReplayCacheConfig = z.output<typeof replayCacheSchema>;
export type HmacConfig = z.output<typeof hmacSchema>;

/** `auth.hmac` as a library user writes it (plain TypeScript; checked against the schema's input). */
export interface HmacOptions {
  /** Allowed clock skew of `X-Timestamp`, seconds (default 300). */
  toleranceSec?: number;
  /** Accept a signature once inside the window (default true). */
  replayProtection?: boolean;
  replayCache?: { maxEntries?: number; maxEntriesPerKey?: number };
}
type _HmacOptions = Accepts<z.input<typeof hmacSchema>, HmacOptions>;
