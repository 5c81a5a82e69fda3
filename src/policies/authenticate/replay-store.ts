import type { Clock } from '../../shared/clock.js';
import type { RedisHandle } from '../../shared/redis.js';
import { Problem } from '../../problems/problem.js';

/** Remembers signatures for a window: `first()` is true only the first time within it. */
export interface ReplayStore {
  first(key: string, ttlMs: number): boolean | Promise<boolean>;
}

const MAX_ENTRIES = 200_000;

/** In memory: a map of expiry times, swept as it grows. */
export class MemoryReplayStore implements ReplayStore {
  readonly #seen = new Map<string, number>();
  readonly #clock: Clock;

  constructor(clock: Clock) {
    this.#clock = clock;
  }

  first(key: string, ttlMs: number): boolean {
    const now = this.#clock.now();
    const until = this.#seen.get(key);
    if (until !== undefined && until > now) return false;
    if (this.#seen.size >= MAX_ENTRIES) this.#sweep(now);
    this.#seen.set(key, now + ttlMs);
    return true;
  }

  #sweep(now: number): void {
    for (const [k, until] of this.#seen) if (until <= now) this.#seen.delete(k);
    // Still full of live entries: drop the oldest (a bounded store cannot remember everything).
    for (const k of this.#seen.keys()) {
      if (this.#seen.size < MAX_ENTRIES) break;
      this.#seen.delete(k);
    }
  }
}

/** In Redis: `SET key 1 NX PX ttl` — atomic across instances, expires by itself. */
export class RedisReplayStore implements ReplayStore {
  readonly #redis: RedisHandle;
  readonly #failOpen: boolean;

  constructor(redis: RedisHandle, failOpen: boolean) {
    this.#redis = redis;
    this.#failOpen = failOpen;
  }

  async first(key: string, ttlMs: number): Promise<boolean> {
    try {
      const ok = await this.#redis.client.set(this.#redis.key('sig', key), '1', 'PX', ttlMs, 'NX');
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
