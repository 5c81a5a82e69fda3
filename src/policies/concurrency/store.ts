import { randomBytes } from 'node:crypto';
import { Problem } from '../../problems/problem.js';
import type { RedisHandle } from '../../shared/redis.js';

/** One held slot: what `release` and `renew` need. */
export interface Slot {
  readonly key: string;
  readonly id: string;
  /** The store that granted it (the memory fallback, when Redis was away). */
  readonly store: ConcurrencyStore;
}

/**
 * Where concurrency slots live. `acquire` takes a slot of `key` when fewer than `limit` are held
 * (a slot is an entry with a lease); `renew` extends a held slot's lease; `release` frees it.
 */
export interface ConcurrencyStore {
  acquire(key: string, limit: number, leaseMs: number): Slot | undefined | Promise<Slot | undefined>;
  renew(slot: Slot, leaseMs: number): void | Promise<void>;
  release(slot: Slot): void | Promise<void>;
}

let slotCounter = 0;
const instance = randomBytes(6).toString('hex');
/** A slot id unique across gateway instances: this process's random id and a counter. */
function slotId(): string {
  slotCounter = (slotCounter + 1) % Number.MAX_SAFE_INTEGER;
  return `${instance}:${slotCounter}`;
}

/** Per-instance slots: a count per key, exact within the process (no lease needed: no process can die and keep its slots). */
export class MemoryConcurrency implements ConcurrencyStore {
  readonly #held = new Map<string, number>();

  acquire(key: string, limit: number): Slot | undefined {
    const held = this.#held.get(key) ?? 0;
    if (held >= limit) return undefined;
    this.#held.set(key, held + 1);
    return { key, id: slotId(), store: this };
  }

  renew(): void {}

  release(slot: Slot): void {
    const held = this.#held.get(slot.key) ?? 0;
    if (held <= 1) this.#held.delete(slot.key);
    else this.#held.set(slot.key, held - 1);
  }

  /** Slots held for `key` (tests). */
  held(key: string): number {
    return this.#held.get(key) ?? 0;
  }
}

/**
 * One round trip: drop the expired slots, refuse when `limit` are held, else add this one with its
 * lease. Redis's clock decides expiry, so gateways with skewed clocks agree. The set itself lives
 * as long as its newest lease.
 */
const ACQUIRE_LUA = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
`;

/** Extends a slot still held (an expired one is not brought back). */
const RENEW_LUA = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if not redis.call('ZSCORE', KEYS[1], ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]))
return 1
`;

type ScriptClient = {
  tollgateSlotAcquire(key: string, limit: number, leaseMs: number, id: string): Promise<number>;
  tollgateSlotRenew(key: string, leaseMs: number, id: string): Promise<number>;
  zrem(key: string, member: string): Promise<number>;
};

/**
 * Slots in Redis, exact across instances: a sorted set per key, one member per held slot scored
 * with its lease's end. A gateway that dies stops renewing; its slots expire within `leaseMs`.
 */
export class RedisConcurrency implements ConcurrencyStore {
  readonly #redis: RedisHandle;

  constructor(redis: RedisHandle) {
    this.#redis = redis;
    const client = redis.client as unknown as {
      defineCommand(name: string, def: { numberOfKeys?: number; lua: string }): void;
    };
    client.defineCommand('tollgateSlotAcquire', { numberOfKeys: 1, lua: ACQUIRE_LUA });
    client.defineCommand('tollgateSlotRenew', { numberOfKeys: 1, lua: RENEW_LUA });
  }

  #client(): ScriptClient {
    return this.#redis.client as unknown as ScriptClient;
  }

  async acquire(key: string, limit: number, leaseMs: number): Promise<Slot | undefined> {
    const id = slotId();
    const full = this.#redis.key(key);
    let ok: number;
    try {
      ok = await this.#client().tollgateSlotAcquire(full, limit, leaseMs, id);
    } catch (err) {
      // A timed-out script may still run (a frozen Redis answers late): the slot it would add is
      // nobody's, held for a whole lease. Its removal goes on the same connection right behind
      // it, so it runs after it; when the connection is gone instead, the lease frees the slot.
      this.#client()
        .zrem(full, id)
        .catch(() => undefined);
      throw err;
    }
    return Number(ok) === 1 ? { key: full, id, store: this } : undefined;
  }

  async renew(slot: Slot, leaseMs: number): Promise<void> {
    await this.#client().tollgateSlotRenew(slot.key, leaseMs, slot.id);
  }

  async release(slot: Slot): Promise<void> {
    await this.#client().zrem(slot.key, slot.id);
  }
}

/**
 * Redis slots with a plan for when Redis goes away (SPEC §7, §9), following `redis.onError` as
 * the quota and idempotency do: `closed` (the default) answers 503 `service-unavailable` with
 * `Retry-After: 1` — a concurrency limit usually guards an upstream's capacity, and N instances
 * each admitting `limit` would let N times that through; `open` keeps traffic flowing on
 * per-instance memory slots (as rate limits do) until Redis answers again. A slot is released in
 * the store that granted it; `fallbacks` counts acquisitions Redis did not serve.
 */
export class ResilientConcurrency implements ConcurrencyStore {
  readonly #redis: RedisHandle;
  readonly #primary: RedisConcurrency;
  readonly #memory = new MemoryConcurrency();
  readonly #failOpen: boolean;
  fallbacks = 0;

  /** `failOpen` defaults to the handle's `onError: open`. */
  constructor(redis: RedisHandle, failOpen: boolean = redis.config.onError === 'open') {
    this.#redis = redis;
    this.#primary = new RedisConcurrency(redis);
    this.#failOpen = failOpen;
  }

  acquire(key: string, limit: number, leaseMs: number): Slot | undefined | Promise<Slot | undefined> {
    if (!this.#redis.available) {
      if (this.#redis.state === 'connecting')
        return this.#redis.whenReady().then(
          () => this.acquire(key, limit, leaseMs),
          (err: unknown) => this.#fallback(key, limit, err),
        );
      return this.#fallback(key, limit);
    }
    return this.#primary.acquire(key, limit, leaseMs).catch((err: unknown) => {
      this.#redis.recordError();
      return this.#fallback(key, limit, err);
    });
  }

  #fallback(key: string, limit: number, cause?: unknown): Slot | undefined {
    this.fallbacks++;
    if (!this.#failOpen)
      throw new Problem('service-unavailable', {
        detail: 'Concurrency accounting is unavailable; try again shortly.',
        headers: { 'retry-after': '1' },
        cause,
      });
    return this.#memory.acquire(key, limit);
  }

  renew(slot: Slot, leaseMs: number): void | Promise<void> {
    if (slot.store !== this.#primary || !this.#redis.available) return;
    return this.#primary.renew(slot, leaseMs).catch(() => this.#redis.recordError(false));
  }

  release(slot: Slot): void | Promise<void> {
    if (slot.store !== this.#primary) return slot.store.release(slot);
    return this.#primary.release(slot).catch(() => {
      // The lease frees it when Redis is back.
      this.#redis.recordError(false);
    });
  }
}
