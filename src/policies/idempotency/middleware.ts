import type { RequestHandler } from 'express';
import { systemClock, type Clock } from '../../core/clock.js';
import { toMiddleware } from '../../core/middleware.js';
import type { HttpMethod } from '../../shared/http.js';
import { createReadBodyStage } from '../body-limit/read-body.js';
import { bodyBytesSchema } from '../body-limit/schema.js';
import { idempotencySchema } from './schema.js';
import { createIdempotencyStage } from './idempotency.js';
import { MemoryIdempotencyStore, type IdempotencyStore } from './store.js';

/** How long a first request may hold a key in an Express app, where no upstream timeout bounds it. */
const LIBRARY_LOCK_TTL_MS = 30_000;

export interface IdempotencyMiddlewareOptions {
  /** Methods the key applies to (default POST and PATCH). */
  methods?: HttpMethod[];
  /** A missing key is a 400 validation-failed. */
  required?: boolean;
  /** How long a stored response is replayed (default one day). */
  ttlSec?: number;
  /** Keep 5xx answers too. */
  storeServerErrors?: boolean;
  /** Larger responses pass through unstored. */
  maxResponseBytes?: number;
  /** Where records live. Default: in this process; `RedisIdempotencyStore` to share them. */
  store?: IdempotencyStore;
  /** How long a first request may hold a key before it is considered dead. Default 30 s. */
  lockTtlMs?: number;
  /** Run without idempotency when the store fails, instead of 503. Default false. */
  failOpen?: boolean;
  /** Largest body read for the fingerprint. Default: `limits.bodyBytes`' default. */
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
  return toMiddleware(
    'idempotency',
    [
      createReadBodyStage(bodyBytesSchema.parse(bodyLimit)),
      createIdempotencyStage({
        config,
        store: store ?? new MemoryIdempotencyStore(clock),
        lockTtlMs: Math.min(lockTtlMs ?? LIBRARY_LOCK_TTL_MS, config.ttlSec * 1000),
        failOpen: failOpen ?? false,
      }),
    ],
    { clock },
  );
}
