import type { RedisHandle } from '../shared/redis.js';
import { hashTag } from '../policies/rate-limit/counters.js';
import { shardOf, shardTags } from '../shared/shards.js';
import {
  DAY_MS,
  addBucket,
  emptyBucket,
  type UsageBucket,
  type UsageKind,
  type UsageStore,
} from './usage.js';

/** How often pending buckets are written, by default (`usage.flushIntervalMs`). */
export const FLUSH_INTERVAL_MS = 1000;
/**
 * Distinct pending buckets (subject × hour) that make a flush at once, before the interval. High
 * enough that with many active subjects a flush still sums several requests per subject (a flush
 * costs Redis per subject, not per request: at 1000, 12,000 keys at any rate wrote about one
 * subject per request), low enough to bound memory (~100 bytes a bucket) and a flush (a few script
 * calls of `FLUSH_FIELDS_PER_CALL` fields).
 */
export const FLUSH_AT_BUCKETS = 10_000;
/** Pending buckets kept at most while Redis is away; past it, new ones are dropped (and counted). */
export const MAX_PENDING_BUCKETS = 100_000;

const CLASS_FIELD = ['', '1xx', '2xx', '3xx', '4xx', '5xx'];

/**
 * Shard hashes per UTC day: on a single node enough that no hash grows huge (a hash's fields are
 * freed at once when it expires), on a Cluster spread evenly over the slots (as many per master
 * on 3, 4, 6, 8, 12, 16 or 24 masters).
 */
export const USAGE_SHARDS = { node: 32, cluster: 48 } as const;
/** Counter fields one flush script call writes at most (a bucket's are never split). */
export const FLUSH_FIELDS_PER_CALL = 2000;

/**
 * Adds a flush's counts to the shard hashes of one slot, atomically. KEYS: day hashes. ARGV, per
 * key: its ttl (ms; 0 keeps it), the meter names its fields report (comma-separated, escaped; ''
 * if none), F, then F × (field, increment). Per key one HMGET (the marker `_`, the meter-name
 * index `m`, the fields) and one HSET (the new values, the index if it grew, the marker if the
 * hash is new), and a PEXPIRE when the hash is new. Returns the commands it ran.
 */
const FLUSH_LUA = `
local tonumber, format, find, gmatch = tonumber, string.format, string.find, string.gmatch
local p, ran = 1, 0
-- Longer than hash-max-listpack-value (64): the hash is a hashtable from its first write. As a
-- listpack it would be rewritten at every insert while it grows to its hundreds of fields (the
-- first flushes of a day cost about 3 times as much Redis CPU).
local MARK = 'tollgate usage shard hash (this marker keeps it out of the listpack encoding)'
for i = 1, #KEYS do
  local key = KEYS[i]
  local ttl, add, F = tonumber(ARGV[p]), ARGV[p + 1], tonumber(ARGV[p + 2])
  p = p + 3
  local names = { '_', 'm' }
  for j = 0, F - 1 do names[j + 3] = ARGV[p + 2 * j] end
  local cur = redis.call('HMGET', key, unpack(names))
  local args, n = {}, 0
  if cur[1] == false then
    args[1] = '_'
    args[2] = MARK
    n = 2
  end
  for j = 0, F - 1 do
    args[n + 1] = ARGV[p + 2 * j]
    args[n + 2] = format('%d', (tonumber(cur[j + 3]) or 0) + tonumber(ARGV[p + 2 * j + 1]))
    n = n + 2
  end
  local had = cur[2]
  if add ~= '' and add ~= had then
    local v = add
    if had ~= false then
      v = had
      local seen = ',' .. had .. ','
      for name in gmatch(add, '[^,]+') do
        if not find(seen, ',' .. name .. ',', 1, true) then
          v = v .. ',' .. name
          seen = seen .. name .. ','
        end
      end
    end
    if v ~= had then
      args[n + 1] = 'm'
      args[n + 2] = v
      n = n + 2
    end
  end
  ran = ran + 1
  if n > 0 then
    redis.call('HSET', key, unpack(args))
    ran = ran + 1
  end
  if cur[1] == false and ttl > 0 then
    redis.call('PEXPIRE', key, ttl)
    ran = ran + 1
  end
  p = p + 2 * F
end
return ran
`;

/** Escapes `%`, `:` and `,` (percent-encoding), so a field's parts and an index's names stay apart. */
function esc(s: string): string {
  return /[%:,]/.test(s) ? s.replace(/[%:,]/g, (c) => (c === '%' ? '%25' : c === ':' ? '%3A' : '%2C')) : s;
}

function unesc(s: string): string {
  return s.includes('%')
    ? s.replace(/%(25|3A|2C)/g, (_, h: string) => String.fromCharCode(parseInt(h, 16)))
    : s;
}

interface Pending {
  kind: UsageKind;
  id: string;
  hour: number;
  b: UsageBucket;
}

/** One day hash's share of a flush script call. */
interface KeyWrite {
  ttl: number;
  fields: Array<string | number>;
  /** The meter names its fields report (escaped), for the hash's index. */
  meters: Set<string>;
}

/** One flush script call: the day hashes it writes (one slot) and the buckets it carries. */
interface Call {
  keys: Map<string, KeyWrite>;
  size: number;
  entries: Array<[string, Pending]>;
}

/**
 * Usage in Redis, exact across instances: each instance adds requests to pending buckets in its
 * memory (no I/O on the request path) and writes them every `flushIntervalMs` — or at once when
 * `FLUSH_AT_BUCKETS` distinct buckets are pending.
 *
 * Layout: the usage of all subjects in a fixed number of shard hashes per UTC day,
 * `usage:{<shard tag>}:<day>` (`USAGE_SHARDS`; the tags spread evenly over the Cluster slot space,
 * see `shardTags`), a subject's shard a function of the subject, so one subject's days share one
 * slot. Fields `<kind>:<id>:<HH>:<what>`, what being `2xx` (a status class), `rl`, `q` or
 * `m:<meter>`; ids and meter names escaped (`:`, `,`, `%`) so fields never run into each other.
 * Two more fields per hash: the marker `_` (the hash exists: its expiry is set) and `m`, the meter
 * names any of its subjects reported that day — what a read asks for. One index per hash, not per
 * subject: meter names come from the route configuration, so they are few, while a per-subject
 * index would be one more field read and written per subject and flush.
 *
 * A flush is one script call (`FLUSH_LUA`, at most `FLUSH_FIELDS_PER_CALL` fields) on a single
 * node, one per shard touched on a Cluster (a script stays in one slot); each runs one HMGET and
 * one HSET per day hash however many subjects and fields it adds, and a PEXPIRE when it makes the
 * hash: a flush of a thousand subjects costs a few dozen commands, not thousands of HINCRBYs. Each
 * hash expires `retentionDays` after its day ends, set by the flush that creates it.
 *
 * Before this layout (0.2.0 pre-releases), one hash per subject and day, `usage:{k:<id>}:<day>`
 * with fields `<HH>:<what>`: reads still merge it in, so history written before an upgrade is read
 * until it expires; nothing writes it any more.
 *
 * What a crash loses: what is pending, at most the last `flushIntervalMs` of requests (and, while
 * Redis is away, what piled up meanwhile, up to `MAX_PENDING_BUCKETS`). A script call is atomic:
 * it adds all its buckets or none. A failed call's buckets are kept for the next flush, except
 * after a command timeout, where Redis may have run it: those buckets are dropped (counted) rather
 * than risk counting them twice.
 */
export class RedisUsageStore implements UsageStore {
  readonly #redis: RedisHandle;
  readonly #cluster: boolean;
  readonly #retentionDays: () => number;
  readonly #now: () => number;
  readonly #intervalMs: () => number;
  readonly #maxPending: number;
  readonly #flushAt: number;
  readonly #shards: string[];
  #pending = new Map<string, Pending>();
  #timer: NodeJS.Timeout | undefined;
  readonly #inFlight = new Set<Promise<void>>();
  #closed = false;
  /** A flush for reaching `flushAt` is queued (a microtask). */
  #soon = false;
  /** Buckets dropped: pending past the cap, or a batch whose write timed out. */
  dropped = 0;
  /** Flush script calls that failed (their buckets kept for the next flush, unless dropped). */
  failures = 0;
  /**
   * Commands sent and run: each flush script call and the HMGET, HSET and PEXPIRE it ran (as
   * INFO commandstats counts them), for the amortised cost per request.
   */
  commands = 0;
  readonly #onError: ((err: unknown) => void) | undefined;

  constructor(o: {
    redis: RedisHandle;
    onError?: (err: unknown) => void;
    retentionDays: () => number;
    now: () => number;
    flushIntervalMs?: () => number;
    maxPending?: number;
    flushAt?: number;
    /** Shard hashes per day (default `USAGE_SHARDS`); every instance must use the same. */
    shards?: number;
  }) {
    this.#redis = o.redis;
    this.#cluster = o.redis.config.cluster !== undefined;
    this.#retentionDays = o.retentionDays;
    this.#now = o.now;
    this.#intervalMs = o.flushIntervalMs ?? (() => FLUSH_INTERVAL_MS);
    this.#maxPending = o.maxPending ?? MAX_PENDING_BUCKETS;
    this.#flushAt = o.flushAt ?? FLUSH_AT_BUCKETS;
    this.#onError = o.onError;
    this.#shards = shardTags('u', o.shards ?? (this.#cluster ? USAGE_SHARDS.cluster : USAGE_SHARDS.node));
    const client = o.redis.client as unknown as {
      defineCommand(name: string, def: { numberOfKeys?: number; lua: string }): void;
    };
    client.defineCommand('tollgateUsageFlush', { lua: FLUSH_LUA });
  }

  stats(): { pending: number; dropped: number } {
    return { pending: this.#pending.size, dropped: this.dropped };
  }

  /** Buckets waiting for the next flush. */
  get pending(): number {
    return this.#pending.size;
  }

  bucket(kind: UsageKind, id: string, hour: number): UsageBucket | undefined {
    const k = `${kind}\n${hour}\n${id}`;
    const e = this.#pending.get(k);
    if (e !== undefined) return e.b;
    if (this.#pending.size >= this.#maxPending) {
      this.dropped++;
      return undefined;
    }
    const b = emptyBucket();
    this.#pending.set(k, { kind, id, hour, b });
    if (this.#pending.size >= this.#flushAt) {
      // After the caller's synchronous additions to `b`: a flush now would write it empty.
      if (!this.#soon) {
        this.#soon = true;
        queueMicrotask(() => {
          this.#soon = false;
          if (this.#pending.size >= this.#flushAt) this.#flushNow();
        });
      }
    } else if (this.#timer === undefined && !this.#closed) {
      this.#timer = setTimeout(() => this.#flushNow(), this.#intervalMs());
      this.#timer.unref();
    }
    return b;
  }

  /** The shard tag of a subject (the same on every instance). */
  #shard(kind: UsageKind, id: string): string {
    return this.#shards[shardOf(`${kind}:${id}`, this.#shards.length)]!;
  }

  /** The day hash that holds a subject's usage of a day (shared with other subjects of its shard). */
  dayKey(kind: UsageKind, id: string, day: number): string {
    return this.#redis.key('usage', `{${this.#shard(kind, id)}}`, String(day));
  }

  /** The per-subject day hash of the layout before shard hashes (read, never written). */
  #oldKey(kind: UsageKind, id: string, day: number): string {
    return this.#redis.key('usage', `{${kind}:${hashTag(id)}}`, String(day));
  }

  #flushNow(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#pending.size === 0) return;
    const batch = this.#pending;
    this.#pending = new Map();
    const p = this.#write(batch).finally(() => this.#inFlight.delete(p));
    this.#inFlight.add(p);
  }

  async #write(batch: Map<string, Pending>): Promise<void> {
    const now = this.#now();
    const retentionMs = this.#retentionDays() * DAY_MS;
    // The buckets by shard hash, then packed into calls of at most FLUSH_FIELDS_PER_CALL fields
    // (a bucket never split), shard after shard: on a single node one call holds many shards, on
    // a Cluster each shard has calls of its own (a script stays in one slot).
    const byShard = new Map<string, Array<[string, Pending]>>();
    for (const entry of batch) {
      const shard = this.#shard(entry[1].kind, entry[1].id);
      let list = byShard.get(shard);
      if (list === undefined) byShard.set(shard, (list = []));
      list.push(entry);
    }
    const calls: Call[] = [];
    let call: Call | undefined;
    for (const [shard, entries] of byShard) {
      if (this.#cluster) call = undefined;
      for (const entry of entries) {
        const e = entry[1];
        const day = Math.floor(e.hour / 24);
        const ttl = (day + 1) * DAY_MS + retentionMs - now;
        if (ttl <= 0) continue; // already past the retention
        if (call === undefined || call.size >= FLUSH_FIELDS_PER_CALL)
          calls.push((call = { keys: new Map(), size: 0, entries: [] }));
        const key = this.#redis.key('usage', `{${shard}}`, String(day));
        let w = call.keys.get(key);
        if (w === undefined) call.keys.set(key, (w = { ttl, fields: [], meters: new Set() }));
        const sub = `${e.kind}:${esc(e.id)}:`;
        const at = `${sub}${String(e.hour % 24).padStart(2, '0')}:`;
        const b = e.b;
        const before = w.fields.length;
        for (let c = 1; c <= 5; c++) if (b.status[c]! > 0) w.fields.push(at + CLASS_FIELD[c]!, b.status[c]!);
        if (b.rateLimit > 0) w.fields.push(`${at}rl`, b.rateLimit);
        if (b.quota > 0) w.fields.push(`${at}q`, b.quota);
        if (b.meters !== undefined)
          for (const [name, v] of b.meters) {
            if (v <= 0) continue;
            const n = esc(name);
            w.fields.push(`${at}m:${n}`, v);
            w.meters.add(n);
          }
        call.size += (w.fields.length - before) / 2;
        call.entries.push(entry);
      }
    }
    await Promise.all(calls.map((call) => this.#send(call)));
  }

  async #send(call: Call): Promise<void> {
    const keys: string[] = [];
    const args: Array<string | number> = [];
    for (const [key, w] of call.keys) {
      if (w.fields.length === 0) continue;
      keys.push(key);
      args.push(w.ttl, [...w.meters].join(','), w.fields.length / 2, ...w.fields);
    }
    if (keys.length === 0) return;
    const client = this.#redis.client as unknown as {
      tollgateUsageFlush(n: number, ...args: Array<string | number>): Promise<number>;
    };
    try {
      this.commands++;
      const ran = Number(await client.tollgateUsageFlush(keys.length, ...keys, ...args));
      this.commands += ran;
    } catch (err) {
      this.failures++;
      this.#redis.recordError(false);
      this.#onError?.(err);
      // A timeout may have been applied: dropping it errs low rather than counting twice.
      if (err instanceof Error && /timed? ?out/i.test(err.message)) this.dropped += call.entries.length;
      else for (const [k, e] of call.entries) this.#keep(k, e);
    }
  }

  /** Puts a batch's bucket back into the pending ones, for the next flush. */
  #keep(k: string, e: Pending): void {
    const had = this.#pending.get(k);
    if (had !== undefined) addBucket(had.b, e.b);
    else if (this.#pending.size >= this.#maxPending) this.dropped++;
    else {
      this.#pending.set(k, e);
      if (this.#timer === undefined && !this.#closed) {
        this.#timer = setTimeout(() => this.#flushNow(), this.#intervalMs());
        this.#timer.unref();
      }
    }
  }

  /**
   * A subject's buckets: from its shard's day hashes (one pipeline of HGETs for each day's meter
   * names, one of HMGETs for the subject's fields of the hours asked: a subject's days share a
   * slot), merged with the per-subject hashes of the layout before (a pipeline of HGETALLs, at
   * the same time).
   */
  async read(
    kind: UsageKind,
    id: string,
    fromHour: number,
    toHour: number,
  ): Promise<Map<number, UsageBucket>> {
    const out = new Map<number, UsageBucket>();
    if (toHour <= fromHour) return out;
    const firstDay = Math.floor(fromHour / 24);
    const lastDay = Math.floor((toHour - 1) / 24);
    const days: number[] = [];
    for (let d = firstDay; d <= lastDay; d++) days.push(d);
    const add = (hour: number, what: string, raw: string | null, escaped: boolean) => {
      if (raw === null || !(hour >= fromHour && hour < toHour)) return;
      const n = Number(raw);
      if (!Number.isFinite(n) || n === 0) return;
      let b = out.get(hour);
      if (b === undefined) out.set(hour, (b = emptyBucket()));
      const cls = CLASS_FIELD.indexOf(what);
      if (cls > 0) b.status[cls]! += n;
      else if (what === 'rl') b.rateLimit += n;
      else if (what === 'q') b.quota += n;
      else if (what.startsWith('m:')) {
        const name = escaped ? unesc(what.slice(2)) : what.slice(2);
        const m = (b.meters ??= new Map());
        m.set(name, (m.get(name) ?? 0) + n);
      }
    };
    const sub = `${kind}:${esc(id)}:`;
    const pipeline = async (cmds: Array<[string, ...string[]]>) => {
      const res = (await this.#redis.client.pipeline(cmds).exec()) ?? [];
      return res.map(([err, v]) => {
        if (err) throw err;
        return v;
      });
    };
    const readNew = async () => {
      const keys = days.map((d) => this.dayKey(kind, id, d));
      const indexes = (await pipeline(keys.map((k) => ['hget', k, 'm']))) as Array<string | null>;
      const asked: string[][] = [];
      const cmds = keys.map((k, i): [string, ...string[]] => {
        const meters = indexes[i] ? indexes[i].split(',') : [];
        const whats = [...CLASS_FIELD.slice(1), 'rl', 'q', ...meters.map((n) => `m:${n}`)];
        const from = Math.max(0, fromHour - days[i]! * 24);
        const to = Math.min(24, toHour - days[i]! * 24);
        const fields: string[] = [];
        for (let h = from; h < to; h++) {
          const at = `${sub}${String(h).padStart(2, '0')}:`;
          for (const w of whats) fields.push(at + w);
        }
        asked.push(fields);
        return ['hmget', k, ...fields];
      });
      const values = (await pipeline(cmds)) as Array<Array<string | null>>;
      values.forEach((vals, i) => {
        asked[i]!.forEach((field, j) => {
          const rest = field.slice(sub.length);
          add(days[i]! * 24 + Number(rest.slice(0, 2)), rest.slice(3), vals[j] ?? null, true);
        });
      });
    };
    const readOld = async () => {
      const hashes = (await pipeline(days.map((d) => ['hgetall', this.#oldKey(kind, id, d)]))) as Array<
        Record<string, string>
      >;
      hashes.forEach((hash, i) => {
        for (const [field, raw] of Object.entries(hash))
          if (field[2] === ':') add(days[i]! * 24 + Number(field.slice(0, 2)), field.slice(3), raw, false);
      });
    };
    await this.#redis.run(() => Promise.all([readNew(), readOld()]));
    return out;
  }

  async flush(): Promise<void> {
    this.#flushNow();
    await Promise.allSettled([...this.#inFlight]);
  }

  async close(): Promise<void> {
    this.#closed = true;
    await this.flush();
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}
