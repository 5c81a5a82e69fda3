import type { RedisHandle } from '../../shared/redis.js';
import { shardOf, shardTags } from '../../shared/shards.js';

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
 * Entries that expire: forgotten by a sweep once a minute while there are any (the timer is
 * unref'd and stops when the map is empty).
 */
class ExpiringEntries<E extends { expiresAt: number }> {
  protected readonly entries = new Map<string, E>();
  #sweep: NodeJS.Timeout | undefined;

  delete(key: string): void {
    this.entries.delete(key);
  }

  protected startSweep(): void {
    if (this.#sweep !== undefined) return;
    this.#sweep = setInterval(() => {
      const now = Date.now();
      for (const [key, e] of this.entries) if (e.expiresAt <= now) this.entries.delete(key);
      if (this.entries.size === 0) {
        clearInterval(this.#sweep);
        this.#sweep = undefined;
      }
    }, 60_000);
    this.#sweep.unref();
  }
}

/**
 * Fixed counters in memory: one number per key, which lives `spanSec` from the write that made it
 * (0: for ever), as rate-limiter-flexible's memory store kept them. The key holds the window or
 * period, so a counter is never read after its window; expiry is memory hygiene: an expired
 * entry reads as 0 and a sweep (every minute, real time) deletes it — no timer per key.
 */
class FixedMemory extends ExpiringEntries<{ value: number; expiresAt: number }> {
  used(key: string, now: number): number {
    const e = this.entries.get(key);
    return e === undefined || e.expiresAt <= now ? 0 : e.value;
  }

  /** Adds `amount` (negative: a refund), making the counter when it is absent or expired. */
  add(key: string, amount: number, spanSec: number, now: number): void {
    const e = this.entries.get(key);
    if (e !== undefined && e.expiresAt > now) {
      e.value += amount;
      return;
    }
    this.entries.set(key, {
      value: amount,
      expiresAt: spanSec > 0 ? now + spanSec * 1000 : Number.POSITIVE_INFINITY,
    });
    this.startSweep();
  }
}

/**
 * Sliding-window counters in memory: per key, the buckets `[index, count]` still inside the
 * window. Bucket indexes come from the caller's clock (a `ManualClock` in tests); entries whose
 * last write is older than their lifetime are swept every minute (real time: memory only).
 */
class SlidingMemory extends ExpiringEntries<{ buckets: number[]; counts: number[]; expiresAt: number }> {
  used(key: string, slide: { bucket: number; buckets: number }): number {
    const e = this.entries.get(key);
    if (e === undefined) return 0;
    const from = slide.bucket - slide.buckets;
    let sum = 0;
    for (let i = 0; i < e.buckets.length; i++) if (e.buckets[i]! >= from) sum += e.counts[i]!;
    return sum;
  }

  add(key: string, slide: { bucket: number; buckets: number }, amount: number, ttlMs: number): void {
    let e = this.entries.get(key);
    if (e === undefined) {
      if (amount <= 0) return;
      this.entries.set(key, (e = { buckets: [], counts: [], expiresAt: 0 }));
      this.startSweep();
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
}

/**
 * Check every counter of every request in a batch, and charge a request's counters only if all of
 * them have room — atomically, in one script call for the whole batch (see `ConsumeBatcher`).
 * rate-limiter-flexible's `RateLimiterRedis` runs one script per limiter and cannot refuse a request
 * that fails one limit without charging the others, so this is the one place the gateway speaks Lua.
 *
 * Each counter is read once and written once per batch, however many requests share it: the
 * requests are decided in order on the values in the script's memory, then every changed counter is
 * written (absolute values: the script is atomic). Layouts (`RedisCounters.where`):
 * - a field of a shared hash (fixed windows, day and month quotas): every subject's counter of one
 *   policy and window, in one of a few shard hashes. Read with one HMGET, written with one HSET per
 *   hash and batch; field `_` marks a hash that exists, so its expiry is set once, when made.
 * - a sliding window: a hash of bucket → count per subject (stale buckets deleted as it is charged).
 * - a plain counter (remaining uses, lifetime quotas), kept for ever; read in one MGET.
 *
 * The arguments are deduplicated, since the script's cost is mostly reading them: a batch of one
 * key's requests sends each counter once. ARGV: C, then per counter (3) its KEYS index, field
 * ('' unless a shared hash) and ttl (ms; 0 keeps it); D, then per check (5) its counter, limit,
 * bucket (-1: not sliding), buckets per window and soft (1: shadow, never refuses); R, then per
 * request its check count and, per check, the check and the cost. A cost of 0 (a metered check)
 * needs 1 free: refused at or over the limit.
 * Returns, per request: failed check (1-based, in the request's order) or 0, the used values, the
 * count of soft checks that would have refused and their positions.
 */
const CONSUME_LUA = `
local tonumber = tonumber
local C = tonumber(ARGV[1])
local ck, cf, ct, cs = {}, {}, {}, {}
local p = 2
for c = 1, C do
  ck[c] = tonumber(ARGV[p])
  cf[c] = ARGV[p + 1]
  ct[c] = tonumber(ARGV[p + 2])
  p = p + 3
end
local D = tonumber(ARGV[p])
p = p + 1
local dc, dl, db, dn, ds = {}, {}, {}, {}, {}
for d = 1, D do
  local c = tonumber(ARGV[p])
  dc[d] = c
  dl[d] = tonumber(ARGV[p + 1])
  db[d] = tonumber(ARGV[p + 2])
  dn[d] = tonumber(ARGV[p + 3])
  ds[d] = ARGV[p + 4] == '1'
  if db[d] >= 0 then cs[c] = true end
  p = p + 5
end
-- Read every counter once: one HMGET per shared hash, one HGETALL per sliding window, one MGET.
local val, existed = {}, {}
local hashes, plain = {}, {}
for c = 1, C do
  local k = ck[c]
  if cs[c] then
    if val[k] == nil then
      local h = redis.call('HGETALL', KEYS[k])
      local m = {}
      for i = 1, #h, 2 do m[tonumber(h[i])] = tonumber(h[i + 1]) end
      val[k] = m
    end
  elseif cf[c] ~= '' then
    local list = hashes[k]
    if list == nil then
      list = {}
      hashes[k] = list
    end
    list[#list + 1] = c
  else
    plain[#plain + 1] = c
  end
end
local cur = {}
for k, list in pairs(hashes) do
  local names = {}
  for i = 1, #list do names[i] = cf[list[i]] end
  local v = redis.call('HMGET', KEYS[k], '_', unpack(names))
  existed[k] = v[1] ~= false
  for i = 1, #list do cur[list[i]] = tonumber(v[i + 1]) or 0 end
end
if #plain > 0 then
  local names = {}
  for i = 1, #plain do names[i] = KEYS[ck[plain[i]]] end
  local v = redis.call('MGET', unpack(names))
  for i = 1, #plain do
    cur[plain[i]] = tonumber(v[i]) or 0
    existed[ck[plain[i]]] = v[i] ~= false
  end
end
local R = tonumber(ARGV[p])
p = p + 1
local out, o = {}, 0
local dirty, from = {}, {}
local used, need, check, over = {}, {}, {}, {}
for r = 1, R do
  local n = tonumber(ARGV[p])
  p = p + 1
  local failed = 0
  for i = 1, n do
    local d = tonumber(ARGV[p])
    local cost = tonumber(ARGV[p + 1])
    p = p + 2
    check[i] = d
    need[i] = cost
    local c = dc[d]
    local u
    if cs[c] then
      local lo = db[d] - dn[d]
      u = 0
      for b, v in pairs(val[ck[c]]) do if b >= lo then u = u + v end end
    else
      u = cur[c]
    end
    used[i] = u
    local want = cost
    if want < 1 then want = 1 end
    over[i] = false
    if failed == 0 and u + want > dl[d] then
      if ds[d] then over[i] = true else failed = i end
    end
  end
  o = o + 1
  out[o] = failed
  local soft = 0
  if failed == 0 then
    for i = 1, n do
      local cost = need[i]
      if not over[i] and cost > 0 then
        local d = check[i]
        local c = dc[d]
        used[i] = used[i] + cost
        dirty[c] = true
        if cs[c] then
          local m = val[ck[c]]
          m[db[d]] = (m[db[d]] or 0) + cost
          local lo = db[d] - dn[d]
          if from[c] == nil or from[c] < lo then from[c] = lo end
        else
          cur[c] = used[i]
        end
      end
    end
  end
  for i = 1, n do
    o = o + 1
    out[o] = used[i]
  end
  local at = o + 1
  o = o + 1
  if failed == 0 then
    for i = 1, n do
      if over[i] then
        soft = soft + 1
        o = o + 1
        out[o] = i
      end
    end
  end
  out[at] = soft
end
-- Write every changed counter once.
local hset, slid = {}, {}
for c in pairs(dirty) do
  local k = ck[c]
  if cs[c] then
    slid[k] = c
  elseif cf[c] ~= '' then
    local args = hset[k]
    if args == nil then
      args = {}
      hset[k] = args
      if not existed[k] then
        args[1] = '_'
        args[2] = '1'
      end
    end
    args[#args + 1] = cf[c]
    args[#args + 1] = string.format('%d', cur[c])
    if not existed[k] and ct[c] > 0 then
      local t = ct[c]
      if (hset[-k] or 0) < t then hset[-k] = t end
    end
  else
    local v = string.format('%d', cur[c])
    if existed[k] then redis.call('SET', KEYS[k], v, 'KEEPTTL')
    elseif ct[c] > 0 then redis.call('SET', KEYS[k], v, 'PX', ct[c])
    else redis.call('SET', KEYS[k], v) end
  end
end
for k, args in pairs(hset) do
  if k > 0 then
    redis.call('HSET', KEYS[k], unpack(args))
    local t = hset[-k]
    if t ~= nil then redis.call('PEXPIRE', KEYS[k], t) end
  end
end
for k, c in pairs(slid) do
  local m = val[k]
  local args, stale = {}, {}
  local lo = from[c]
  for b, v in pairs(m) do
    if b < lo then stale[#stale + 1] = b
    else
      args[#args + 1] = b
      args[#args + 1] = string.format('%d', v)
    end
  end
  if #args > 0 then redis.call('HSET', KEYS[k], unpack(args)) end
  if #stale > 0 then redis.call('HDEL', KEYS[k], unpack(stale)) end
  redis.call('PEXPIRE', KEYS[k], ct[c])
end
return out
`;

/**
 * Adds meter values (settlements), four ARGV per counter: field ('' unless a shared hash), value,
 * ttl (ms), bucket (-1: not sliding). No check: the request was admitted before its cost was known.
 * Returns each non-sliding counter's new value (0 for a sliding one), for the threshold events of
 * metered quotas.
 */
const SETTLE_LUA = `
local out = {}
for i = 1, #KEYS do
  local f = ARGV[4 * i - 3]
  local v = tonumber(ARGV[4 * i - 2])
  local ttl = tonumber(ARGV[4 * i - 1])
  local b = tonumber(ARGV[4 * i])
  if b >= 0 then
    redis.call('HINCRBY', KEYS[i], b, v)
    redis.call('PEXPIRE', KEYS[i], ttl)
    out[i] = 0
  elseif f ~= '' then
    out[i] = redis.call('HINCRBY', KEYS[i], f, v)
    if redis.call('HSETNX', KEYS[i], '_', '1') == 1 and ttl > 0 then redis.call('PEXPIRE', KEYS[i], ttl) end
  else
    local r = redis.call('INCRBY', KEYS[i], v)
    if r == v and ttl > 0 then redis.call('PEXPIRE', KEYS[i], ttl) end
    out[i] = r
  end
end
return out
`;

/**
 * Refunds never take a counter below zero (a refund racing a period's expiry); three ARGV per
 * counter: field, amount, bucket. A hash field refunded to zero is deleted (a refund after the
 * window expired leaves nothing behind).
 */
const REFUND_LUA = `
for i = 1, #KEYS do
  local f = ARGV[3 * i - 2]
  local c = tonumber(ARGV[3 * i - 1])
  local b = tonumber(ARGV[3 * i])
  if b >= 0 then
    local v = redis.call('HINCRBY', KEYS[i], b, -c)
    if v <= 0 then redis.call('HDEL', KEYS[i], b) end
  elseif f ~= '' then
    local v = redis.call('HINCRBY', KEYS[i], f, -c)
    if v <= 0 then redis.call('HDEL', KEYS[i], f) end
  else
    local v = redis.call('DECRBY', KEYS[i], c)
    if v < 0 then redis.call('SET', KEYS[i], 0, 'KEEPTTL') end
  end
end
return 1
`;

type ScriptClient = {
  tollgateConsumeBatch(...args: Array<string | number>): Promise<number[]>;
  tollgateRefund2(...args: Array<string | number>): Promise<number>;
  tollgateSettle3(...args: Array<string | number>): Promise<number[]>;
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

/** Shard hashes of the shared counter layout: one on a single node, spread over the slots on a Cluster. */
export const COUNTER_SHARDS = { node: 1, cluster: 12 } as const;
/** The most requests one consume script decides (bounds its arguments and its run time). */
export const CONSUME_BATCH_MAX = 128;

/** Where a counter lives in Redis: a key, the field of a shared hash ('' if none), its slot group. */
interface Place {
  key: string;
  field: string;
  group: string;
}

interface Waiting {
  specs: readonly CounterSpec[];
  places: Place[];
  resolve: (r: ConsumeResult) => void;
  reject: (err: unknown) => void;
}

/**
 * Consume calls coalesced into one script call: a request's check waits for the end of the current
 * event-loop turn (`setImmediate`) and, while a call is in flight, for it to return — then every
 * request waiting goes in one call (at most `CONSUME_BATCH_MAX`). An idle gateway sends each
 * request on its own at once; a busy one sends one command for many requests, and each counter
 * they share is read and written once. The added wait is bounded by one round trip. Each request
 * is still decided on its own, all-or-nothing, in arrival order, inside one atomic script.
 */
class ConsumeBatcher {
  readonly #send: (batch: Waiting[]) => Promise<void>;
  readonly #idle: () => void;
  #queue: Waiting[] = [];
  #scheduled = false;
  #inFlight = false;

  constructor(send: (batch: Waiting[]) => Promise<void>, idle: () => void) {
    this.#send = send;
    this.#idle = idle;
  }

  submit(specs: readonly CounterSpec[], places: Place[]): Promise<ConsumeResult> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ specs, places, resolve, reject });
      this.#kick();
    });
  }

  #kick(): void {
    if (this.#scheduled || this.#inFlight) return;
    this.#scheduled = true;
    setImmediate(() => {
      this.#scheduled = false;
      this.#run();
    });
  }

  #run(): void {
    if (this.#inFlight) return;
    if (this.#queue.length === 0) return this.#idle();
    const batch =
      this.#queue.length <= CONSUME_BATCH_MAX ? this.#queue : this.#queue.slice(0, CONSUME_BATCH_MAX);
    this.#queue = batch === this.#queue ? [] : this.#queue.slice(CONSUME_BATCH_MAX);
    this.#inFlight = true;
    this.#send(batch)
      .catch((err: unknown) => {
        for (const w of batch) w.reject(err);
      })
      .finally(() => {
        this.#inFlight = false;
        if (this.#queue.length > 0) this.#kick();
        else this.#idle();
      });
  }
}

/**
 * Counters in Redis, exact across instances. Every request's counters are decided in one atomic
 * script, and concurrent requests share script calls (`ConsumeBatcher`), so under load a request
 * costs Redis a fraction of one command: each counter a batch touches is read once and written
 * once, and the counters of many subjects share a hash (`h` layout, see `CONSUME_LUA`).
 *
 * In Redis Cluster one script may only touch one slot. The shared hashes are spread over
 * `COUNTER_SHARDS.cluster` shard tags chosen evenly over the slot space (a subject's counters all
 * in its shard's slot); a request whose counters fall in several slots (a `global` limit and a `key`
 * limit) runs one script per slot concurrently, and if one refuses, the groups that were charged
 * are refunded: all-or-nothing with a short window where another request can see the charge.
 */
export class RedisCounters implements CounterStore {
  readonly #redis: RedisHandle;
  readonly #cluster: boolean;
  readonly #settler: SettleBatcher;
  readonly #shards: string[];
  readonly #batchers = new Map<string, ConsumeBatcher>();
  /** Told when a batch of settlements could not be written (those meter values are lost). */
  onSettleError: ((err: unknown) => void) | undefined;

  constructor(redis: RedisHandle) {
    this.#redis = redis;
    this.#cluster = redis.config.cluster !== undefined;
    this.#shards = shardTags('c', this.#cluster ? COUNTER_SHARDS.cluster : COUNTER_SHARDS.node);
    this.#settler = new SettleBatcher((specs) =>
      this.#settleNow(specs).catch((err: unknown) => this.onSettleError?.(err)),
    );
    const client = redis.client as unknown as {
      defineCommand(name: string, def: { numberOfKeys?: number; lua: string }): void;
    };
    client.defineCommand('tollgateConsumeBatch', { lua: CONSUME_LUA });
    client.defineCommand('tollgateRefund2', { lua: REFUND_LUA });
    client.defineCommand('tollgateSettle3', { lua: SETTLE_LUA });
  }

  #client(): ScriptClient {
    return this.#redis.client as unknown as ScriptClient;
  }

  /**
   * Where a counter lives. Fixed windows and quotas that expire go to the shared layout: the key
   * with its subject's hash tag replaced by the subject's shard tag, the subject as the field (one
   * to one: the shard is a function of the subject). Sliding windows and counters kept for ever
   * (remaining uses, lifetime quotas) keep a key of their own.
   */
  where(s: CounterSpec): Place {
    const open = s.key.indexOf('{');
    const close = open === -1 ? -1 : s.key.indexOf('}', open);
    if (s.slide !== undefined || s.ttlMs <= 0 || close === -1)
      return { key: this.#redis.key(s.key), field: '', group: s.tag };
    const subject = s.key.slice(open + 1, close);
    const shard = this.#shards[shardOf(subject, this.#shards.length)]!;
    return {
      key: this.#redis.key(`${s.key.slice(0, open + 1)}${shard}${s.key.slice(close)}`),
      field: subject,
      group: shard,
    };
  }

  consume(specs: readonly CounterSpec[]): Promise<ConsumeResult> {
    const places = specs.map((s) => this.where(s));
    if (!this.#cluster) return this.#consumeGroup('', specs, places);
    const groups = groupBy(places);
    if (groups.length === 1) return this.#consumeGroup(groups[0]!.group, specs, places);
    return Promise.all(
      groups.map((g) =>
        this.#consumeGroup(
          g.group,
          g.indexes.map((i) => specs[i]!),
          g.indexes.map((i) => places[i]!),
        ),
      ),
    ).then(async (results) => {
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
        groups[gi]!.indexes.map((i) => specs[i]!).filter((_s, k) => !(r.ok && r.over?.includes(k) === true));
      await Promise.all(results.flatMap((r, gi) => (r.ok ? [this.refund(charged(r, gi))] : [])));
      results.forEach((r, gi) => {
        if (r.ok)
          groups[gi]!.indexes.forEach((idx, k) => {
            if (r.over?.includes(k) !== true) used[idx] = r.used[k]! - specs[idx]!.cost;
          });
      });
      return { ok: false, failed, used };
    });
  }

  #consumeGroup(group: string, specs: readonly CounterSpec[], places: Place[]): Promise<ConsumeResult> {
    let batcher = this.#batchers.get(group);
    if (batcher === undefined) {
      batcher = new ConsumeBatcher(
        (batch) => this.#consumeBatch(batch),
        () => this.#batchers.delete(group),
      );
      this.#batchers.set(group, batcher);
    }
    return batcher.submit(specs, places);
  }

  async #consumeBatch(batch: Waiting[]): Promise<void> {
    // Arguments deduplicated (see CONSUME_LUA): keys, counters (key and field), checks (a counter
    // with its limit, bucket and mode), then each request as its checks and costs.
    const keys: string[] = [];
    const keyIndex = new Map<string, number>();
    const counters: Array<[number, string, number]> = [];
    const counterIndex = new Map<string, number>();
    const checks: Array<string | number> = [];
    const checkIndex = new Map<string, number>();
    const requests: Array<string | number> = [batch.length];
    for (const w of batch) {
      requests.push(w.specs.length);
      w.specs.forEach((s, i) => {
        const place = w.places[i]!;
        let k = keyIndex.get(place.key);
        if (k === undefined) keyIndex.set(place.key, (k = keys.push(place.key)));
        const cid = `${k}\n${place.field}`;
        let c = counterIndex.get(cid);
        if (c === undefined) counterIndex.set(cid, (c = counters.push([k, place.field, s.ttlMs])));
        else if (counters[c - 1]![2] < s.ttlMs) counters[c - 1]![2] = s.ttlMs;
        const bucket = s.slide === undefined ? -1 : s.slide.bucket;
        const buckets = s.slide === undefined ? 0 : s.slide.buckets;
        const soft = s.soft === true ? 1 : 0;
        const did = `${c}|${s.limit}|${bucket}|${buckets}|${soft}`;
        let d = checkIndex.get(did);
        if (d === undefined) {
          d = checkIndex.size + 1;
          checkIndex.set(did, d);
          checks.push(c, s.limit, bucket, buckets, soft);
        }
        requests.push(d, s.cost);
      });
    }
    const out = await this.#client().tollgateConsumeBatch(
      keys.length,
      ...keys,
      counters.length,
      ...counters.flat(),
      checkIndex.size,
      ...checks,
      ...requests,
    );
    let p = 0;
    for (const w of batch) {
      const n = w.specs.length;
      const first = Number(out[p]);
      const used = out.slice(p + 1, p + 1 + n).map(Number);
      const softCount = Number(out[p + 1 + n]);
      const soft = out.slice(p + 2 + n, p + 2 + n + softCount).map((i) => Number(i) - 1);
      p += 2 + n + softCount;
      if (first !== 0) w.resolve({ ok: false, failed: first - 1, used });
      else w.resolve(soft.length > 0 ? { ok: true, used, over: soft } : { ok: true, used });
    }
  }

  settle(specs: readonly CounterSpec[]): void {
    this.#settler.add(specs);
  }

  flush(): Promise<void> {
    return this.#settler.flush();
  }

  async #settleNow(specs: readonly CounterSpec[]): Promise<void> {
    const places = specs.map((s) => this.where(s));
    const groups = this.#cluster ? groupBy(places) : [{ group: '', indexes: specs.map((_s, i) => i) }];
    await Promise.all(
      groups.map(async (g) => {
        const args: Array<string | number> = [g.indexes.length];
        for (const i of g.indexes) args.push(places[i]!.key);
        for (const i of g.indexes) {
          const s = specs[i]!;
          args.push(places[i]!.field, s.cost, s.ttlMs, s.slide === undefined ? -1 : s.slide.bucket);
        }
        const totals = await this.#client().tollgateSettle3(...args);
        g.indexes.forEach((i, n) => {
          const s = specs[i]!;
          const after = Number(totals[n]);
          if (s.settled !== undefined && s.slide === undefined && Number.isFinite(after))
            s.settled(after - s.cost, after);
        });
      }),
    );
  }

  async refund(specs: readonly CounterSpec[]): Promise<void> {
    specs = specs.filter((s) => s.cost > 0);
    if (specs.length === 0) return;
    const places = specs.map((s) => this.where(s));
    const groups = this.#cluster ? groupBy(places) : [{ group: '', indexes: specs.map((_s, i) => i) }];
    await Promise.all(
      groups.map((g) =>
        this.#client().tollgateRefund2(
          g.indexes.length,
          ...g.indexes.map((i) => places[i]!.key),
          ...g.indexes.flatMap((i) => [
            places[i]!.field,
            specs[i]!.cost,
            specs[i]!.slide === undefined ? -1 : specs[i]!.slide.bucket,
          ]),
        ),
      ),
    );
  }

  async peek(specs: readonly CounterSpec[]): Promise<number[]> {
    if (specs.length === 0) return [];
    return Promise.all(
      specs.map(async (s) => {
        const place = this.where(s);
        if (place.field !== '') return Number((await this.#redis.client.hget(place.key, place.field)) ?? 0);
        if (s.slide === undefined) return Number((await this.#redis.client.get(place.key)) ?? 0);
        const from = s.slide.bucket - s.slide.buckets;
        let sum = 0;
        for (const [b, v] of Object.entries(await this.#redis.client.hgetall(place.key)))
          if (Number(b) >= from) sum += Number(v);
        return sum;
      }),
    );
  }

  /** Forgets a counter, in whichever layout it lives (the caller knows its key, not its lifetime). */
  async reset(key: string, tag: string): Promise<void> {
    const shared = this.where({ kind: 'rate', key, tag, limit: 0, cost: 0, ttlMs: 1, spanSec: 0 });
    await Promise.all([
      this.#redis.client.del(this.#redis.key(key)),
      shared.field === '' ? Promise.resolve(0) : this.#redis.client.hdel(shared.key, shared.field),
    ]);
  }
}

function groupBy(places: readonly Place[]): Array<{ group: string; indexes: number[] }> {
  const groups = new Map<string, { group: string; indexes: number[] }>();
  places.forEach((p, i) => {
    let g = groups.get(p.group);
    if (g === undefined) groups.set(p.group, (g = { group: p.group, indexes: [] }));
    g.indexes.push(i);
  });
  return [...groups.values()];
}
