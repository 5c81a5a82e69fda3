import { createLocalJWKSet, type JSONWebKeySet, type JWTVerifyGetKey } from 'jose';
import type { Clock } from '../../core/clock.js';

/**
 * The JWKS cannot be had and no usable copy is cached, or a token names a key the gateway cannot
 * look up because the IdP is down: the caller answers 503 with `Retry-After: retryAfterSec`.
 */
export class JwksUnavailableError extends Error {
  readonly code = 'ERR_TOLLGATE_JWKS_UNAVAILABLE';
  /** Whole seconds until the next fetch may be tried (the rest of the cooldown, at least 1). */
  readonly retryAfterSec: number;

  constructor(message: string, retryAfterSec: number) {
    super(message);
    this.retryAfterSec = retryAfterSec;
  }
}

export interface JwksStatus {
  uri: string;
  keys: number;
  lastFetchOk: boolean;
  fetchedAt: number | null;
  lastError: string | null;
}

/**
 * A remote JWKS with the failure behaviour an operator needs, which jose's `createRemoteJWKSet`
 * does not give on its own: the last good key set keeps verifying tokens for `maxStaleMs` while
 * the endpoint is down (it is only refreshed in the background), at most one fetch per
 * `cooldownMs` — for an unknown `kid` and before the first success alike (neither a flood of
 * made-up kids nor traffic during an outage can hammer the IdP) — and concurrent fetches are
 * coalesced into one. Verification itself is jose's `createLocalJWKSet`.
 *
 * An unknown `kid` is a bad credential only when the key set is known to be current: if the
 * refetch it triggers fails, or the cooldown suppresses it while the last fetch failed, the
 * gateway cannot tell a rotated key from a forged one and says so (503, never 401).
 */
export class RemoteJwks {
  readonly uri: string;
  readonly #clock: Clock;
  readonly #cooldownMs: number;
  readonly #maxStaleMs: number;
  readonly #timeoutMs: number;
  readonly #refreshMs: number;
  #set: JWTVerifyGetKey | undefined;
  #keys = 0;
  #fetchedAt = 0;
  #lastAttempt = 0;
  #attempts = 0;
  #lastError: string | null = null;
  #inflight: Promise<void> | undefined;

  constructor(
    uri: string,
    options: { clock: Clock; cooldownMs: number; maxStaleMs: number; timeoutMs: number; refreshMs?: number },
  ) {
    this.uri = uri;
    this.#clock = options.clock;
    this.#cooldownMs = options.cooldownMs;
    this.#maxStaleMs = options.maxStaleMs;
    this.#timeoutMs = options.timeoutMs;
    this.#refreshMs = options.refreshMs ?? 10 * 60_000;
  }

  /** The key resolver jose's `jwtVerify` calls. */
  readonly getKey: JWTVerifyGetKey = async (header, token) => {
    const now = this.#clock.now();
    if (this.#set === undefined || now - this.#fetchedAt > this.#maxStaleMs) {
      // No usable set: wait for a fetch under way, or start one if the cooldown allows.
      if (this.#inflight !== undefined) await this.#inflight;
      else if (this.#mayFetch(now)) await this.#refresh();
      if (this.#set === undefined || this.#clock.now() - this.#fetchedAt > this.#maxStaleMs)
        throw this.#unavailable();
    } else if (now - this.#fetchedAt > this.#refreshMs && this.#mayFetch(now)) {
      void this.#refresh(); // in the background: the cached set answers meanwhile
    }
    try {
      return await this.#set(header, token);
    } catch (err) {
      if ((err as { code?: string }).code !== 'ERR_JWKS_NO_MATCHING_KEY') throw err;
      // An unknown kid: the IdP may have rotated its keys. One refetch, then the verdict stands.
      if (this.#inflight !== undefined) await this.#inflight;
      else if (this.#mayFetch(this.#clock.now())) await this.#refresh();
      // The set is not known to be current (the refetch failed, or the cooldown held it back
      // after a failure): a rotated key and a forged one look alike, so this is no verdict.
      else if (this.#lastError === null) throw err;
      if (this.#lastError !== null) throw this.#unavailable();
      return this.#set(header, token);
    }
  };

  /** Fetches the key set now (also at start, so the first request does not wait). */
  refresh(): Promise<void> {
    return this.#refresh();
  }

  status(): JwksStatus {
    return {
      uri: this.uri,
      keys: this.#keys,
      lastFetchOk: this.#lastError === null && this.#set !== undefined,
      fetchedAt: this.#fetchedAt || null,
      lastError: this.#lastError,
    };
  }

  /** Whether a token could be verified now (a key set that is not too stale). */
  usable(): boolean {
    return this.#set !== undefined && this.#clock.now() - this.#fetchedAt <= this.#maxStaleMs;
  }

  /** A new fetch is allowed: none tried yet, or the last one started a cooldown ago. */
  #mayFetch(now: number): boolean {
    return this.#attempts === 0 || now - this.#lastAttempt >= this.#cooldownMs;
  }

  #unavailable(): JwksUnavailableError {
    const waitMs = this.#lastAttempt + this.#cooldownMs - this.#clock.now();
    return new JwksUnavailableError(
      `JWKS ${this.uri} unavailable: ${this.#lastError ?? 'not fetched'}`,
      Math.max(1, Math.ceil(waitMs / 1000)),
    );
  }

  #refresh(): Promise<void> {
    this.#inflight ??= this.#fetch().finally(() => {
      this.#inflight = undefined;
    });
    return this.#inflight;
  }

  async #fetch(): Promise<void> {
    this.#lastAttempt = this.#clock.now();
    this.#attempts++;
    try {
      const res = await fetch(this.uri, {
        signal: AbortSignal.timeout(this.#timeoutMs),
        headers: { accept: 'application/json' },
      });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      const body = (await res.json()) as JSONWebKeySet;
      if (!Array.isArray(body.keys)) throw new Error('not a JWK Set');
      this.#set = createLocalJWKSet(body);
      this.#keys = body.keys.length;
      this.#fetchedAt = this.#clock.now();
      this.#lastError = null;
    } catch (err) {
      this.#lastError = err instanceof Error ? err.message : String(err);
    }
  }
}
