import { RateLimiterMemory } from 'rate-limiter-flexible';
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
}

export type ConsumeResult =
  | { ok: true; used: number[] }
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
}

/**
 * Counters in process memory, kept by rate-limiter-flexible's `RateLimiterMemory` (one limiter
 * per lifetime). All-or-nothing: every counter is consumed in the same tick (nothing can
 * interleave), and if one is refused, what the others took is rewarded back before any other
 * request runs.
 */
export class MemoryCounters implements CounterStore {
  readonly #limiters = new Map<number, RateLimiterMemory>();

  /**
   * One limiter per lifetime; limits are checked here, not by the limiter, so that a counter is
   * one number whatever limit reads it (as in Redis): a rotated key and its successor share a
   * remaining-uses counter under different allowances.
   */
  #limiter(spec: CounterSpec): RateLimiterMemory {
    let limiter = this.#limiters.get(spec.spanSec);
    if (limiter === undefined) {
      // duration 0 keeps a key for ever (lifetime quotas); otherwise a key outlives its window.
      // Expiry runs on setTimeout, which cannot wait past 2³¹ ms: longer spans are kept instead.
      const duration = spec.spanSec * 1000 > 2 ** 31 - 1 ? 0 : spec.spanSec;
      limiter = new RateLimiterMemory({ points: Number.MAX_SAFE_INTEGER, duration });
      this.#limiters.set(spec.spanSec, limiter);
    }
    return limiter;
  }

  consume(specs: readonly CounterSpec[]): Promise<ConsumeResult> {
    const pending = specs.map((s) => this.#limiter(s).consume(s.key, s.cost));
    return Promise.all(pending).then((results) => {
      const used = results.map((r) => r.consumedPoints);
      const failed = specs.findIndex((s, i) => used[i]! > s.limit);
      if (failed === -1) return { ok: true, used };
      // Give everything back: a refused request consumes no budget.
      specs.forEach((s) => void this.#limiter(s).reward(s.key, s.cost));
      return { ok: false, failed, used: used.map((u, i) => u - specs[i]!.cost) };
    });
  }

  refund(specs: readonly CounterSpec[]): Promise<void> {
    return Promise.all(specs.map((s) => this.#limiter(s).reward(s.key, s.cost))).then(() => undefined);
  }

  peek(specs: readonly CounterSpec[]): Promise<number[]> {
    return Promise.all(
      specs.map((s) =>
        this.#limiter(s)
          .get(s.key)
          .then((r) => r?.consumedPoints ?? 0),
      ),
    );
  }

  reset(key: string): Promise<void> {
    return Promise.all([...this.#limiters.values()].map((l) => l.delete(key))).then(() => undefined);
  }
}

/**
 * Check every counter, and only if all have room, charge them all — atomically, in one script:
 * one Redis round trip per request for all of its rate limits, its quota and its key's remaining
 * uses. rate-limiter-flexible's `RateLimiterRedis` runs one script per limiter and cannot refuse
 * a request that fails one limit without charging the others, so this is the one place the
 * gateway speaks Lua itself.
 * KEYS: the counters. ARGV: limit, cost, ttl (ms) for each. Returns [failed index or 0, used…].
 */
const CONSUME_LUA = `
local n = #KEYS
local used = redis.call('MGET', unpack(KEYS))
for i = 1, n do
  local u = tonumber(used[i]) or 0
  if u + tonumber(ARGV[3 * i - 1]) > tonumber(ARGV[3 * i - 2]) then
    local out = { i }
    for j = 1, n do out[j + 1] = tonumber(used[j]) or 0 end
    return out
  end
end
local out = { 0 }
for i = 1, n do
  local cost = tonumber(ARGV[3 * i - 1])
  local v = redis.call('INCRBY', KEYS[i], cost)
  local ttl = tonumber(ARGV[3 * i])
  if v == cost and ttl > 0 then redis.call('PEXPIRE', KEYS[i], ttl) end
  out[i + 1] = v
end
return out
`;

/** Refunds never take a counter below zero (a refund racing a period's expiry). */
const REFUND_LUA = `
for i = 1, #KEYS do
  local v = redis.call('DECRBY', KEYS[i], tonumber(ARGV[i]))
  if v < 0 then redis.call('SET', KEYS[i], 0, 'KEEPTTL') end
end
return 1
`;

type ScriptClient = {
  tollgateConsume(...args: Array<string | number>): Promise<number[]>;
  tollgateRefund(...args: Array<string | number>): Promise<number>;
};

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

  constructor(redis: RedisHandle) {
    this.#redis = redis;
    this.#cluster = redis.config.cluster !== undefined;
    const client = redis.client as unknown as {
      defineCommand(name: string, def: { numberOfKeys?: number; lua: string }): void;
    };
    client.defineCommand('tollgateConsume', { lua: CONSUME_LUA });
    client.defineCommand('tollgateRefund', { lua: REFUND_LUA });
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
      results.forEach((r, gi) => {
        groups[gi]!.indexes.forEach((idx, k) => {
          used[idx] = r.used[k]!;
        });
        if (!r.ok && (failed === -1 || groups[gi]!.indexes[r.failed]! < failed))
          failed = groups[gi]!.indexes[r.failed]!;
      });
      if (failed === -1) return { ok: true, used };
      // Undo the groups that were charged.
      await Promise.all(results.flatMap((r, gi) => (r.ok ? [this.refund(groups[gi]!.specs)] : [])));
      results.forEach((r, gi) => {
        if (r.ok)
          groups[gi]!.indexes.forEach((idx, k) => (used[idx] = r.used[k]! - groups[gi]!.specs[k]!.cost));
      });
      return { ok: false, failed, used };
    });
  }

  async #consumeGroup(specs: readonly CounterSpec[]): Promise<ConsumeResult> {
    const args: Array<string | number> = [specs.length];
    for (const s of specs) args.push(this.#redis.key(s.key));
    for (const s of specs) args.push(s.limit, s.cost, s.ttlMs);
    const out = await this.#client().tollgateConsume(...args);
    const used = out.slice(1).map(Number);
    const first = Number(out[0]);
    return first === 0 ? { ok: true, used } : { ok: false, failed: first - 1, used };
  }

  async refund(specs: readonly CounterSpec[]): Promise<void> {
    if (specs.length === 0) return;
    const groups = this.#cluster ? groupByTag(specs) : [{ specs: [...specs], indexes: [] }];
    await Promise.all(
      groups.map((g) =>
        this.#client().tollgateRefund(
          g.specs.length,
          ...g.specs.map((s) => this.#redis.key(s.key)),
          ...g.specs.map((s) => s.cost),
        ),
      ),
    );
  }

  async peek(specs: readonly CounterSpec[]): Promise<number[]> {
    if (specs.length === 0) return [];
    const values = await Promise.all(specs.map((s) => this.#redis.client.get(this.#redis.key(s.key))));
    return values.map((v) => Number(v ?? 0));
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
