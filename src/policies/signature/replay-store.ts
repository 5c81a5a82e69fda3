import type { Clock } from '../../core/clock.js';
import type { RedisHandle } from '../../shared/redis.js';
import { Problem } from '../../problems/problem.js';
import { replayCacheSchema, type ReplayCacheConfig } from './schema.js';

/**
 * Remembers signatures for a window: `first()` is true only the first time within it. Signatures
 * are kept per `partition` (the key that signed them).
 */
export interface ReplayStore {
  first(partition: string, signature: string, ttlMs: number): boolean | Promise<boolean>;
}

/**
 * In memory, partitioned by key and bounded: at most `maxEntries` signatures, `maxEntriesPerKey`
 * of one key. A signature inside its window is never forgotten to make room (it could be replayed
 * then): full, a new signed request is refused with 503 `service-unavailable` and Retry-After —
 * a key that fills its own share is refused alone; other keys go on.
 */
export class MemoryReplayStore implements ReplayStore {
  /** Per key, signature → expiry. One key's signatures share one TTL, so insertion order is expiry order. */
  readonly #keys = new Map<string, Map<string, number>>();
  readonly #clock: Clock;
  readonly #maxEntries: number;
  readonly #maxPerKey: number;
  #size = 0;
  /** No signature expires before this (a lower bound; exact after a sweep). */
  #nextExpiry = Infinity;

  constructor(clock: Clock, limits: ReplayCacheConfig = replayCacheSchema.parse({})) {
    this.#clock = clock;
    this.#maxEntries = limits.maxEntries;
    this.#maxPerKey = limits.maxEntriesPerKey;
  }

  /** Signatures remembered now. */
  get size(): number {
    return this.#size;
  }

  first(partition: string, signature: string, ttlMs: number): boolean {
    const now = this.#clock.now();
    let seen = this.#keys.get(partition);
    const until = seen?.get(signature);
    if (until !== undefined) {
      if (until > now) return false;
      seen!.delete(signature);
      this.#size--;
    }
    if (seen !== undefined && seen.size >= this.#maxPerKey) {
      this.#expire(seen, now);
      if (seen.size >= this.#maxPerKey) throw full(seen.values().next().value! - now);
    }
    if (this.#size >= this.#maxEntries) {
      if (now >= this.#nextExpiry) this.#sweep(now);
      if (this.#size >= this.#maxEntries) throw full(this.#nextExpiry - now);
      seen = this.#keys.get(partition); // the sweep may have emptied (and dropped) it
    }
    if (seen === undefined) this.#keys.set(partition, (seen = new Map<string, number>()));
    const expiresAt = now + ttlMs;
    seen.set(signature, expiresAt);
    this.#size++;
    if (expiresAt < this.#nextExpiry) this.#nextExpiry = expiresAt;
    return true;
  }

  /** Drops the expired signatures at the front of one key's map (the oldest). */
  #expire(seen: Map<string, number>, now: number): void {
    for (const [signature, until] of seen) {
      if (until > now) break;
      seen.delete(signature);
      this.#size--;
    }
  }

  #sweep(now: number): void {
    let next = Infinity;
    for (const [partition, seen] of this.#keys) {
      this.#expire(seen, now);
      if (seen.size === 0) this.#keys.delete(partition);
      else next = Math.min(next, seen.values().next().value!);
    }
    this.#nextExpiry = next;
  }
}

function full(waitMs: number): Problem {
  const retryAfter = Number.isFinite(waitMs) ? Math.max(1, Math.ceil(waitMs / 1000)) : 1;
  return new Problem('service-unavailable', {
    detail: 'Too many signed requests are being remembered for replay protection; try again later.',
    headers: { 'retry-after': String(retryAfter) },
  });
}

/** In Redis: `SET key 1 NX PX ttl` — atomic across instances, expires by itself. */
export class RedisReplayStore implements ReplayStore {
  readonly #redis: RedisHandle;
  readonly #failOpen: boolean;

  constructor(redis: RedisHandle, failOpen: boolean) {
    this.#redis = redis;
    this.#failOpen = failOpen;
  }

  async first(partition: string, signature: string, ttlMs: number): Promise<boolean> {
    try {
      const ok = await this.#redis.client.set(
        this.#redis.key('sig', `${partition}:${signature}`),
        '1',
        'PX',
        ttlMs,
        'NX',
      );
      return ok === 'OK';
    } catch (err) {
      this.#redis.recordError();
      if (this.#failOpen) return true;
      throw new Problem('service-unavailable', {
        detail: 'Replay protection is unavailable; try again shortly.',
        headers: { 'retry-after': '1' },
        cause: err,
      });
    }
  }
}
