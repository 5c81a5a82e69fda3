import type { RequestHandler } from 'express';
import type { z } from 'zod';
import { systemClock, type Clock } from '../../core/clock.js';
import { runStages, type Stage } from '../../core/stage.js';
import { ensureContext } from '../../core/request-id.js';
import { createReadBodyStage } from '../body-limit/read-body.js';
import { idempotencySchema } from './schema.js';
import { createIdempotencyStage } from './idempotency.js';
import { MemoryIdempotencyStore, type IdempotencyStore } from './store.js';

export interface IdempotencyMiddlewareOptions extends z.input<typeof idempotencySchema> {
  /** Where records live. Default: in this process; `RedisIdempotencyStore` to share them. */
  store?: IdempotencyStore;
  /** How long a first request may hold a key before it is considered dead. Default 30 s. */
  lockTtlMs?: number;
  /** Run without idempotency when the store fails, instead of 503. Default false. */
  failOpen?: boolean;
  /** Largest body read for the fingerprint. Default 1 MiB. */
  bodyLimit?: number;
  clock?: Clock;
}

/**
 * Express middleware for `Idempotency-Key`: the first request runs, repeats get its response
 * (`Idempotent-Replayed: true`), concurrent repeats 409. It reads the raw body for the
 * fingerprint (exposed as `contextOf(req).rawBody`), so mount it before body parsers or use that.
 *
 * @example
 * app.post('/payments', idempotency({ required: true }), createPayment);
 */
export function idempotency(options: IdempotencyMiddlewareOptions = {}): RequestHandler {
  const { store, lockTtlMs, failOpen, bodyLimit, clock: givenClock, ...rest } = options;
  const clock = givenClock ?? systemClock;
  const config = idempotencySchema.parse(rest);
  const stages: Stage[] = [
    createReadBodyStage(bodyLimit ?? 1_048_576),
    createIdempotencyStage({
      config,
      store: store ?? new MemoryIdempotencyStore(clock),
      lockTtlMs: Math.min(lockTtlMs ?? 30_000, config.ttlSec * 1000),
      failOpen: failOpen ?? false,
    }),
  ];
  return function idempotencyMiddleware(req, res, next) {
    const ctx = ensureContext(req, res, clock);
    try {
      const pending = runStages(ctx, stages);
      const after = () => {
        if (!ctx.handled) next();
      };
      if (pending === undefined) after();
      else pending.then(after, next);
    } catch (err) {
      next(err);
    }
  };
}
