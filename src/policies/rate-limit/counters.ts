import type { RedisHandle } from '../../shared/redis.js';

/** A Redis Cluster hash tag from a value: braces would make Redis read a different tag. */
export function hashTag(value: string): string {
  return value.includes('{') || value.includes('}')
    ? value.replace(/[{}]/g, (c) => (c === '{' ? '%7B' : '%7D'))
    : value;
}

/**
 * One counter a request consumes: a rate-limit window, a quota period, or a key's remaining uses.
 * `key` already holds the window or period; `tag` is the Redis Cluster hash tag of its subject.
 */
export interface CounterSpec {
  kind: 'rate' | 'quota' | 'remaining';
  key: string;
  tag: string;
  limit: number;
  cost: number;
  /** How long the counter lives from now, in ms (0: for ever). Redis sets it when the counter is made. */
  ttlMs: number;
  /** The longest a counter of this kind lives, in s (0: for ever): a constant per policy, for the memory twin. */
  spanSec: number;
  /**
   * A sliding window: the counter is a set of sub-window buckets, `bucket` the index of the one
   * `now` falls in; a request counts what the last `buckets + 1` buckets hold (the window and the
   * partly-passed oldest bucket, counted whole: erring strict). Unset: one fixed-window counter.
   */
  slide?: { bucket: number; buckets: number } | undefined;
  /** Shadow mode: never refuses the request; charged only when it fits (as an enforced limit would be). */
  soft?: boolean | undefined;
  /**
   * A settlement (`settle`) of a fixed counter: told what the counter held before and after this
   * spec's `cost` was added (a metered quota's threshold events). Coalesced settlements each get
   * their own consecutive span of the counter's one atomic increment.
   */
  settled?: ((before: number, after: number) => void) | undefined;
}

/**
 * What a counter needs free for a request: its cost, and at least 1 — a metered limit is checked
 * with cost 0 (its cost is learned after the response) and refuses when already at or over its limit.
 */
export const needOf = (spec: CounterSpec): number => (spec.cost < 1 ? 1 : spec.cost);

export type ConsumeResult =
  /** `over`: indexes of soft (shadow) counters that would have refused; absent when none. */
  | { ok: true; used: number[]; over?: number[] }
  /** `failed`: index of the first counter that would go over its limit; nothing was consumed. */
  | { ok: false; failed: number; used: number[] };

/**
 * Where counters live. `consume` is all-or-nothing: either every counter is charged, or none is
 * and the first that would overflow is reported. Both twins give the same answers (one contract
 * suite); the Redis twin is exact across gateway instances.
 */
export interface CounterStore {
  consume(specs: readonly CounterSpec[]): ConsumeResult | Promise<ConsumeResult>;
  /** Gives back what `consume` charged (quota not owed: the upstream failed). */
  refund(specs: readonly CounterSpec[]): void | Promise<void>;
  /** Current usage, without charging anything. */
  peek(specs: readonly CounterSpec[]): number[] | Promise<number[]>;
  /** Forgets a counter (a key's `remaining` was reset by an admin). */
  reset(key: string, tag: string): void | Promise<void>;
  /**
   * Adds each spec's `cost` without checking any limit (a meter's reported value, once the
   * response is over). Fire-and-forget: the Redis twin batches these (see `SettleBatcher`).
   */
  settle(specs: readonly CounterSpec[]): void;
  /** Writes what `settle` still holds (at shutdown). */
  flush(): Promise<void>;
}

/**
 * Counters in process memory, synchronous: every method answers at once (no promise), so a
 * request's limits cost no microtask per counter. Fixed windows, quotas and remaining uses are
 * `FixedMemory` counters (one number per key, below); sliding windows `SlidingMemory`. All-or-
 * nothing in one synchronous step: no other request's check interleaves, so every counter is
 * read, the verdict made, and then either all are charged or none.
 *
 * Hand-written instead of rate-limiter-flexible's `RateLimiterMemory` (which this replaced):
 * its API is asynchronous although its store is not — a promise and a `then` per counter, about
 * 7 µs per request for three limits and a quota — and it arms a timer per key. The answers are
 * the same (the CounterStore contract suite runs on both twins).
 */
export class MemoryCounters implements CounterStore {
  readonly #fixedStore = new FixedMemory();
  readonly #sliding = new SlidingMemory();

  consume(specs: readonly CounterSpec[]): ConsumeResult {
    const fixed = this.#fixedStore;
    const sliding = this.#sliding;
    const now = Date.now();
    // What each counter held before this request.
    const before = new Array<number>(specs.length);
    let failed = -1;
    let over: number[] | undefined;
    for (let i = 0; i < specs.length; i++) {
      const s = specs[i]!;
      const held = s.slide === undefined ? fixed.used(s.key, now) : sliding.used(s.key, s.slide);
      before[i] = held;
      if (held + needOf(s) <= s.limit) continue;
      if (s.soft === true) (over ??= []).push(i);
      else if (failed === -1) failed = i;
    }
    // A refused request consumes no budget.
    if (failed !== -1) return { ok: false, failed, used: before };
    const used = new Array<number>(specs.length);
    for (let i = 0; i < specs.length; i++) {
      const s = specs[i]!;
      // A shadow limit is charged only when it fits, as an enforced one would be.
      if (over?.includes(i) === true || s.cost <= 0) {
        used[i] = before[i]!;
        continue;
      }
      if (s.slide === undefined) fixed.add(s.key, s.cost, s.spanSec, now);
      else sliding.add(s.key, s.slide, s.cost, s.ttlMs);
      used[i] = before[i]! + s.cost;
    }
    return over === undefined ? { ok: true, used } : { ok: true, used, over };
  }

  refund(specs: readonly CounterSpec[]): void {
    const now = Date.now();
    for (const s of specs) {
      if (s.slide === undefined) this.#fixedStore.add(s.key, -s.cost, s.spanSec, now);
      else this.#sliding.add(s.key, s.slide, -s.cost, s.ttlMs);
    }
  }

  peek(specs: readonly CounterSpec[]): number[] {
    const now = Date.now();
    return specs.map((s) =>
      s.slide === undefined ? this.#fixedStore.used(s.key, now) : this.#sliding.used(s.key, s.slide),
    );
  }

  reset(key: string): void {
    this.#sliding.delete(key);
    this.#fixedStore.delete(key);
  }

  settle(specs: readonly CounterSpec[]): void {
    const now = Date.now();
    for (const s of specs) {
      if (s.cost <= 0) continue;
      if (s.slide === undefined) {
        const before = this.#fixedStore.used(s.key, now);
        this.#fixedStore.add(s.key, s.cost, s.spanSec, now);
        s.settled?.(before, before + s.cost);
      } else this.#sliding.add(s.key, s.slide, s.cost, s.ttlMs);
    }
  }

  flush(): Promise<void> {
    return Promise.resolve();
  }
}

/**
 * Fixed counters in memory: one number per key, which lives `spanSec` from the write that made it
 * (0: for ever), as rate-limiter-flexible's memory store kept them. The key holds the window or
 * period, so a counter is never read after its window; expiry is memory hygiene: an expired
 * entry reads as 0 and a sweep (every minute, real time) deletes it — no timer per key.
 */
class FixedMemory {
  readonly #entries = new Map<string, { value: number; expiresAt: number }>();
  #sweep: NodeJS.Timeout | undefined;

  used(key: string, now: number): number {
    const e = this.#entries.get(key);
    return e === undefined || e.expiresAt <= now ? 0 : e.value;
  }

  /** Adds `amount` (negative: a refund), making the counter when it is absent or expired. */
  add(key: string, amount: number, spanSec: number, now: number): void {
    const e = this.#entries.get(key);
    if (e !== undefined && e.expiresAt > now) {
      e.value += amount;
      return;
    }
    this.#entries.set(key, {
      value: amount,
      expiresAt: spanSec > 0 ? now + spanSec * 1000 : Number.POSITIVE_INFINITY,
    });
    this.#startSweep();
  }

  delete(key: string): void {
    this.#entries.delete(key);
  }

  #startSweep(): void {
    if (this.#sweep !== undefined) return;
    this.#sweep = setInterval(() => {
      const now = Date.now();
      for (const [key, e] of this.#entries) if (e.expiresAt <= now) this.#entries.delete(key);
      if (this.#entries.size === 0) {
        clearInterval(this.#sweep);
        this.#sweep = undefined;
      }
    }, 60_000);
    this.#sweep.unref();
  }
}

/**
 * Sliding-window counters in memory: per key, the buckets `[index, count]` still inside the
 * window. Bucket indexes come from the caller's clock (a `ManualClock` in tests); entries whose
 * last write is older than their lifetime are swept every minute (real time: memory only).
 */
class SlidingMemory {
  readonly #entries = new Map<string, { buckets: number[]; counts: number[]; expiresAt: number }>();
  #sweep: NodeJS.Timeout | undefined;

  used(key: string, slide: { bucket: number; buckets: number }): number {
    const e = this.#entries.get(key);
    if (e === undefined) return 0;
    const from = slide.bucket - slide.buckets;
    let sum = 0;
    for (let i = 0; i < e.buckets.length; i++) if (e.buckets[i]! >= from) sum += e.counts[i]!;
    return sum;
  }

  add(key: string, slide: { bucket: number; buckets: number }, amount: number, ttlMs: number): void {
    let e = this.#entries.get(key);
    if (e === undefined) {
      if (amount <= 0) return;
      this.#entries.set(key, (e = { buckets: [], counts: [], expiresAt: 0 }));
      this.#startSweep();
    }
    e.expiresAt = Date.now() + ttlMs;
    // Forget buckets that left the window.
    const from = slide.bucket - slide.buckets;
    let keep = 0;
    while (keep < e.buckets.length && e.buckets[keep]! < from) keep++;
    if (keep > 0) {
      e.buckets.splice(0, keep);
      e.counts.splice(0, keep);
    }
    const at = e.buckets.indexOf(slide.bucket);
    if (at !== -1) e.counts[at] = Math.max(0, e.counts[at]! + amount);
    else if (amount > 0) {
      // Buckets stay in index order: a refund's or a late settlement's bucket may be an older one.
      let pos = e.buckets.length;
      while (pos > 0 && e.buckets[pos - 1]! > slide.bucket) pos--;
      e.buckets.splice(pos, 0, slide.bucket);
      e.counts.splice(pos, 0, amount);
    }
  }

  delete(key: string): void {
    this.#entries.delete(key);
  }

  #startSweep(): void {
    if (this.#sweep !== undefined) return;
    this.#sweep = setInterval(() => {
      const now = Date.now();
      for (const [key, e] of this.#entries) if (e.expiresAt <= now) this.#entries.delete(key);
      if (this.#entries.size === 0) {
        clearInterval(this.#sweep);
        this.#sweep = undefined;
      }
    }, 60_000);
    this.#sweep.unref();
  }
}

/**
 * Check every counter, and only if all have room, charge them all — atomically, in one script:
 * one Redis round trip per request for all of its rate limits (fixed and sliding windows, metered
 * and shadow ones), its quota and its key's remaining uses. rate-limiter-flexible's
 * `RateLimiterRedis` runs one script per limiter and cannot refuse a request that fails one limit
 * without charging the others, so this is the one place the gateway speaks Lua itself.
 * KEYS: the counters. ARGV, six per counter: limit, cost, ttl (ms), bucket (-1: a fixed counter,
 * a string; else a sliding window's current bucket, a hash of bucket → count), buckets per window,
 * soft (1: shadow, never refuses). A cost of 0 (a metered check) needs 1 free: refused at or over
 * the limit. Returns [failed index or 0, used…, soft indexes that would have refused…].
 */
const CONSUME_LUA = `
local n = #KEYS
local used = {}
local stale = {}
local fixedKeys, fixedAt = {}, {}
for i = 1, n do
  if tonumber(ARGV[6 * i - 2]) < 0 then
    fixedKeys[#fixedKeys + 1] = KEYS[i]
    fixedAt[#fixedAt + 1] = i
  end
end
if #fixedKeys > 0 then
  local v = redis.call('MGET', unpack(fixedKeys))
  for k = 1, #fixedAt do used[fixedAt[k]] = tonumber(v[k]) or 0 end
end
for i = 1, n do
  local b = tonumber(ARGV[6 * i - 2])
  if b >= 0 then
    local from = b - tonumber(ARGV[6 * i - 1])
    local h = redis.call('HGETALL', KEYS[i])
    local u = 0
    local old = {}
    for k = 1, #h, 2 do
      if tonumber(h[k]) >= from then u = u + tonumber(h[k + 1]) else old[#old + 1] = h[k] end
    end
    used[i] = u
    stale[i] = old
  end
end
local over = {}
for i = 1, n do
  local need = tonumber(ARGV[6 * i - 4])
  if need < 1 then need = 1 end
  if used[i] + need > tonumber(ARGV[6 * i - 5]) then
    if ARGV[6 * i] == '1' then
      over[i] = true
    else
      local out = { i }
      for j = 1, n do out[j + 1] = used[j] end
      return out
    end
  end
end
local out = { 0 }
local soft = {}
for i = 1, n do
  local cost = tonumber(ARGV[6 * i - 4])
  local ttl = tonumber(ARGV[6 * i - 3])
  local b = tonumber(ARGV[6 * i - 2])
  local v = used[i]
  if over[i] then
    soft[#soft + 1] = i
  elseif cost > 0 then
    if b < 0 then
      v = redis.call('INCRBY', KEYS[i], cost)
      if v == cost and ttl > 0 then redis.call('PEXPIRE', KEYS[i], ttl) end
    else
      redis.call('HINCRBY', KEYS[i], b, cost)
      if #stale[i] > 0 then redis.call('HDEL', KEYS[i], unpack(stale[i])) end
      redis.call('PEXPIRE', KEYS[i], ttl)
      v = v + cost
    end
  end
  out[i + 1] = v
end
for k = 1, #soft do out[n + 1 + k] = soft[k] end
return out
`;

/**
 * Adds meter values (settlements), three ARGV per counter: value, ttl (ms), bucket (-1: fixed).
 * No check: the request was admitted before its cost was known. Returns each fixed counter's new
 * value (0 for a sliding one), for the threshold events of metered quotas.
 */
const SETTLE_LUA = `
local out = {}
for i = 1, #KEYS do
  local v = tonumber(ARGV[3 * i - 2])
  local ttl = tonumber(ARGV[3 * i - 1])
  local b = tonumber(ARGV[3 * i])
  if b < 0 then
    local r = redis.call('INCRBY', KEYS[i], v)
    if r == v and ttl > 0 then redis.call('PEXPIRE', KEYS[i], ttl) end
    out[i] = r
  else
    redis.call('HINCRBY', KEYS[i], b, v)
    redis.call('PEXPIRE', KEYS[i], ttl)
    out[i] = 0
  end
end
return out
`;

/** Refunds never take a counter below zero (a refund racing a period's expiry). */
const REFUND_LUA = `
for i = 1, #KEYS do
  local b = tonumber(ARGV[2 * i])
  if b < 0 then
    local v = redis.call('DECRBY', KEYS[i], tonumber(ARGV[2 * i - 1]))
    if v < 0 then redis.call('SET', KEYS[i], 0, 'KEEPTTL') end
  else
    local v = redis.call('HINCRBY', KEYS[i], b, -tonumber(ARGV[2 * i - 1]))
    if v <= 0 then redis.call('HDEL', KEYS[i], b) end
  end
end
return 1
`;

type ScriptClient = {
  tollgateConsume(...args: Array<string | number>): Promise<number[]>;
  tollgateRefund(...args: Array<string | number>): Promise<number>;
  tollgateSettle(...args: Array<string | number>): Promise<number[]>;
};

/** How long settlements wait to be coalesced, and how many distinct counters make a flush at once. */
export const SETTLE_DELAY_MS = 5;
export const SETTLE_MAX_ENTRIES = 64;

/**
 * Meter settlements, coalesced per counter for `SETTLE_DELAY_MS` (or until `SETTLE_MAX_ENTRIES`
 * counters are pending) and written in one script call per flush (per hash tag in Redis Cluster):
 * under load, many requests' settlements share one command. What a gateway crash loses: the values
 * pending here (at most the last `SETTLE_DELAY_MS` of ended responses) and those of responses
 * still running — those requests were admitted and are never charged.
 */
export class SettleBatcher {
  readonly #write: (specs: CounterSpec[]) => Promise<void>;
  #pending = new Map<string, CounterSpec>();
  /** Per pending counter, the settlements that want to know their span (see `CounterSpec.settled`). */
  #told = new Map<string, Array<{ cost: number; settled: (before: number, after: number) => void }>>();
  #timer: NodeJS.Timeout | undefined;
  #inFlight = new Set<Promise<void>>();

  constructor(write: (specs: CounterSpec[]) => Promise<void>) {
    this.#write = write;
  }

  add(specs: readonly CounterSpec[]): void {
    for (const s of specs) {
      if (s.cost <= 0) continue;
      const id = s.slide === undefined ? s.key : `${s.key}\n${s.slide.bucket}`;
      const had = this.#pending.get(id);
      if (had !== undefined) had.cost += s.cost;
      else this.#pending.set(id, { ...s, settled: undefined });
      if (s.settled !== undefined && s.slide === undefined) {
        let told = this.#told.get(id);
        if (told === undefined) this.#told.set(id, (told = []));
        told.push({ cost: s.cost, settled: s.settled });
      }
    }
    if (this.#pending.size >= SETTLE_MAX_ENTRIES) this.#flushNow();
    else if (this.#pending.size > 0 && this.#timer === undefined) {
      this.#timer = setTimeout(() => this.#flushNow(), SETTLE_DELAY_MS);
      this.#timer.unref();
    }
  }

  #flushNow(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#pending.size === 0) return;
    const told = this.#told;
    const specs = [...this.#pending].map(([id, spec]) => {
      const parts = told.get(id);
      if (parts === undefined) return spec;
      // The counter's one increment, split in consecutive spans, one per settlement, in order.
      spec.settled = (_before, after) => {
        let at = after - spec.cost;
        for (const p of parts) {
          p.settled(at, at + p.cost);
          at += p.cost;
        }
      };
      return spec;
    });
    this.#pending = new Map();
    this.#told = new Map();
    const p = this.#write(specs).finally(() => this.#inFlight.delete(p));
    this.#inFlight.add(p);
  }

  async flush(): Promise<void> {
    this.#flushNow();
    await Promise.allSettled([...this.#inFlight]);
  }
}

/**
 * Counters in Redis, exact across instances. On a single node every counter of a request goes in
 * one script call. In Redis Cluster one script may only touch one slot, so counters are grouped by
 * hash tag (the subject of the limit), each group runs its script (concurrently, so still one
 * round-trip time), and if a later group refuses, the earlier groups are refunded: all-or-nothing
 * with a short window where another request can see the charge.
 */
export class RedisCounters implements CounterStore {
  readonly #redis: RedisHandle;
  readonly #cluster: boolean;
  readonly #settler: SettleBatcher;
  /** Told when a batch of settlements could not be written (those meter values are lost). */
  onSettleError: ((err: unknown) => void) | undefined;

  constructor(redis: RedisHandle) {
    this.#redis = redis;
    this.#cluster = redis.config.cluster !== undefined;
    this.#settler = new SettleBatcher((specs) =>
      this.#settleNow(specs).catch((err: unknown) => this.onSettleError?.(err)),
    );
    const client = redis.client as unknown as {
      defineCommand(name: string, def: { numberOfKeys?: number; lua: string }): void;
    };
    client.defineCommand('tollgateConsume', { lua: CONSUME_LUA });
    client.defineCommand('tollgateRefund', { lua: REFUND_LUA });
    client.defineCommand('tollgateSettle', { lua: SETTLE_LUA });
  }

  #client(): ScriptClient {
    return this.#redis.client as unknown as ScriptClient;
  }

  consume(specs: readonly CounterSpec[]): Promise<ConsumeResult> {
    if (!this.#cluster) return this.#consumeGroup(specs);
    const groups = groupByTag(specs);
    if (groups.length === 1) return this.#consumeGroup(specs);
    return Promise.all(groups.map((g) => this.#consumeGroup(g.specs))).then(async (results) => {
      const used = new Array<number>(specs.length).fill(0);
      let failed = -1;
      let over: number[] | undefined;
      results.forEach((r, gi) => {
        const indexes = groups[gi]!.indexes;
        indexes.forEach((idx, k) => {
          used[idx] = r.used[k]!;
        });
        if (r.ok) for (const k of r.over ?? []) (over ??= []).push(indexes[k]!);
        if (!r.ok && (failed === -1 || indexes[r.failed]! < failed)) failed = indexes[r.failed]!;
      });
      if (failed === -1)
        return over === undefined ? { ok: true, used } : { ok: true, used, over: over.sort((x, y) => x - y) };
      // Undo the groups that were charged (not their shadow counters that did not fit: never charged).
      const charged = (r: ConsumeResult, gi: number) =>
        groups[gi]!.specs.filter((_s, k) => !(r.ok && r.over?.includes(k) === true));
      await Promise.all(results.flatMap((r, gi) => (r.ok ? [this.refund(charged(r, gi))] : [])));
      results.forEach((r, gi) => {
        if (r.ok)
          groups[gi]!.indexes.forEach((idx, k) => {
            if (r.over?.includes(k) !== true) used[idx] = r.used[k]! - groups[gi]!.specs[k]!.cost;
          });
      });
      return { ok: false, failed, used };
    });
  }

  async #consumeGroup(specs: readonly CounterSpec[]): Promise<ConsumeResult> {
    const args: Array<string | number> = [specs.length];
    for (const s of specs) args.push(this.#redis.key(s.key));
    for (const s of specs)
      args.push(
        s.limit,
        s.cost,
        s.ttlMs,
        s.slide === undefined ? -1 : s.slide.bucket,
        s.slide === undefined ? 0 : s.slide.buckets,
        s.soft === true ? 1 : 0,
      );
    const out = await this.#client().tollgateConsume(...args);
    const n = specs.length;
    const used = out.slice(1, n + 1).map(Number);
    const first = Number(out[0]);
    if (first !== 0) return { ok: false, failed: first - 1, used };
    return out.length > n + 1
      ? { ok: true, used, over: out.slice(n + 1).map((i) => Number(i) - 1) }
      : { ok: true, used };
  }

  settle(specs: readonly CounterSpec[]): void {
    this.#settler.add(specs);
  }

  flush(): Promise<void> {
    return this.#settler.flush();
  }

  async #settleNow(specs: readonly CounterSpec[]): Promise<void> {
    const groups = this.#cluster ? groupByTag(specs) : [{ specs: [...specs], indexes: [] }];
    await Promise.all(
      groups.map(async (g) => {
        const args: Array<string | number> = [g.specs.length];
        for (const s of g.specs) args.push(this.#redis.key(s.key));
        for (const s of g.specs) args.push(s.cost, s.ttlMs, s.slide === undefined ? -1 : s.slide.bucket);
        const totals = await this.#client().tollgateSettle(...args);
        g.specs.forEach((s, i) => {
          const after = Number(totals[i]);
          if (s.settled !== undefined && s.slide === undefined && Number.isFinite(after))
            s.settled(after - s.cost, after);
        });
      }),
    );
  }

  async refund(specs: readonly CounterSpec[]): Promise<void> {
    specs = specs.filter((s) => s.cost > 0);
    if (specs.length === 0) return;
    const groups = this.#cluster ? groupByTag(specs) : [{ specs: [...specs], indexes: [] }];
    await Promise.all(
      groups.map((g) =>
        this.#client().tollgateRefund(
          g.specs.length,
          ...g.specs.map((s) => this.#redis.key(s.key)),
          ...g.specs.flatMap((s) => [s.cost, s.slide === undefined ? -1 : s.slide.bucket]),
        ),
      ),
    );
  }

  async peek(specs: readonly CounterSpec[]): Promise<number[]> {
    if (specs.length === 0) return [];
    return Promise.all(
      specs.map(async (s) => {
        const key = this.#redis.key(s.key);
        if (s.slide === undefined) return Number((await this.#redis.client.get(key)) ?? 0);
        const from = s.slide.bucket - s.slide.buckets;
        let sum = 0;
        for (const [b, v] of Object.entries(await this.#redis.client.hgetall(key)))
          if (Number(b) >= from) sum += Number(v);
        return sum;
      }),
    );
  }

  async reset(key: string): Promise<void> {
    await this.#redis.client.del(this.#redis.key(key));
  }
}

function groupByTag(specs: readonly CounterSpec[]): Array<{ specs: CounterSpec[]; indexes: number[] }> {
  const groups = new Map<string, { specs: CounterSpec[]; indexes: number[] }>();
  specs.forEach((s, i) => {
    let g = groups.get(s.tag);
    if (g === undefined) groups.set(s.tag, (g = { specs: [], indexes: [] }));
    g.specs.push(s);
    g.indexes.push(i);
  });
  return [...groups.values()];
}
