import type { RequestHandler } from 'express';
import { systemClock, type Clock } from '../../core/clock.js';
import { toMiddleware } from '../../core/middleware.js';
import type { Stage } from '../../core/stage.js';
import type { KeyService } from '../../keys/service.js';
import { createReadBodyStage } from '../body-limit/read-body.js';
import { bodyBytesSchema } from '../body-limit/schema.js';
import { MemoryReplayStore, type ReplayStore } from './replay-store.js';
import { hmacSchema, type HmacConfig, type HmacOptions } from './schema.js';
import { createSignatureStage } from './signature.js';

/** The stages that check a signature: the body buffered (it is signed), then the check. */
export function signatureStages(
  mode: 'optional' | 'required',
  o: {
    keys: KeyService;
    hmac: HmacConfig;
    replay?: ReplayStore | undefined;
    bodyLimit?: number | undefined;
    clock: Clock;
  },
): Stage[] {
  return [
    createReadBodyStage(bodyBytesSchema.parse(o.bodyLimit)),
    createSignatureStage(mode, {
      keys: o.keys,
      replay: o.hmac.replayProtection
        ? (o.replay ?? new MemoryReplayStore(o.clock, o.hmac.replayCache))
        : undefined,
      toleranceSec: o.hmac.toleranceSec,
      clock: o.clock,
    }),
  ];
}

export interface SignatureOptions extends HmacOptions {
  /** Where the signing keys are (the `keys` of `authenticate()`), which must run first. */
  keys: KeyService;
  /** `required` (default) refuses unsigned requests; `optional` checks a signature when one is sent. */
  mode?: 'optional' | 'required';
  replay?: ReplayStore;
  /** Largest body read for the signature. Default: `limits.bodyBytes`' default. */
  bodyLimit?: number;
  clock?: Clock;
}

/**
 * Express middleware checking the HMAC signature of an API-key request (SPEC §5), after
 * `authenticate()`: `X-Timestamp` within the tolerance, `X-Signature: v1=<hex>` over the signing
 * string, each signature accepted once. The raw body is read (and kept as `contextOf(req).rawBody`).
 *
 * @example
 * const auth = authenticate({ route: { methods: ['apiKey'] } });
 * app.post('/payments', auth, signature({ keys: auth.keys }), handler);
 */
export function signature(options: SignatureOptions): RequestHandler {
  const { keys, mode, replay, bodyLimit, clock: givenClock, ...hmac } = options;
  const clock = givenClock ?? systemClock;
  return toMiddleware(
    'signature',
    signatureStages(mode ?? 'required', { keys, hmac: hmacSchema.parse(hmac), replay, bodyLimit, clock }),
    { clock },
  );
}
