import type { Redis } from 'ioredis';
import type { Logger } from '../../observability/logger.js';
import type { RedisHandle } from '../../shared/redis.js';
import { RedisCounters, type CounterSpec } from './counters.js';

/*
 * The counter layout migration: builds before the shared hashes (`RedisCounters.where`) kept each
 * fixed window and day/month quota as a plain string key of its own, `<prefix><spec.key>`
 * (`rl:{key:k1}:plan:pro:hourly:3600:493…`, `q:{key:k1}:month:m202612`), made by INCRBY and
 * given its PX expiry on its first charge. This build reads the hash field instead, so without
 * this an upgrade would start the current windows and the current day's and month's quota counts
 * again from zero. Every gateway on Redis folds the old keys into their fields at startup, and
 * again every `intervalMs` for `repeatForMs` (30 s for 10 minutes by default): during a rolling
 * upgrade the instances still on the old build keep writing old keys, and each sweep folds what
 * they added since the last one.
 *
 * Left alone: sliding windows (`…:s`, hashes in both layouts), and the counters kept for ever —
 * `remaining` uses (`rem:{…}`) and lifetime quotas (`q:{…}:lifetime:l`): plain keys without a
 * TTL, which this build still reads in place.
 *
 * Guarantees. A key is folded by one atomic step on a single node (plain or Sentinel): its value
 * is taken (read, and the key deleted) and added to the field in one script, so two gateways
 * sweeping at once, or a sweep racing a request, never count it twice nor lose it. On Redis
 * Cluster the old key and its hash live in different slots, so it is two scripts: take from the
 * old key (atomic: only one sweeper gets the value), then add to the hash. A gateway that dies
 * between the two loses that value — the counter errs low, by at most what the keys of the page
 * in flight held; a failed add is logged with the amount lost.
 *
 * While old instances still run, each layout has its own count: an old instance sees only what it
 * charged since the last sweep (and so may admit more than the limit until it is replaced), a new
 * one sees everything folded so far plus its own. A request in the first moments after start,
 * before the first sweep ends, is decided without the old count.
 */

/** What one sweep did. */
export interface SweepStats {
  /** Keys SCAN returned (strings matching the two key families, before the shape check). */
  scanned: number;
  /** Old counter keys folded into their hash field. */
  folded: number;
  /** The units they held (summed). */
  units: number;
  /** Keys left alone: not an expiring integer counter (no TTL, another shape or type). */
  skipped: number;
  /** Keys whose fold failed (tried again at the next sweep, or lost on a Cluster: see above). */
  failed: number;
  /** SCAN calls (over every master on a Cluster). */
  scans: number;
  ms: number;
}

export interface CounterLayoutMigrationOptions {
  logger: Logger;
  /** Between two sweeps after the first, in ms. Default 30 s. */
  intervalMs?: number | undefined;
  /** How long after `start()` sweeps are repeated, in ms. Default 10 minutes. */
  repeatForMs?: number | undefined;
  /** SCAN's COUNT hint (keys looked at per call). Default 1,000. */
  scanCount?: number | undefined;
  /** Where a counter lives now: `RedisCounters.where` (default: a `RedisCounters` on `redis`). */
  counters?: Pick<RedisCounters, 'where'> | undefined;
}

/**
 * The old key of a fixed window or a day/month quota, after the key prefix: the family, the
 * subject's hash tag (`by:subject`, always with a colon — the shard tags of the shared hashes,
 * `c<i>-<j>`, have none) and the window or period at the end.
 */
const OLD_FIXED_WINDOW = /^rl:\{[^{}]*:[^{}]*\}:.+:\d+:\d+$/;
const OLD_QUOTA_PERIOD = /^q:\{[^{}]*:[^{}]*\}:(?:day:d\d{8}|month:m\d{6})$/;

/**
 * When a key expires, in Unix ms, on Redis's clock: PEXPIRETIME (Redis 7), else TIME + PTTL (6.x).
 * Absolute, so the hash expires at the old key's very millisecond: a relative PTTL then PEXPIRE
 * reads the clock twice and drifts a millisecond when it ticks between them (and more over the
 * Cluster's two steps). -1: no expiry; -2: no key.
 */
const EXPIRES_AT_LUA = `
local function expires_at(k)
  local ok, at = pcall(redis.call, 'PEXPIRETIME', k)
  if ok then return at end
  local left = redis.call('PTTL', k)
  if left < 0 then return left end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + left
end
`;

/** Give a hash the `_` marker and the old key's expiry `at`, unless it already lives longer. */
const EXTEND_LUA = `
local function extend(k, at)
  local made = redis.call('HSETNX', k, '_', '1') == 1
  local left = expires_at(k)
  if (left == -1 and made) or (left >= 0 and left < at) then redis.call('PEXPIREAT', k, at) end
end
`;

/**
 * Single node: fold one old key into its hash field, atomically. KEYS: the old key, the hash;
 * ARGV: the field. Returns { 1, value } when folded (value may be 0: the key is deleted, nothing
 * added), or { 0, reason } when left alone: not a string, no TTL (kept for ever) or gone, not an
 * integer. The hash gets the `_` marker (CONSUME_LUA reads it as "made": its expiry was set) and
 * the old key's expiry, unless it already lives longer.
 */
const FOLD_LUA = `${EXPIRES_AT_LUA}${EXTEND_LUA}
local t = redis.call('TYPE', KEYS[1])['ok']
if t ~= 'string' then return { 0, 'type' } end
local at = expires_at(KEYS[1])
if at <= 0 then return { 0, 'ttl' } end
local v = redis.call('GET', KEYS[1])
if not string.match(v, '^%-?%d+$') then return { 0, 'value' } end
redis.call('DEL', KEYS[1])
if tonumber(v) > 0 then
  redis.call('HINCRBY', KEYS[2], ARGV[1], v)
  extend(KEYS[2], at)
end
return { 1, v }
`;

/** Cluster, step one: take an old key's value (as FOLD_LUA, without the add). Returns { 1, value, expiresAt }. */
const TAKE_LUA = `${EXPIRES_AT_LUA}
local t = redis.call('TYPE', KEYS[1])['ok']
if t ~= 'string' then return { 0, 'type', 0 } end
local at = expires_at(KEYS[1])
if at <= 0 then return { 0, 'ttl', 0 } end
local v = redis.call('GET', KEYS[1])
if not string.match(v, '^%-?%d+$') then return { 0, 'value', 0 } end
redis.call('DEL', KEYS[1])
return { 1, v, at }
`;

/** Cluster, step two: add a taken value to its field. KEYS: the hash; ARGV: field, value, expiresAt (Unix ms). */
const ADD_LUA = `${EXPIRES_AT_LUA}${EXTEND_LUA}
redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
extend(KEYS[1], tonumber(ARGV[3]))
return 1
`;

type MigrationClient = {
  tollgateFoldCounter(oldKey: string, hash: string, field: string): Promise<[number, string]>;
  tollgateTakeCounter(oldKey: string): Promise<[number, string, number]>;
  tollgateAddCounter(hash: string, field: string, value: string, expiresAtMs: number): Promise<number>;
  pipeline(): MigrationPipeline;
};
type MigrationPipeline = {
  tollgateFoldCounter(oldKey: string, hash: string, field: string): MigrationPipeline;
  exec(): Promise<Array<[Error | null, unknown]> | null>;
};

/**
 * Keys folded per pipeline (per batch of concurrent scripts on a Cluster): a whole 1,000-key SCAN
 * page in one pipeline holds this event loop (and a share of Redis) for one long turn; 100 keep
 * each turn short for about the same sweep time (bench/counter-migration.js).
 */
const FOLD_CHUNK = 100;

/** A glob matching `text` literally (SCAN's MATCH): `*?[]\` escaped. */
function globEscape(text: string): string {
  return text.replace(/[*?[\]\\]/g, (c) => `\\${c}`);
}

/**
 * Folds old-layout counter keys into the shared hashes (see the top of this file): once at
 * `start()` (as soon as Redis is ready), then every `intervalMs` until `repeatForMs` has passed.
 * Never blocks startup or a request, and never throws: a failed sweep is logged and the next one
 * tries again. `close()` stops the timer and waits for the page in flight.
 */
export class CounterLayoutMigration {
  readonly #redis: RedisHandle;
  readonly #logger: Logger;
  readonly #intervalMs: number;
  readonly #repeatForMs: number;
  readonly #scanCount: number;
  readonly #counters: Pick<RedisCounters, 'where'>;
  readonly #cluster: boolean;
  #timer: NodeJS.Timeout | undefined;
  #offState: (() => void) | undefined;
  #running: Promise<void> | undefined;
  #startedAt = 0;
  #closed = false;
  /** Sweeps finished (whether or not they found anything). */
  sweeps = 0;
  /** Summed over every sweep of this instance. */
  readonly total = { folded: 0, units: 0, failed: 0 };
  /** The last finished sweep. */
  last: SweepStats | undefined;

  constructor(redis: RedisHandle, options: CounterLayoutMigrationOptions) {
    this.#redis = redis;
    this.#logger = options.logger;
    this.#intervalMs = options.intervalMs ?? 30_000;
    this.#repeatForMs = options.repeatForMs ?? 600_000;
    this.#scanCount = options.scanCount ?? 1000;
    this.#cluster = redis.config.cluster !== undefined;
    this.#counters = options.counters ?? new RedisCounters(redis);
    const client = redis.client as unknown as {
      defineCommand(name: string, def: { numberOfKeys?: number; lua: string }): void;
    };
    client.defineCommand('tollgateFoldCounter', { numberOfKeys: 2, lua: FOLD_LUA });
    client.defineCommand('tollgateTakeCounter', { numberOfKeys: 1, lua: TAKE_LUA });
    client.defineCommand('tollgateAddCounter', { numberOfKeys: 1, lua: ADD_LUA });
  }

  /** Sweeps now (or once Redis is ready), then on the timer. Returns at once. */
  start(): void {
    if (this.#closed || this.#timer !== undefined) return;
    this.#startedAt = performance.now();
    // Still connecting at start (or down): the first sweep waits for the connection.
    this.#offState = this.#redis.onStateChange((state) => {
      if (state === 'ready' && this.sweeps === 0) this.#kick();
    });
    if (this.#redis.ready) this.#kick();
    this.#timer = setInterval(() => {
      this.#kick();
      if (performance.now() - this.#startedAt >= this.#repeatForMs) this.#stopTimer();
    }, this.#intervalMs);
    this.#timer.unref();
  }

  /** Stops the repetition and waits for a sweep in flight to end its current page. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#stopTimer();
    await this.#running;
  }

  #stopTimer(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    this.#offState?.();
    this.#offState = undefined;
  }

  /** A sweep, unless one is running or Redis is not ready (the next tick tries again). */
  #kick(): void {
    if (this.#closed || this.#running !== undefined || !this.#redis.ready) return;
    this.#running = this.sweep()
      .then(
        (s) => {
          if (s.folded > 0 || s.failed > 0)
            this.#logger[s.failed > 0 ? 'warn' : 'info'](
              { counterMigration: s },
              `counters: folded ${s.folded} old-layout counter keys (${s.units} units) into the shared hashes` +
                (s.failed > 0 ? `; ${s.failed} failed (tried again at the next sweep)` : ''),
            );
        },
        (err: unknown) => {
          this.#redis.recordError(false);
          this.#logger.warn(
            { err },
            'counters: layout migration sweep failed (tried again at the next sweep)',
          );
        },
      )
      .finally(() => {
        this.#running = undefined;
      });
  }

  /**
   * One sweep over the keyspace (every master on a Cluster). Public for tests and tools; the
   * gateway runs it through `start()`. Rejects only when a SCAN fails.
   */
  async sweep(): Promise<SweepStats> {
    const t0 = performance.now();
    const stats: SweepStats = { scanned: 0, folded: 0, units: 0, skipped: 0, failed: 0, scans: 0, ms: 0 };
    const client = this.#redis.client;
    const nodes: Redis[] = this.#cluster
      ? (client as unknown as { nodes(role: 'master'): Redis[] }).nodes('master')
      : [client as Redis];
    // One pass for both families: `rl:{…` and `q:{…` (not `rem:{…`); the shape check keeps only
    // the two. TYPE string leaves out the hashes (the shared ones and the sliding windows).
    const match = `${globEscape(this.#redis.prefix)}[qr][l:][:{]*`;
    for (const node of nodes) {
      let cursor = '0';
      do {
        if (this.#closed) break;
        const [next, keys] = await node.scan(
          cursor,
          'MATCH',
          match,
          'COUNT',
          this.#scanCount,
          'TYPE',
          'string',
        );
        stats.scans++;
        cursor = next;
        stats.scanned += keys.length;
        // In chunks, yielding between them: the gateway's requests share this event loop and Redis.
        for (let i = 0; i < keys.length; i += FOLD_CHUNK) {
          if (i > 0) await new Promise((resolve) => setImmediate(resolve));
          await this.#foldPage(keys.slice(i, i + FOLD_CHUNK), stats);
        }
      } while (cursor !== '0');
    }
    stats.ms = Math.round((performance.now() - t0) * 10) / 10;
    this.sweeps++;
    this.total.folded += stats.folded;
    this.total.units += stats.units;
    this.total.failed += stats.failed;
    this.last = stats;
    return stats;
  }

  /** Where an old key's count goes now, or undefined when it is not an old fixed counter's key. */
  #placeOf(fullKey: string): { key: string; field: string } | undefined {
    const prefix = this.#redis.prefix;
    if (!fullKey.startsWith(prefix)) return undefined;
    const key = fullKey.slice(prefix.length);
    if (!OLD_FIXED_WINDOW.test(key) && !OLD_QUOTA_PERIOD.test(key)) return undefined;
    const tag = key.slice(key.indexOf('{') + 1, key.indexOf('}'));
    // A positive ttl puts it in the shared layout (the old key's real TTL is checked in Redis).
    const spec: CounterSpec = { kind: 'rate', key, tag, limit: 0, cost: 0, ttlMs: 1, spanSec: 0 };
    const place = this.#counters.where(spec);
    return place.field === '' ? undefined : place;
  }

  async #foldPage(keys: readonly string[], stats: SweepStats): Promise<void> {
    const work: Array<{ old: string; key: string; field: string }> = [];
    for (const old of keys) {
      const place = this.#placeOf(old);
      if (place === undefined) stats.skipped++;
      else work.push({ old, ...place });
    }
    if (work.length === 0) return;
    const client = this.#redis.client as unknown as MigrationClient;
    const count = (ok: number, value: string) => {
      if (ok !== 1) return void stats.skipped++;
      stats.folded++;
      stats.units += Math.max(0, Number(value));
    };
    if (!this.#cluster) {
      // One pipeline per page: one write, one atomic script per key.
      const p = client.pipeline();
      for (const w of work) p.tollgateFoldCounter(w.old, w.key, w.field);
      const replies = (await p.exec()) ?? [];
      replies.forEach(([err, reply]) => {
        if (err !== null) return void stats.failed++;
        const [ok, value] = reply as [number, string];
        count(Number(ok), String(value));
      });
      if (replies.length < work.length) stats.failed += work.length - replies.length;
      return;
    }
    // Cluster: the old key and its hash are in different slots: take, then add (see the top).
    await Promise.all(
      work.map(async (w) => {
        let taken: [number, string, number];
        try {
          taken = await client.tollgateTakeCounter(w.old);
        } catch {
          stats.failed++; // nothing taken: the next sweep tries again
          return;
        }
        const [ok, value, expiresAt] = taken;
        if (Number(ok) !== 1 || Number(value) <= 0) return count(Number(ok), String(value));
        try {
          await client.tollgateAddCounter(w.key, w.field, String(value), Number(expiresAt));
          count(1, String(value));
        } catch (err) {
          stats.failed++;
          this.#logger.warn(
            { err, key: w.old, lost: Number(value) },
            'counters: an old-layout counter was taken but not added to its hash (its count is lost)',
          );
        }
      }),
    );
  }
}
