import { createLocalJWKSet, type JSONWebKeySet, type JWTVerifyGetKey } from 'jose';
import type { Clock } from '../../shared/clock.js';

/** The JWKS cannot be had and no usable copy is cached: the caller answers 503. */
export class JwksUnavailableError extends Error {
  readonly code = 'ERR_TOLLGATE_JWKS_UNAVAILABLE';
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
 * the endpoint is down (it is only refreshed in the background), an unknown `kid` triggers at
 * most one refetch per `cooldownMs` (a flood of made-up kids cannot hammer the IdP), and
 * concurrent refetches are coalesced into one. Verification itself is jose's `createLocalJWKSet`.
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
      if (this.#set === undefined || now - this.#lastAttempt >= this.#cooldownMs) await this.#refresh();
      if (this.#set === undefined || this.#clock.now() - this.#fetchedAt > this.#maxStaleMs)
        throw new JwksUnavailableError(`JWKS ${this.uri} unavailable: ${this.#lastError ?? 'not fetched'}`);
    } else if (now - this.#fetchedAt > this.#refreshMs && now - this.#lastAttempt >= this.#cooldownMs) {
      void this.#refresh(); // in the background: the cached set answers meanwhile
    }
    try {
      return await this.#set(header, token);
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code !== 'ERR_JWKS_NO_MATCHING_KEY' || this.#clock.now() - this.#lastAttempt < this.#cooldownMs)
        throw err;
      // An unknown kid: the IdP may have rotated its keys. One refetch, then the verdict stands.
      await this.#refresh();
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

  #refresh(): Promise<void> {
    this.#inflight ??= this.#fetch().finally(() => {
      this.#inflight = undefined;
    });
    return this.#inflight;
  }

  async #fetch(): Promise<void> {
    this.#lastAttempt = this.#clock.now();
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
