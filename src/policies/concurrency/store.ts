import { randomBytes } from 'node:crypto';
import { Problem } from '../../problems/problem.js';
import { CallBatcher } from '../../shared/call-batcher.js';
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

/** How long releases and renewals wait for an acquisition's script call to ride on (then one of their own). */
export const SLOT_LAZY_DELAY_MS = 5;
/**
 * How many script calls may be in flight at once: acquisitions go out once per event-loop turn
 * without waiting for the call before to return (on a busy gateway, that return can be a whole
 * loop turn late), up to this many; then they wait for one.
 */
export const SLOT_IN_FLIGHT_MAX = 2;
/** The most operations (acquisitions, renewals, releases) one script call carries. */
export const SLOT_BATCH_MAX = 128;

/**
 * Every operation of a batch in one atomic script. Per key (ARGV: its limit and lease, then how many releases, renewals and acquisitions follow, then their slot
 * ids): the set drops its expired slots (once), the released ones (one ZREM), extends the renewed
 * ones still held (one ZADD XX: an expired slot is not brought back), then decides the
 * acquisitions in arrival order against one ZCARD — each admitted while fewer than `limit` are
 * held — and adds the admitted ones (one ZADD). Redis's clock decides expiry (one TIME), so
 * gateways with skewed clocks agree. A set lives as long as its newest lease. Returns one 1/0 per
 * acquisition, in order.
 */
const BATCH_LUA = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
local ttl = {}
local a = 1
for k = 1, #KEYS do
  local key = KEYS[k]
  local limit = tonumber(ARGV[a])
  local lease = tonumber(ARGV[a + 1])
  local nrel = tonumber(ARGV[a + 2])
  local nren = tonumber(ARGV[a + 3])
  local nacq = tonumber(ARGV[a + 4])
  a = a + 5
  if nren + nacq > 0 then redis.call('ZREMRANGEBYSCORE', key, '-inf', now) end
  if nrel > 0 then redis.call('ZREM', key, unpack(ARGV, a, a + nrel - 1)) end
  a = a + nrel
  local touched = false
  if nren > 0 then
    local args = {}
    for i = 0, nren - 1 do
      args[#args + 1] = now + lease
      args[#args + 1] = ARGV[a + i]
    end
    if redis.call('ZADD', key, 'XX', 'CH', unpack(args)) > 0 then touched = true end
  end
  a = a + nren
  if nacq > 0 then
    local free = limit - redis.call('ZCARD', key)
    local args = {}
    for i = 0, nacq - 1 do
      if free > 0 then
        free = free - 1
        args[#args + 1] = now + lease
        args[#args + 1] = ARGV[a + i]
        out[#out + 1] = 1
      else
        out[#out + 1] = 0
      end
    end
    if #args > 0 then
      redis.call('ZADD', key, unpack(args))
      touched = true
    end
  end
  a = a + nacq
  if touched and (ttl[key] == nil or ttl[key] < lease) then ttl[key] = lease end
end
for key, lease in pairs(ttl) do redis.call('PEXPIRE', key, lease) end
return out
`;

type ScriptClient = {
  tollgateSlotBatch(numKeys: number, ...args: Array<string | number>): Promise<number[]>;
  zrem(key: string, ...members: string[]): Promise<number>;
};

interface SlotOp {
  kind: 'acquire' | 'renew' | 'release';
  key: string;
  id: string;
  limit: number;
  leaseMs: number;
  resolve: (ok: boolean) => void;
  reject: (err: unknown) => void;
}

/**
 * Slot operations coalesced into one script call (`CallBatcher`): an acquisition waits for the end
 * of the current event-loop turn and, while `SLOT_IN_FLIGHT_MAX` calls are in flight, for one to
 * return; then every operation waiting goes in one call (at most `SLOT_BATCH_MAX`). Releases and
 * renewals ride on it; alone, they wait at most `SLOT_LAZY_DELAY_MS` for one, then go in a call of
 * their own.
 */
type SlotBatcher = CallBatcher<SlotOp>;

/** The part of a key Redis Cluster hashes: its first non-empty `{…}`, else all of it. */
function slotTag(key: string): string {
  const open = key.indexOf('{');
  if (open === -1) return key;
  const close = key.indexOf('}', open + 1);
  return close <= open + 1 ? key : key.slice(open + 1, close);
}

/**
 * Slots in Redis, exact across instances: a sorted set per key, one member per held slot scored
 * with its lease's end. A gateway that dies stops renewing; its slots expire within `leaseMs`.
 *
 * Operations are coalesced (`SlotBatcher`): under load a script call carries many requests'
 * acquisitions, renewals and releases, and costs Redis one TIME and, per key it touches, one
 * ZREMRANGEBYSCORE, ZREM, ZADD XX, ZCARD, ZADD and PEXPIRE — a fraction of a command per request.
 * Exactness is kept: each acquisition is decided inside the atomic script, in arrival order,
 * against the set as it is. Bounds: an acquisition waits at most one round trip more (the call in
 * flight); a release reaches Redis at most `SLOT_LAZY_DELAY_MS` plus one round trip after the
 * response ends — meanwhile the slot still counts (erring strict: a request may be refused that a
 * slot freed a few ms earlier would have admitted, never one too many admitted). What a crash
 * loses: the releases and renewals not yet sent; the lease frees those slots within `leaseMs`, as
 * it frees every slot of a dead gateway. On Redis Cluster one call holds the keys of one hash tag
 * (one slot) only: one batcher per tag.
 */
export class RedisConcurrency implements ConcurrencyStore {
  readonly #redis: RedisHandle;
  readonly #cluster: boolean;
  readonly #batchers = new Map<string, SlotBatcher>();

  constructor(redis: RedisHandle) {
    this.#redis = redis;
    this.#cluster = redis.config.cluster !== undefined;
    const client = redis.client as unknown as {
      defineCommand(name: string, def: { numberOfKeys?: number; lua: string }): void;
    };
    client.defineCommand('tollgateSlotBatch', { lua: BATCH_LUA });
  }

  #client(): ScriptClient {
    return this.#redis.client as unknown as ScriptClient;
  }

  #submit(op: Omit<SlotOp, 'resolve' | 'reject'>): Promise<boolean> {
    const group = this.#cluster ? slotTag(op.key) : '';
    let batcher = this.#batchers.get(group);
    if (batcher === undefined) {
      const made: SlotBatcher = new CallBatcher<SlotOp>({
        send: (batch) => this.#sendBatch(batch),
        // Only this batcher: a late idle call (a turn scheduled before a flush) must not drop a
        // newer batcher of the same group from the list `flush` waits for.
        idle: () => {
          if (this.#batchers.get(group) === made) this.#batchers.delete(group);
        },
        maxBatch: SLOT_BATCH_MAX,
        maxInFlight: SLOT_IN_FLIGHT_MAX,
        lazyDelayMs: SLOT_LAZY_DELAY_MS,
        urgent: (o) => o.kind === 'acquire',
      });
      batcher = made;
      this.#batchers.set(group, batcher);
    }
    const into = batcher;
    return new Promise((resolve, reject) => into.push({ ...op, resolve, reject }));
  }

  async #sendBatch(batch: SlotOp[]): Promise<void> {
    // One section per key: its releases first (freeing slots for the acquisitions behind them),
    // its renewals, its acquisitions in arrival order. A key's ops share one limit and lease (its
    // route's); only across a reload may they differ: then the smaller limit (strict) and the
    // longer lease.
    const sections = new Map<string, { key: string; limit: number; leaseMs: number; ops: SlotOp[][] }>();
    for (const op of batch) {
      let s = sections.get(op.key);
      if (s === undefined)
        sections.set(op.key, (s = { key: op.key, limit: Infinity, leaseMs: 0, ops: [[], [], []] }));
      if (op.kind === 'acquire') s.limit = Math.min(s.limit, op.limit);
      s.leaseMs = Math.max(s.leaseMs, op.leaseMs);
      s.ops[op.kind === 'release' ? 0 : op.kind === 'renew' ? 1 : 2]!.push(op);
    }
    const keys: string[] = [];
    const args: Array<string | number> = [];
    const acquires: SlotOp[] = [];
    for (const s of sections.values()) {
      const [rel, ren, acq] = s.ops as [SlotOp[], SlotOp[], SlotOp[]];
      keys.push(s.key);
      args.push(s.limit === Infinity ? 0 : s.limit, s.leaseMs, rel.length, ren.length, acq.length);
      for (const list of s.ops) for (const op of list) args.push(op.id);
      acquires.push(...acq);
    }
    let out: number[];
    try {
      out = await this.#client().tollgateSlotBatch(keys.length, ...keys, ...args);
    } catch (err) {
      // A timed-out script may still run (a frozen Redis answers late): the slots it would add are
      // nobody's, held for a whole lease. Their removal goes on the same connection right behind
      // it, so it runs after it; when the connection is gone instead, the lease frees the slots.
      const byKey = new Map<string, string[]>();
      for (const op of acquires) {
        const ids = byKey.get(op.key);
        if (ids === undefined) byKey.set(op.key, [op.id]);
        else ids.push(op.id);
      }
      for (const [key, ids] of byKey)
        this.#client()
          .zrem(key, ...ids)
          .catch(() => undefined);
      throw err;
    }
    acquires.forEach((op, i) => op.resolve(Number(out[i]) === 1));
    for (const op of batch) if (op.kind !== 'acquire') op.resolve(true);
  }

  async acquire(key: string, limit: number, leaseMs: number): Promise<Slot | undefined> {
    const id = slotId();
    const full = this.#redis.key(key);
    const ok = await this.#submit({ kind: 'acquire', key: full, id, limit, leaseMs });
    return ok ? { key: full, id, store: this } : undefined;
  }

  async renew(slot: Slot, leaseMs: number): Promise<void> {
    await this.#submit({ kind: 'renew', key: slot.key, id: slot.id, limit: 0, leaseMs });
  }

  async release(slot: Slot): Promise<void> {
    await this.#submit({ kind: 'release', key: slot.key, id: slot.id, limit: 0, leaseMs: 0 });
  }

  /** Sends the releases and renewals still waiting (shutdown: their slots freed now, not by their lease). */
  async flush(): Promise<void> {
    await Promise.allSettled([...this.#batchers.values()].map((b) => b.flush()));
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

  /** Sends the Redis releases and renewals still batched (before Redis closes). */
  flush(): Promise<void> {
    return this.#primary.flush();
  }

  release(slot: Slot): void | Promise<void> {
    if (slot.store !== this.#primary) return slot.store.release(slot);
    return this.#primary.release(slot).catch(() => {
      // The lease frees it when Redis is back.
      this.#redis.recordError(false);
    });
  }
}
