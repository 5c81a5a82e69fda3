import { Packr } from 'msgpackr';
import { CallBatcher } from '../../shared/call-batcher.js';
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
 * written (absolute values: the script is atomic). Layouts (`RedisCounters.where`), by `kind`:
 * - 0, a field of a shared hash (fixed windows, day and month quotas): every subject's counter of
 *   one policy and window, in one of a few shard hashes. Read with one HMGET, written with one HSET
 *   per hash and batch; field `_` marks a hash that exists, so its expiry is set once, when made.
 * - 1, a plain counter (remaining uses, lifetime quotas), kept for ever; read in one MGET.
 * - 2, a sliding window: a hash of bucket → count per subject (stale buckets deleted as it is charged).
 *
 * The argument is one MessagePack array (`cmsgpack.unpack` is C: handing Redis a few hundred
 * separate arguments and `tonumber`-ing each in Lua cost about 0.2 µs apiece, most of the script's
 * time; a JSON array took `cjson` about twice as long as MessagePack does).
 * What the requests share is sent once: a batch's limits as policies, its counters (a key and a
 * field) and field names once each, and a run of consecutive requests with the same checks and
 * costs (one key's, under load) as one group, decided in one step — how many of its m requests
 * fit each check when admitted one after another — instead of m times. A check is three numbers;
 * the script works on counters by index, so no check hashes a string. The array:
 * - P, then per policy (7) its KEYS index, kind, ttl (ms, from now; 0: for ever — a fixed
 *   counter's rounded so that every request of one window in the batch has the same, and shares
 *   one policy and one run), limit, bucket and buckets (sliding), and soft (1: shadow, never
 *   refuses);
 * - F, then the F field names;
 * - C, then per counter (2) its KEYS index and field (1-based into the names; 0 but for kind 0);
 * - S, then per settlement (3: meter values of ended responses, see `SettleBatcher`) its policy,
 *   counter and value — added before any check, without a limit: they ride on the next check
 *   instead of a command of their own;
 * - H, then per shape (what the requests share: a route's and plan's limits) its check count n
 *   and per check its policy and cost (2 each);
 * - to the end, per group its request count m, its shape and, per check, its counter. A cost of 0
 *   (a metered check) needs 1 free: refused at or over the limit. A group's checks have distinct
 *   counters (a request that checks one counter twice goes alone, m = 1, and is charged for both).
 * Returns, per group: k, how many of its requests are admitted (the first k: a refused request
 * charges nothing, so every later one in the group is refused the same way), then per check the
 * value before the group — when every check fits all m requests (the common case: k = m). Else
 * −1 − k; the refused ones' failing check (1-based, in the request's order; 0 if none is
 * refused); per check the value before the group; then per check its fit (how many of the
 * group's requests it admits: a shadow check whose fit is below k charges and admits only that
 * many, and would have refused the rest). Last, per settlement, its counter's new value (0 for a
 * sliding window). The reply is most of the script's output cost: 4 numbers fewer per request of
 * four checks saved about 7 % of its Redis CPU.
 */
const CONSUME_LUA = `
local A = cmsgpack.unpack(ARGV[1])
local floor, format = math.floor, string.format
-- Policies: a counter's limit, window and mode (see above); kind and lifetime are its key's.
local P = A[1]
local pk, pl, pb, pn, ps = {}, {}, {}, {}, {}
local kind, life = {}, {}
local q = 2
for i = 1, P do
  local k = A[q]
  pk[i] = k
  pl[i] = A[q + 3]
  pb[i] = A[q + 4]
  pn[i] = A[q + 5]
  ps[i] = A[q + 6] == 1
  kind[k] = A[q + 1]
  local t = A[q + 2]
  if life[k] == nil or life[k] < t then life[k] = t end
  q = q + 7
end
-- Field names, each once.
local F = A[q]
local fs = {}
for i = 1, F do fs[i] = A[q + i] end
q = q + F + 1
-- Counters: a key and its field (kind 0), or a key (1, 2). Every check and settlement names one.
local C = A[q]
q = q + 1
local ck, cf, cur, sl = {}, {}, {}, {}
local fields, plain, slid = {}, {}, {}
for c = 1, C do
  local k = A[q]
  ck[c] = k
  local d = kind[k]
  if d == 0 then
    cf[c] = fs[A[q + 1]]
    local l = fields[k]
    if l == nil then
      l = {}
      fields[k] = l
    end
    l[#l + 1] = c
  elseif d == 1 then
    plain[#plain + 1] = c
  else
    slid[#slid + 1] = c
    sl[c] = true
  end
  q = q + 2
end
-- Every counter read once: one HMGET per shared hash, one MGET for the plain counters, one
-- HGETALL per sliding window.
local existed = {}
for k, l in pairs(fields) do
  local names = { '_' }
  for i = 1, #l do names[i + 1] = cf[l[i]] end
  local v = redis.call('HMGET', KEYS[k], unpack(names))
  existed[k] = v[1] ~= false
  for i = 1, #l do cur[l[i]] = tonumber(v[i + 1]) or 0 end
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
for i = 1, #slid do
  local h = redis.call('HGETALL', KEYS[ck[slid[i]]])
  local m = {}
  for j = 1, #h, 2 do m[tonumber(h[j])] = tonumber(h[j + 1]) end
  cur[slid[i]] = m
end
-- The settlements (policy, counter, value), before any check: they happened first. Each
-- counter's new value is kept for the reply (0 for a sliding window).
local dirty, from, settled = {}, {}, {}
local S = A[q]
q = q + 1
for j = 1, S do
  local pi, c, v = A[q], A[q + 1], A[q + 2]
  q = q + 3
  if sl[c] then
    local b = pb[pi]
    local m = cur[c]
    m[b] = (m[b] or 0) + v
    local lo = b - pn[pi]
    if from[c] == nil or from[c] < lo then from[c] = lo end
    settled[j] = 0
  else
    cur[c] = cur[c] + v
    settled[j] = cur[c]
  end
  dirty[c] = true
end
-- Shapes: what the requests of a batch share (a route's and plan's limits): n checks, each a
-- policy and a cost.
local H = A[q]
q = q + 1
local sn, sp, sc = {}, {}, {}
for h = 1, H do
  local n = A[q]
  local hp, hc = {}, {}
  for i = 1, n do
    hp[i] = A[q + 2 * i - 1]
    hc[i] = A[q + 2 * i]
  end
  sn[h], sp[h], sc[h] = n, hp, hc
  q = q + 2 * n + 1
end
-- The groups: m requests of one shape on the same n counters, decided in one step.
local out, o = {}, 0
local used, fit = {}, {}
local last = #A
while q <= last do
  local m = A[q]
  local h = A[q + 1]
  local n, hp, hc = sn[h], sp[h], sc[h]
  local at = q + 1
  -- How many of the group's m requests fit each check, admitted one after another.
  local k = m
  for i = 1, n do
    local pi, c, cost = hp[i], A[at + i], hc[i]
    local u = cur[c]
    if sl[c] then
      local lo = pb[pi] - pn[pi]
      local s = 0
      for b, v in pairs(u) do if b >= lo then s = s + v end end
      u = s
    end
    used[i] = u
    local need = cost
    if need < 1 then need = 1 end
    local lim = pl[pi]
    local f
    if u + need > lim then f = 0
    elseif cost <= 0 then f = m
    else
      f = floor((lim - u - need) / cost) + 1
      if f > m then f = m end
    end
    fit[i] = f
    if f < k and not ps[pi] then k = f end
  end
  q = at + n + 1
  -- The first refused request fails on the first enforced check that ran out.
  local failed = 0
  if k < m then
    for i = 1, n do
      if fit[i] == k and not ps[hp[i]] then
        failed = i
        break
      end
    end
  end
  -- The common answer (every request admitted, every check fits all m) is k and the values only.
  local full = k == m
  if full then
    for i = 1, n do
      if fit[i] ~= m then
        full = false
        break
      end
    end
  end
  o = o + 1
  if full then out[o] = k
  else
    out[o] = -1 - k
    o = o + 1
    out[o] = failed
  end
  for i = 1, n do
    local cost = hc[i]
    local f = fit[i]
    if f > k then f = k end
    if cost > 0 and f > 0 then
      local c = A[at + i]
      local add = f * cost
      if sl[c] then
        local pi = hp[i]
        local b = pb[pi]
        local mm = cur[c]
        mm[b] = (mm[b] or 0) + add
        local lo = b - pn[pi]
        if from[c] == nil or from[c] < lo then from[c] = lo end
      else
        cur[c] = cur[c] + add
      end
      dirty[c] = true
    end
    o = o + 1
    out[o] = used[i]
  end
  if not full then
    for i = 1, n do out[o + i] = fit[i] end
    o = o + n
  end
end
-- Write every changed counter once: one HSET per shared hash (with its marker and expiry when
-- new), a SET per plain counter, an HSET (and HDEL of stale buckets) per sliding window.
for k, l in pairs(fields) do
  local args, a = {}, 0
  for i = 1, #l do
    local c = l[i]
    if dirty[c] then
      args[a + 1] = cf[c]
      args[a + 2] = format('%d', cur[c])
      a = a + 2
    end
  end
  if a > 0 then
    if not existed[k] then
      args[a + 1] = '_'
      args[a + 2] = '1'
    end
    redis.call('HSET', KEYS[k], unpack(args))
    if not existed[k] and life[k] > 0 then redis.call('PEXPIRE', KEYS[k], life[k]) end
  end
end
for i = 1, #plain do
  local c = plain[i]
  if dirty[c] then
    local k = ck[c]
    local v = format('%d', cur[c])
    if existed[k] then redis.call('SET', KEYS[k], v, 'KEEPTTL')
    elseif life[k] > 0 then redis.call('SET', KEYS[k], v, 'PX', life[k])
    else redis.call('SET', KEYS[k], v) end
  end
end
for i = 1, #slid do
  local c = slid[i]
  if dirty[c] then
    local lo = from[c]
    local args, stale = {}, {}
    for b, v in pairs(cur[c]) do
      if b < lo then stale[#stale + 1] = b
      else
        args[#args + 1] = b
        args[#args + 1] = format('%d', v)
      end
    end
    local key = KEYS[ck[c]]
    if #args > 0 then redis.call('HSET', key, unpack(args)) end
    if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
    redis.call('PEXPIRE', key, life[ck[c]])
  end
end
for j = 1, S do out[o + j] = settled[j] end
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
  tollgateConsumeBatch(...args: Array<string | number | Buffer>): Promise<number[]>;
  tollgateRefund2(...args: Array<string | number>): Promise<number>;
  tollgateSettle3(...args: Array<string | number>): Promise<number[]>;
};

/** How long settlements wait to be coalesced, and how many distinct counters make a flush at once. */
export const SETTLE_DELAY_MS = 5;
export const SETTLE_MAX_ENTRIES = 64;

/**
 * Meter settlements, coalesced per counter, waiting for a ride: the next counter check's script
 * call takes them (`take`: under load, within one round trip, at no command of their own), or,
 * when no check comes within `SETTLE_DELAY_MS` (or `SETTLE_MAX_ENTRIES` counters are pending), one
 * script call of their own writes them. What a gateway crash loses: the values pending here (at
 * most the last `SETTLE_DELAY_MS` of ended responses) and those of responses still running — those
 * requests were admitted and are never charged.
 */
export class SettleBatcher {
  readonly #write: (specs: CounterSpec[]) => Promise<void>;
  #pending = new Map<string, CounterSpec>();
  /** Per pending counter, the settlements that want to know their span (see `CounterSpec.settled`). */
  #told = new Map<string, Array<{ cost: number; settled: (before: number, after: number) => void }>>();
  #timer: NodeJS.Timeout | undefined;
  #inFlight = new Set<Promise<unknown>>();

  constructor(write: (specs: CounterSpec[]) => Promise<void>) {
    this.#write = write;
  }

  get size(): number {
    return this.#pending.size;
  }

  add(specs: readonly CounterSpec[]): void {
    for (const s of specs) {
      if (s.cost <= 0) continue;
      const id = s.slide === undefined ? s.key : `${s.key}\n${s.slide.bucket}`;
      const had = this.#pending.get(id);
      if (had !== undefined) had.cost += s.cost;
      else
        this.#pending.set(id, {
          kind: s.kind,
          key: s.key,
          tag: s.tag,
          limit: s.limit,
          cost: s.cost,
          ttlMs: s.ttlMs,
          spanSec: s.spanSec,
          slide: s.slide,
          soft: s.soft,
          settled: undefined,
        });
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

  /**
   * Every pending settlement, one spec per counter, now owed by the caller (who writes them and
   * calls each `settled` with the counter's value before and after its one increment).
   */
  take(): CounterSpec[] {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#pending.size === 0) return [];
    const told = this.#told;
    const specs: CounterSpec[] = [];
    for (const [id, spec] of this.#pending) {
      const parts = told.get(id);
      // The counter's one increment, split in consecutive spans, one per settlement, in order.
      if (parts !== undefined)
        spec.settled = (_before, after) => {
          let at = after - spec.cost;
          for (const p of parts) {
            p.settled(at, at + p.cost);
            at += p.cost;
          }
        };
      specs.push(spec);
    }
    this.#pending = new Map();
    this.#told = new Map();
    return specs;
  }

  /** A write of taken settlements that `flush` waits for. */
  track(p: Promise<unknown>): void {
    const t = p.then(
      () => undefined,
      () => undefined,
    );
    this.#inFlight.add(t);
    void t.then(() => this.#inFlight.delete(t));
  }

  #flushNow(): void {
    const specs = this.take();
    if (specs.length > 0) this.track(this.#write(specs));
  }

  async flush(): Promise<void> {
    this.#flushNow();
    await Promise.allSettled([...this.#inFlight]);
  }
}

/** Shard hashes of the shared counter layout: one on a single node, spread over the slots on a Cluster. */
export const COUNTER_SHARDS = { node: 1, cluster: 12 } as const;

/** Two arrays of numbers hold the same values in the same order. */
function sameNumbers(a: readonly number[], b: readonly number[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * The consume script's argument encoder: MessagePack, which Redis's Lua decodes (`cmsgpack`) in
 * about half the time `cjson` takes for the same array; a plain array of numbers and strings, so
 * no msgpackr extension (records, bundled strings) is ever written.
 */
const PACK = new Packr({ useRecords: false, bundleStrings: false, moreTypes: false });
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
 * Consume calls coalesced into one script call (`CallBatcher`, one call in flight): a request's
 * check waits for the end of the current event-loop turn and, while a call is in flight, for it to
 * return — then every request waiting goes in one call (at most `CONSUME_BATCH_MAX`). An idle
 * gateway sends each request on its own at once; a busy one sends one command for many requests,
 * and each counter they share is read and written once. The added wait is bounded by one round
 * trip. Each request is still decided on its own, all-or-nothing, in arrival order, inside one
 * atomic script.
 */
type ConsumeBatcher = CallBatcher<Waiting>;

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
  /** Pending settlements per slot group ('' on a single node): each rides on its group's checks. */
  readonly #settlers = new Map<string, SettleBatcher>();
  readonly #shards: string[];
  readonly #batchers = new Map<string, ConsumeBatcher>();
  /** Told when a batch of settlements could not be written (those meter values are lost). */
  onSettleError: ((err: unknown) => void) | undefined;

  constructor(redis: RedisHandle) {
    this.#redis = redis;
    this.#cluster = redis.config.cluster !== undefined;
    this.#shards = shardTags('c', this.#cluster ? COUNTER_SHARDS.cluster : COUNTER_SHARDS.node);
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
      const made: ConsumeBatcher = new CallBatcher<Waiting>({
        send: (batch) => this.#consumeBatch(group, batch),
        // Only this batcher: a late idle call must not drop a newer one of the same group.
        idle: () => {
          if (this.#batchers.get(group) === made) this.#batchers.delete(group);
        },
        maxBatch: CONSUME_BATCH_MAX,
        maxInFlight: 1,
      });
      batcher = made;
      this.#batchers.set(group, batcher);
    }
    const into = batcher;
    return new Promise((resolve, reject) => into.push({ specs, places, resolve, reject }));
  }

  async #consumeBatch(group: string, batch: Waiting[]): Promise<void> {
    // One JSON argument (see CONSUME_LUA): the policies (a key with its kind, lifetime, limit,
    // sliding window and mode), the settlements riding along, then runs of consecutive requests
    // with the same checks and costs.
    const keys: string[] = [];
    const keyIndex = new Map<string, number>();
    /** Per key (its index − 1), its policies: runs of (life, limit, bucket, buckets, soft, index). */
    const policiesOf: number[][] = [];
    let policyCount = 0;
    const policies: Array<number> = [];
    const fieldIndex = new Map<string, number>();
    const fields: string[] = [];
    /** Per key (its index − 1), its counters by field. */
    const counterIndex: Array<Map<string, number>> = [];
    const counters: number[] = [];
    const now = Date.now();
    /** The policy and the counter of a spec, as indexes into the argument's lists. */
    let policy = 0;
    let counter = 0;
    const place = (s: CounterSpec, at: Place): void => {
      let k = keyIndex.get(at.key);
      if (k === undefined) {
        keyIndex.set(at.key, (k = keys.push(at.key)));
        counterIndex.push(new Map());
        policiesOf.push([]);
      }
      const kind = at.field !== '' ? 0 : s.slide === undefined ? 1 : 2;
      // A fixed counter's ttl runs to its window's end (+1 s), computed when its request was: here
      // it runs to that end's second (rounded: ±0.5 s of drift; +1 s: never shorter than asked),
      // the same for every request of the window whenever in the batch it was computed. Still a
      // ttl, not an absolute time: Redis's clock need not agree with this host's.
      const life =
        kind === 2 || s.ttlMs <= 0 ? s.ttlMs : (Math.round((now + s.ttlMs) / 1000) + 1) * 1000 - now;
      const bucket = s.slide === undefined ? -1 : s.slide.bucket;
      const buckets = s.slide === undefined ? 0 : s.slide.buckets;
      const soft = s.soft === true ? 1 : 0;
      // A limit JSON cannot carry (Infinity) is one no count reaches.
      const limit = Number.isFinite(s.limit) ? s.limit : Number.MAX_VALUE;
      // A key has one policy or a few: found by comparing numbers, no string built per check.
      const known = policiesOf[k - 1]!;
      let p = 0;
      for (let j = 0; j < known.length; j += 6)
        if (
          known[j] === life &&
          known[j + 1] === limit &&
          known[j + 2] === bucket &&
          known[j + 3] === buckets &&
          known[j + 4] === soft
        ) {
          p = known[j + 5]!;
          break;
        }
      if (p === 0) {
        p = ++policyCount;
        known.push(life, limit, bucket, buckets, soft, p);
        policies.push(k, kind, life, limit, bucket, buckets, soft);
      }
      policy = p;
      const byField = counterIndex[k - 1]!;
      let c = byField.get(at.field);
      if (c === undefined) {
        let f = 0;
        if (at.field !== '') {
          f = fieldIndex.get(at.field) ?? 0;
          if (f === 0) fieldIndex.set(at.field, (f = fields.push(at.field)));
        }
        byField.set(at.field, (c = counters.push(k, f) / 2));
      }
      counter = c;
    };
    const settler = this.#settlers.get(group);
    const due = settler === undefined || settler.size === 0 ? [] : settler.take();
    const settlements: number[] = [due.length];
    for (const s of due) {
      place(s, this.where(s));
      settlements.push(policy, counter, s.cost);
    }
    const shapeIndex = new Map<string, number>();
    const shapes: number[] = [];
    const groups: number[] = [];
    /** Per group (consecutive requests of `batch`): its size, and where its m is in `groups`. */
    const runs: Array<{ size: number; at: number }> = [];
    // The previous request's shape, checks and counters: most requests of a batch share a route's
    // shape, and under load one key's requests come in runs — both found by comparing numbers.
    let lastChecks: number[] = [];
    let lastShape = 0;
    let lastOn: number[] | undefined;
    for (const w of batch) {
      const n = w.specs.length;
      const checks = new Array<number>(2 * n);
      const on = new Array<number>(n);
      let shared = false;
      for (let i = 0; i < n; i++) {
        const s = w.specs[i]!;
        place(s, w.places[i]!);
        for (let j = 0; j < i; j++) if (on[j] === counter) shared = true;
        checks[2 * i] = policy;
        checks[2 * i + 1] = s.cost;
        on[i] = counter;
      }
      let h = sameNumbers(checks, lastChecks) ? lastShape : undefined;
      if (h === undefined) {
        const shape = checks.join(',');
        h = shapeIndex.get(shape);
        if (h === undefined) {
          shapeIndex.set(shape, (h = shapeIndex.size + 1));
          shapes.push(n, ...checks);
        }
        lastChecks = checks;
      }
      const run = runs[runs.length - 1];
      if (
        !shared &&
        run !== undefined &&
        h === lastShape &&
        lastOn !== undefined &&
        sameNumbers(on, lastOn)
      ) {
        run.size++;
        groups[run.at]!++;
        continue;
      }
      lastShape = h;
      lastOn = shared ? undefined : on;
      runs.push({ size: 1, at: groups.length });
      groups.push(1, h);
      for (const c of on) groups.push(c);
    }
    const arg = PACK.pack([
      policyCount,
      ...policies,
      fields.length,
      ...fields,
      counters.length / 2,
      ...counters,
      ...settlements,
      shapeIndex.size,
      ...shapes,
      ...groups,
    ]);
    const call = this.#client().tollgateConsumeBatch(keys.length, ...keys, arg);
    if (due.length > 0) {
      settler!.track(call);
      // The check failed: the settlements it carried are lost, as a failed write of their own would be.
      call.catch((err: unknown) => this.onSettleError?.(err));
    }
    const out = await call;
    let p = 0;
    let w = 0;
    for (const run of runs) {
      const n = batch[w]!.specs.length;
      // k alone when every request is admitted and every check fits them all; else -1 - k, the
      // failing check, the values, then each check's fit.
      const head = Number(out[p++]);
      const full = head >= 0;
      const admitted = full ? head : -1 - head;
      const failed = full ? -1 : Number(out[p++]) - 1;
      const before = new Array<number>(n);
      const fit = new Array<number>(n);
      for (let i = 0; i < n; i++) before[i] = Number(out[p + i]);
      p += n;
      if (full) fit.fill(run.size);
      else {
        for (let i = 0; i < n; i++) fit[i] = Number(out[p + i]);
        p += n;
      }
      for (let j = 0; j < run.size; j++, w++) {
        const specs = batch[w]!.specs;
        // The j-th request of the run sees the checks after the j before it (or the admitted ones).
        const seen = j < admitted ? j + 1 : admitted;
        const used = new Array<number>(n);
        let over: number[] | undefined;
        for (let i = 0; i < n; i++) {
          const cost = specs[i]!.cost;
          used[i] = cost > 0 ? before[i]! + Math.min(seen, fit[i]!) * cost : before[i]!;
          if (j < admitted && j >= fit[i]!) (over ??= []).push(i);
        }
        const r: ConsumeResult =
          j >= admitted
            ? { ok: false, failed, used }
            : over === undefined
              ? { ok: true, used }
              : { ok: true, used, over };
        batch[w]!.resolve(r);
      }
    }
    for (const s of due) {
      const after = Number(out[p++]);
      if (s.settled !== undefined && s.slide === undefined && Number.isFinite(after))
        s.settled(after - s.cost, after);
    }
  }

  settle(specs: readonly CounterSpec[]): void {
    if (!this.#cluster) return this.#settlerOf('').add(specs);
    for (const g of groupBy(specs.map((s) => this.where(s))))
      this.#settlerOf(g.group).add(g.indexes.map((i) => specs[i]!));
  }

  #settlerOf(group: string): SettleBatcher {
    let settler = this.#settlers.get(group);
    if (settler === undefined) {
      settler = new SettleBatcher((specs) =>
        this.#settleNow(specs).catch((err: unknown) => this.onSettleError?.(err)),
      );
      this.#settlers.set(group, settler);
    }
    return settler;
  }

  async flush(): Promise<void> {
    await Promise.all([...this.#settlers.values()].map((s) => s.flush()));
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
