import { randomBytes } from 'node:crypto';
import type { Clock } from '../core/clock.js';
import type { RedisHandle } from '../shared/redis.js';
import { uuidV7Time } from '../core/request-id.js';
import { shardOf, shardTags } from '../shared/shards.js';
import type { Logger } from './logger.js';

/**
 * One request, as the audit trail keeps it. Field names are those of the access-log line. It
 * holds no secret: no header values, no body, no key — only ids and outcomes.
 */
export interface AuditRecord {
  time: string;
  request_id: string;
  trace_id: string;
  method: string | undefined;
  path: string;
  route: string | null;
  status: number;
  aborted: boolean;
  latency_ms: number;
  client_ip: string | null;
  auth_method: string | null;
  credential_id: string | null;
  subject: string | null;
  tenant: string | null;
  problem: string | null;
  upstream_status: number | null;
  upstream_target: string | null;
  upstream_latency_ms: number | null;
  bytes_in: number;
  bytes_out: number;
  idempotent_replay: boolean;
  rate_limit_policy: string | null;
  /** Shadow-mode rate limits that would have refused this request (it was let through). */
  rate_limit_shadow?: string[] | null;
  /** A WebSocket's close code (the first close frame seen either way, or the gateway's); null: none seen. Only on WebSocket handshakes. */
  close_code?: number | null;
  /** What an HMAC-signed request carried (for the signature playground): never the secret. */
  signature?: { timestamp: string | null; body_sha256: string; result: string } | null;
  /** `admin` for a call to the admin API (SPEC §11); absent on a request record. */
  kind?: 'admin';
  /** Admin records: the token's name (`admin.tokens[].name`, or `token-<n>`); null when refused. */
  actor?: string | null;
  /** Admin records: what was done (`key.create`, `key.revoke`, `admin.authenticate`, …). */
  action?: string;
  /** Admin records: what it was done to (a key id, a tenant id), when there is one. */
  target?: string | null;
  /** Admin records: `success`, `failure` (refused or failed for another reason) or `refused` (the credential). */
  outcome?: 'success' | 'failure' | 'refused';
}

export interface AuditQuery {
  credentialId?: string | undefined;
  /** An exact status (`429`) or a class (`4xx`). */
  status?: string | undefined;
  route?: string | undefined;
  /** Epoch ms: only records at or after this time. */
  since?: number | undefined;
  /** Admin records only: by actor or action. */
  actor?: string | undefined;
  action?: string | undefined;
  limit: number;
}

/**
 * Where audit records go. `append` never blocks the request path; it receives the record and its
 * JSON (serialised once per request, shared with the access-log line).
 */
export interface AuditStore {
  append(record: AuditRecord, json: string): void;
  /** The newest record with this request id. */
  get(id: string): Promise<AuditRecord | undefined>;
  /**
   * Every record kept with this request id, newest first (by `time`). A client may choose its own
   * `X-Request-Id`, so several requests can share one: none of them replaces another.
   */
  getAll(id: string): Promise<AuditRecord[]>;
  /** Newest first. */
  list(query: AuditQuery): Promise<AuditRecord[]>;
  flush(): Promise<void>;
  close(): Promise<void>;
}

export function matches(r: AuditRecord, q: AuditQuery): boolean {
  if (q.credentialId !== undefined && r.credential_id !== q.credentialId) return false;
  if (q.route !== undefined && r.route !== q.route) return false;
  if (q.status !== undefined) {
    const s = String(r.status);
    if (/^[1-5]xx$/i.test(q.status) ? s[0] !== q.status[0] : s !== q.status) return false;
  }
  if (q.since !== undefined && Date.parse(r.time) < q.since) return false;
  if (q.actor !== undefined && r.actor !== q.actor) return false;
  if (q.action !== undefined && r.action !== q.action) return false;
  return true;
}

/**
 * A bounded in-memory ring: the newest `maxEntries` records younger than `retentionSec`.
 * The store of a single instance, and the local cache in front of Redis.
 *
 * Records are kept as their JSON text in flat arrays, not as objects: a ring of 10⁴–10⁵ live
 * objects with twenty fields each would be traced by every major GC, which cost more per request
 * than everything else the audit does.
 */
export class MemoryAuditStore implements AuditStore {
  readonly #json: (string | undefined)[];
  readonly #ids: (string | undefined)[];
  readonly #times: Float64Array;
  readonly #retentionMs: number;
  readonly #clock: Clock;
  #next = 0;

  constructor(options: { maxEntries: number; retentionSec: number; clock: Clock }) {
    this.#json = new Array<string | undefined>(options.maxEntries);
    this.#ids = new Array<string | undefined>(options.maxEntries);
    this.#times = new Float64Array(options.maxEntries);
    this.#retentionMs = options.retentionSec * 1000;
    this.#clock = options.clock;
  }

  append(record: AuditRecord, json: string = JSON.stringify(record)): void {
    const slot = this.#next;
    this.#json[slot] = json;
    this.#ids[slot] = record.request_id;
    this.#times[slot] = this.#clock.now();
    this.#next = (slot + 1) % this.#json.length;
  }

  async get(id: string): Promise<AuditRecord | undefined> {
    return (await this.getAll(id))[0];
  }

  /**
   * A scan (at most `maxEntries` string compares, well under a millisecond for 10⁴) on the rare
   * admin read keeps the per-request write free of index upkeep.
   */
  getAll(id: string): Promise<AuditRecord[]> {
    const out: AuditRecord[] = [];
    const n = this.#json.length;
    for (let i = 1; i <= n; i++) {
      const slot = (this.#next - i + n) % n;
      if (this.#ids[slot] === undefined || !this.#fresh(slot)) break;
      if (this.#ids[slot] === id) out.push(JSON.parse(this.#json[slot]!) as AuditRecord);
    }
    return Promise.resolve(newestFirst(out));
  }

  list(query: AuditQuery): Promise<AuditRecord[]> {
    const out: AuditRecord[] = [];
    const n = this.#json.length;
    for (let i = 1; i <= n && out.length < query.limit; i++) {
      const slot = (this.#next - i + n) % n;
      const json = this.#json[slot];
      if (json === undefined || !this.#fresh(slot)) break;
      const r = JSON.parse(json) as AuditRecord;
      if (matches(r, query)) out.push(r);
    }
    return Promise.resolve(out);
  }

  flush(): Promise<void> {
    return Promise.resolve();
  }

  close(): Promise<void> {
    return Promise.resolve();
  }

  #fresh(slot: number): boolean {
    return this.#clock.now() - this.#times[slot]! <= this.#retentionMs;
  }
}

/** The reply of a pipeline's `i`-th command; its error, thrown. */
function replyOf(replies: Array<[Error | null, unknown]> | null, i: number): unknown {
  const [err, value] = replies?.[i] ?? [new Error('pipeline discarded'), undefined];
  if (err) throw err;
  return value;
}

/** Sorts records newest first by arrival (`time`); ties keep their order (stable sort). */
function newestFirst(records: AuditRecord[]): AuditRecord[] {
  return records.length < 2 ? records : records.sort((a, b) => Date.parse(b.time) - Date.parse(a.time));
}

const FLUSH_MS = 100;
// Small batches: a large script right after an outage must not run into the command timeout.
const BATCH = 100;
const MAX_PENDING = 10_000;
const MAX_SCAN = 5_000;
/** The time one block of the time-ordered ids' index spans, and how far an id's time may be from its record's. */
const BLOCK_MS = 100;
const BLOCK_SKEW_MS = 1000;
/** The batches one lookup by id reads at most (a batch holds up to `BATCH` records). */
const MAX_LOOKUP_BATCHES = 512;
/** How often each instance checks the trail's size in Redis against `audit.maxRedisBytes`. */
export const TRIM_MS = 5000;
/** How often the size count's increments are written (ms): with a flush, at most this often. */
const COUNT_MS = 1000;
/** Batches one trim step deletes at most (oldest first), and steps one check takes at most. */
const TRIM_BATCHES = 200;
const TRIM_STEPS = 10;
/**
 * What the size count adds to a record's JSON for its index entry (a time block's 8 hex digits;
 * an id-index field: the id, a token and the hash's own entry) and to a batch for its field, its
 * stream entry and its block fields. Fitted to `INFO memory` (test/integration/audit-trim.test.ts
 * prints the ratio): the count is Redis's memory within a few per cent.
 */
const BLOCK_RECORD_BYTES = 16;
/** A batch's text is one allocation: jemalloc's size classes add about this much to it. */
const ALLOC_SLACK = 1.12;
const ID_RECORD_BYTES = 96;
const BATCH_BYTES = 160;
/** Audit shards (hash tags): one on a single node, spread evenly over the slots on a Cluster. */
export const AUDIT_SHARDS = { node: 1, cluster: 6 } as const;

/**
 * The id index of one flush of one shard (the records' JSON never enters Lua: a large argument
 * costs the script more than everything else it does, in Lua's allocator and collector). Each id
 * of the batch gets the batch's token in the shard's id index of this time bucket (a hash: id →
 * the tokens of the batches holding a record with that id, space-separated, the newest `perId`
 * kept; an id new to the index, the common case, takes the token as it is), and the token is
 * appended to the shard's batch stream (field: the bucket, value: the token) for listing. An id
 * twice in one batch writes the same value twice. KEYS: id index, batch stream. ARGV: index ttl
 * (ms), stream ttl (ms), stream MAXLEN (entries: a safety bound; the trimmer keeps it to the live
 * batches), perId, bucket, token, then every record's id.
 */
const AUDIT_INDEX_LUA = `
local token, max = ARGV[6], tonumber(ARGV[4])
local old = redis.call('HMGET', KEYS[1], unpack(ARGV, 7))
local args = {}
for i = 7, #ARGV do
  local o = old[i - 6]
  args[2 * i - 13] = ARGV[i]
  if o then
    local refs, k = {}, 0
    for r in string.gmatch(o, '%S+') do
      k = k + 1
      refs[k] = r
    end
    refs[k + 1] = token
    args[2 * i - 12] = table.concat(refs, ' ', math.max(1, k + 2 - max))
  else
    args[2 * i - 12] = token
  end
end
redis.call('HSET', KEYS[1], unpack(args))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', ARGV[5], token)
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
`;

/**
 * Deletes batches of one bucket (KEYS[1], ARGV: their tokens) and returns what they held: bytes
 * and records (a batch is its records' JSON texts, one per line). Read in Lua only when the trail
 * is over its cap, once per batch deleted.
 */
const AUDIT_DROP_LUA = `
local bytes, records = 0, 0
for i = 1, #ARGV do
  local v = redis.call('HGET', KEYS[1], ARGV[i])
  if v then
    bytes = bytes + #v
    records = records + 1
    local p = string.find(v, '\\n', 1, true)
    while p do
      records = records + 1
      p = string.find(v, '\\n', p + 1, true)
    end
  end
end
if #ARGV > 0 then redis.call('HDEL', KEYS[1], unpack(ARGV)) end
return { bytes, records }
`;

/**
 * Cuts a batch stream's oldest entries (KEYS[1]; ARGV[1]: how many — a dropped or expired bucket's
 * batches). The oldest go first, so entries written before the size count existed (an upgrade)
 * are cut before a counted bucket's.
 */
const AUDIT_CUT_LUA = `
local keep = redis.call('XLEN', KEYS[1]) - tonumber(ARGV[1])
if keep < 0 then keep = 0 end
return redis.call('XTRIM', KEYS[1], 'MAXLEN', keep)
`;

/**
 * Audit records in Redis, shared by every instance. Records are sharded by request id over
 * `AUDIT_SHARDS` hash tags (`{a<n>-<m>}`, spread evenly over Redis Cluster's slots, so no one
 * shard takes every write). Each record's JSON is stored once: a flush of a shard writes its batch
 * as one value (the JSON texts, one per line — JSON.stringify never writes a raw newline) under a
 * fresh token in the shard's batch hash of this time bucket (`HSETNX`, sent as it is: the JSON
 * never enters Lua), and the token goes to the shard's batch stream (listing). Lookup by id:
 * - a time-ordered id (UUIDv7: what `mintRequestId` makes, or a client's, whose time is within a
 *   second of the record's arrival) needs no record of its own: per shard and 100 ms of id time,
 *   one hash holds one field per batch (`<bucket>.<token>` → the ids' last 8 hex digits), so a
 *   flush writes a field per block it touches (one or two) instead of one per record — the
 *   per-record index was most of the trail's Redis time (a field in a hash of every id of the
 *   bucket, read and written). The rule is the id's shape and time, not who made it: a client
 *   that sends such an id (echoed or its own) is stored the same way, lookup filters the batches
 *   by id, so it adds a record and hides none; one whose time is far from its arrival (a skewed
 *   clock, or ids piled into one moment) goes to the id index;
 * - any other id: one script call, on those ids only, adds the token to each id's entry in the
 *   shard's id index of the bucket (a hash: id → tokens, the newest `perId` kept) and appends the
 *   token to the batch stream (a flush of time-ordered ids only appends it without a script).
 * A lookup reads the id's block (a UUIDv7) and its entry in each bucket within the retention
 * (pipelined), then the batches named, newest first, filtered by id: a reused id adds a token,
 * never replaces a record, and keeps the newest `maxEntries` (one lookup reads at most
 * `MAX_LOOKUP_BATCHES` batches: an id reused in more flushes shows the records of its newest
 * 512). Listing reads the batch streams (about `maxEntries` records each) newest first, and the
 * batches they name. Writes are batched off the request path: every 100 ms or 100 records, per
 * shard one pipeline (HSETNX, PEXPIRE, per block an HSET and PEXPIRE, XADD or the script) — under
 * load a small fraction of a command per request. While Redis is down records wait in a bounded
 * buffer (10,000, the oldest dropped first); what a crash loses is what waits there (at most 100
 * ms of records in normal operation). A local ring answers for this instance's own recent records
 * even when Redis does not.
 *
 * Earlier layouts are still read, never written: every id in the id index (the release before
 * time blocks; its gateways do not read the blocks, so during a rolling upgrade they find this
 * version's records of time-ordered ids by listing only); the batch as one stream entry (field `r` per
 * record) with an id index holding the JSON again (id → JSON lines); before that every record in
 * one `{audit}` slot (a list per id, one stream entry per record, and before that one string per
 * id). In a rolling upgrade this version reads what the earlier ones write.
 */
export class RedisAuditStore implements AuditStore {
  readonly #redis: RedisHandle;
  readonly #local: MemoryAuditStore;
  readonly #logger: Logger;
  readonly #retentionMs: number;
  readonly #maxEntries: number;
  readonly #clock: Clock;
  readonly #names: { stream: string; records: string };
  readonly #shards: string[];
  readonly #bucketMs: number;
  /** Batch tokens: this instance's random prefix and a counter (unique across instances). */
  readonly #tokenPrefix = randomBytes(6).toString('hex');
  #tokens = 0;
  #pending: Array<{ id: string; json: string; time: string }> = [];
  #flushing: Promise<void> | undefined;
  #timer: NodeJS.Timeout;
  readonly #trimTimer: NodeJS.Timeout;
  /** The most the trail may count in Redis per shard (bytes), and its batch streams' safety bound. */
  readonly #capPerShard: number;
  readonly #streamMax: number;
  #trimming: Promise<void> | undefined;
  /** Size-count increments not yet written, per shard and bucket, and when they last were. */
  #counts = new Map<number, Map<number, { bytes: number; batches: number; records: number }>>();
  #countsAt = Number.NEGATIVE_INFINITY;
  /** Per shard, its counted size when this instance last read it (`redisBytes`). */
  readonly #sizes: number[] = [];
  #warnedAt = Number.NEGATIVE_INFINITY;
  dropped = 0;
  /** Records this instance deleted before their retention ended, to keep the trail under its cap. */
  trimmed = 0;

  constructor(options: {
    redis: RedisHandle;
    maxEntries: number;
    retentionSec: number;
    clock: Clock;
    logger: Logger;
    /** A sibling trail (admin records) under names of its own; default: the request trail. */
    names?: { stream: string; records: string } | undefined;
    /** About the most the trail may hold in Redis, in bytes (`audit.maxRedisBytes`); default 1 GiB. */
    maxRedisBytes?: number | undefined;
  }) {
    this.#redis = options.redis;
    this.#logger = options.logger;
    this.#clock = options.clock;
    this.#retentionMs = options.retentionSec * 1000;
    this.#maxEntries = options.maxEntries;
    this.#local = new MemoryAuditStore({
      maxEntries: Math.min(options.maxEntries, 10_000),
      retentionSec: options.retentionSec,
      clock: options.clock,
    });
    this.#names = options.names ?? { stream: 'stream', records: 'reqs' };
    this.#shards = shardTags(
      'a',
      options.redis.config.cluster !== undefined ? AUDIT_SHARDS.cluster : AUDIT_SHARDS.node,
    );
    // About 24 id-index buckets per retention (a lookup reads each), none shorter than a minute.
    this.#bucketMs = Math.max(60_000, Math.ceil(this.#retentionMs / 24));
    const client = options.redis.client as unknown as {
      defineCommand(name: string, def: { numberOfKeys?: number; lua: string }): void;
    };
    client.defineCommand('tollgateAuditIndex', { numberOfKeys: 2, lua: AUDIT_INDEX_LUA });
    client.defineCommand('tollgateAuditDrop', { numberOfKeys: 1, lua: AUDIT_DROP_LUA });
    client.defineCommand('tollgateAuditCut', { numberOfKeys: 1, lua: AUDIT_CUT_LUA });
    this.#timer = setInterval(() => void this.#flushNow(false), FLUSH_MS);
    this.#timer.unref();
    const capBytes = options.maxRedisBytes ?? 2 ** 30;
    this.#capPerShard = Math.ceil(capBytes / this.#shards.length);
    // A batch counts at least `BATCH_BYTES` and a record's JSON (≥ 300 bytes), so a trail under
    // its cap never has this many entries per shard.
    this.#streamMax = Math.max(options.maxEntries, Math.ceil(this.#capPerShard / 400));
    this.#trimTimer = setInterval(() => void this.trim(), TRIM_MS);
    this.#trimTimer.unref();
  }

  append(record: AuditRecord, json: string = JSON.stringify(record)): void {
    this.#local.append(record, json);
    this.#pending.push({ id: record.request_id, json, time: record.time });
    if (this.#pending.length > MAX_PENDING) {
      const excess = this.#pending.length - MAX_PENDING;
      this.#pending.splice(0, excess);
      this.dropped += excess;
    }
    if (this.#pending.length >= BATCH) void this.#flushNow(false);
  }

  /** Writes every record waiting, and the size count's increments. */
  flush(): Promise<void> {
    return this.#flushNow(true);
  }

  /** Writes the records waiting, then the size count's increments when `force` or one is due. */
  async #flushNow(force: boolean): Promise<void> {
    this.#flushing ??= this.#flush().finally(() => {
      this.#flushing = undefined;
    });
    await this.#flushing;
    await this.#writeCounts(force);
  }

  /** Adds a written batch to the size count waiting for `#writeCounts`. */
  #count(shard: number, bucket: number, bytes: number, batches: number, records: number): void {
    let buckets = this.#counts.get(shard);
    if (buckets === undefined)
      this.#counts.set(
        shard,
        (buckets = new Map<number, { bytes: number; batches: number; records: number }>()),
      );
    const e = buckets.get(bucket);
    if (e === undefined) buckets.set(bucket, { bytes, batches, records });
    else {
      e.bytes += bytes;
      e.batches += batches;
      e.records += records;
    }
  }

  /**
   * The size count's increments (see `trim`), written at most every `COUNT_MS` (and by `flush()`),
   * one pipeline per shard: three HINCRBY per bucket and a PEXPIRE a second, not per flush. What
   * a crash loses is a second's count: the trail may then hold that much more than its cap says.
   */
  async #writeCounts(force: boolean): Promise<void> {
    if (this.#counts.size === 0 || !this.#redis.ready) return;
    const now = performance.now();
    if (!force && now - this.#countsAt < COUNT_MS) return;
    this.#countsAt = now;
    const counts = this.#counts;
    this.#counts = new Map();
    const ttl = this.#retentionMs + 2 * this.#bucketMs;
    try {
      await Promise.all(
        [...counts].map(async ([shard, buckets]) => {
          const key = this.#sizeKey(shard);
          const p = this.#redis.client.pipeline();
          for (const [bucket, e] of buckets)
            p.hincrby(key, String(bucket), e.bytes)
              .hincrby(key, `${bucket}:n`, e.batches)
              .hincrby(key, `${bucket}:r`, e.records);
          p.pexpire(key, ttl);
          const results = await p.exec();
          const failed = results === null ? new Error('size count discarded') : results.find(([e]) => e)?.[0];
          if (failed) throw failed;
          counts.delete(shard);
        }),
      );
    } catch (err) {
      // Kept for the next write (a shard whose pipeline half-applied may count a little twice).
      for (const [shard, buckets] of counts)
        for (const [bucket, e] of buckets) this.#count(shard, bucket, e.bytes, e.batches, e.records);
      this.#logger.debug({ err }, 'audit size count write failed; kept for the next one');
    }
  }

  async #flush(): Promise<void> {
    while (this.#pending.length > 0 && this.#redis.ready) {
      const batch = this.#pending.slice(0, BATCH);
      const byShard = new Map<number, Array<{ id: string; json: string; time: string }>>();
      for (const r of batch) {
        const shard = shardOf(r.id, this.#shards.length);
        let list = byShard.get(shard);
        if (list === undefined) byShard.set(shard, (list = []));
        list.push(r);
      }
      const bucket = Math.floor(this.#clock.now() / this.#bucketMs);
      const bucketTtl = this.#retentionMs + 2 * this.#bucketMs;
      try {
        // A shard whose write failed is written again (under a new token) with the next attempt:
        // its records may be kept twice then (one JSON text is one record when read back).
        await Promise.all(
          [...byShard].map(async ([shard, records]) => {
            const token = `${this.#tokenPrefix}.${(this.#tokens++).toString(36)}`;
            const batches = this.#batchesKey(shard, bucket);
            // One slot: a pipeline to one node (on a Cluster too), one round trip.
            const p = this.#redis.client.pipeline() as ReturnType<RedisHandle['client']['pipeline']> & {
              tollgateAuditIndex(...args: Array<string | number>): unknown;
            };
            const text = records.map((r) => r.json).join('\n');
            p.hsetnx(batches, token, text);
            p.pexpire(batches, bucketTtl);
            // Time-ordered ids (the minted ones): per block of their time, one field for the whole
            // batch (`<bucket>.<token>` → the ids' last 8 digits). Any other id: the id index.
            const blocks = new Map<string, string[]>();
            const others: string[] = [];
            for (const r of records) {
              const key = this.#blockOf(r.id, r.time);
              if (key === undefined) others.push(r.id);
              else {
                let at = blocks.get(key);
                if (at === undefined) blocks.set(key, (at = []));
                at.push(r.id.slice(-8));
              }
            }
            for (const [key, at] of blocks) {
              p.hset(key, `${bucket}.${token}`, at.join(','));
              p.pexpire(key, bucketTtl);
            }
            if (others.length > 0)
              p.tollgateAuditIndex(
                this.#idsKey(shard, bucket),
                this.#batchStreamKey(shard),
                bucketTtl,
                this.#retentionMs,
                this.#streamMax,
                this.#maxEntries,
                bucket,
                token,
                ...others,
              );
            else {
              p.xadd(this.#batchStreamKey(shard), 'MAXLEN', '~', this.#streamMax, '*', String(bucket), token);
              p.pexpire(this.#batchStreamKey(shard), this.#retentionMs);
            }
            const results = await p.exec();
            const failed =
              results === null ? new Error('audit flush discarded') : results.find(([e]) => e)?.[0];
            if (failed) throw failed;
            // The shard's size count, per bucket (see `trim`): bytes, batches, records.
            let bytes =
              Math.ceil(Buffer.byteLength(text) * ALLOC_SLACK) +
              BATCH_BYTES +
              (records.length - others.length) * BLOCK_RECORD_BYTES;
            for (const id of others) bytes += id.length + ID_RECORD_BYTES;
            this.#count(shard, bucket, bytes, 1, records.length);
          }),
        );
        this.#pending.splice(0, batch.length);
      } catch (err) {
        this.#redis.recordError(false);
        this.#logger.debug({ err }, 'audit flush failed; records kept for the next attempt');
        return;
      }
    }
  }

  async get(id: string): Promise<AuditRecord | undefined> {
    return (await this.getAll(id))[0];
  }

  /**
   * Every instance's records with this id (Redis), plus this instance's not yet flushed. While
   * Redis is unreachable, this instance's own recent records answer when it has any.
   */
  async getAll(id: string): Promise<AuditRecord[]> {
    if (!this.#redis.ready) {
      const local = await this.#local.getAll(id);
      if (local.length > 0) return local;
    }
    let stored: string[];
    try {
      stored = await this.#redis.run(async () => {
        const c = this.#redis.client;
        const shard = shardOf(id, this.#shards.length);
        const now = this.#clock.now();
        const buckets: number[] = [];
        for (let b = Math.floor((now - this.#retentionMs) / this.#bucketMs); b <= now / this.#bucketMs; b++)
          buckets.push(b);
        // One slot per command group: the shard's indexes (pipelined), the legacy `{audit}` keys.
        const index = c.pipeline();
        for (const b of buckets) index.hget(this.#idsKey(shard, b), id).hget(this.#indexKey(shard, b), id);
        const block = this.#blockOf(id);
        if (block !== undefined) index.hgetall(block);
        const [found, list, legacy] = await Promise.all([
          index.exec(),
          c.lrange(this.#legacyListKey(id), 0, -1),
          c.get(this.#legacyKey(id)),
        ]);
        const texts: string[] = typeof legacy === 'string' ? [legacy, ...list] : [...list];
        // The earlier layout's index holds the JSON; this one's names batches, read newest first
        // (buckets newest first, an entry's tokens newest last) until `maxEntries` records of
        // the id were found, in pipelines of 32 and no more than `MAX_LOOKUP_BATCHES`.
        const named: Array<[number, string]> = [];
        // A time-ordered id's batches, from its block (newest bucket first), read first.
        const inBlock = block === undefined ? undefined : replyOf(found, 2 * buckets.length);
        if (inBlock !== null && typeof inBlock === 'object') {
          const place = `,${id.slice(-8)},`;
          const hits: Array<[number, string]> = [];
          for (const [field, at] of Object.entries(inBlock as Record<string, string>)) {
            const dot = field.indexOf('.');
            if (dot > 0 && `,${at},`.includes(place))
              hits.push([Number(field.slice(0, dot)), field.slice(dot + 1)]);
          }
          named.push(...hits.sort((a, b) => b[0] - a[0]));
        }
        for (let i = buckets.length - 1; i >= 0; i--) {
          const [tokens, json] = [replyOf(found, 2 * i), replyOf(found, 2 * i + 1)];
          if (typeof json === 'string') texts.push(...json.split('\n'));
          if (typeof tokens === 'string')
            for (const token of tokens.split(' ').reverse()) named.push([buckets[i]!, token]);
        }
        named.length = Math.min(named.length, MAX_LOOKUP_BATCHES);
        const marker = `"request_id":${JSON.stringify(id)}`;
        let matched = 0;
        for (let i = 0; i < named.length && matched < this.#maxEntries; i += 32) {
          const chunk = named.slice(i, i + 32);
          const p = c.pipeline();
          for (const [b, token] of chunk) p.hget(this.#batchesKey(shard, b), token);
          const batches = await p.exec();
          chunk.forEach((_named, j) => {
            const batch = replyOf(batches, j);
            if (typeof batch !== 'string') return;
            for (const line of batch.split('\n'))
              if (line.includes(marker) && (JSON.parse(line) as AuditRecord).request_id === id) {
                texts.push(line);
                matched++;
              }
          });
        }
        return texts;
      });
    } catch (err) {
      const local = await this.#local.getAll(id);
      if (local.length > 0) return local;
      throw err;
    }
    // A flush retried after a partial failure may have written a record twice: one JSON text is
    // one record. Records of this instance still waiting for the next flush are added.
    const texts = new Set(stored);
    for (const p of this.#pending) if (p.id === id) texts.add(p.json);
    const oldest = this.#clock.now() - this.#retentionMs;
    const out: AuditRecord[] = [];
    for (const json of texts) {
      const r = JSON.parse(json) as AuditRecord;
      if (Date.parse(r.time) >= oldest) out.push(r);
    }
    // Newest first, and no more than `maxEntries` of one id (as each bucket keeps).
    return newestFirst(out.reverse()).slice(0, this.#maxEntries);
  }

  /**
   * Newest first, across shards: each shard's streams (this layout's batch stream, the earlier
   * layout's stream) are read newest first until they have `limit` matches (or `MAX_SCAN` records
   * were looked at, or the retention ends it), and the answers are merged by time. The legacy
   * single-slot stream is read as one more.
   */
  async list(query: AuditQuery): Promise<AuditRecord[]> {
    if (!this.#redis.ready) return this.#local.list(query);
    const streams: Array<{ key: string; shard?: number }> = [
      ...this.#shards.map((_t, i) => ({ key: this.#batchStreamKey(i), shard: i })),
      ...this.#shards.map((_t, i) => ({ key: this.#streamKey(i) })),
      { key: this.#legacyStreamKey() },
    ];
    // Budgeted per shard, not per stream: the earlier layout's streams empty after an upgrade.
    const scanEach = Math.ceil(MAX_SCAN / (this.#shards.length + 1)) + BATCH;
    const oldest = this.#clock.now() - this.#retentionMs;
    const perStream = await this.#redis.run(() =>
      Promise.all(streams.map((s) => this.#scan(s, query, scanEach, oldest))),
    );
    return perStream
      .flat()
      .sort((a, b) => Date.parse(b.time) - Date.parse(a.time))
      .slice(0, query.limit);
  }

  async #scan(
    stream: { key: string; shard?: number },
    query: AuditQuery,
    maxRecords: number,
    oldest: number,
  ): Promise<AuditRecord[]> {
    const out: AuditRecord[] = [];
    // A flush retried after a partial failure may have written a batch twice: one text, one record.
    const texts = new Set<string>();
    let end = '+';
    const start = query.since === undefined ? '-' : String(query.since);
    let seen = 0;
    // A batch stream's entry names up to 100 records (read with a second command): a few first.
    let count = stream.shard === undefined ? 50 : 2;
    while (seen < maxRecords && out.length < query.limit) {
      const entries = await this.#redis.client.xrevrange(stream.key, end, start, 'COUNT', count);
      if (entries.length === 0) return out;
      const records =
        stream.shard === undefined
          ? entries.map(([, fields]) => fields.filter((_f, i) => i % 2 === 1))
          : await this.#batchesOf(stream.shard, entries);
      for (let e = 0; e < entries.length; e++) {
        // Records of one entry in write order: newest last.
        const batch = records[e]!;
        for (let i = batch.length - 1; i >= 0; i--) {
          const json = batch[i]!;
          if (texts.has(json)) continue;
          texts.add(json);
          seen++;
          const r = JSON.parse(json) as AuditRecord;
          // The stream is capped by count and lives while traffic flows, so retention is applied
          // here: newest first, the first record past it ends this stream's list.
          if (Date.parse(r.time) < oldest) return out;
          if (matches(r, query)) out.push(r);
          if (out.length >= query.limit) return out;
        }
        end = `(${entries[e]![0]}`;
      }
      if (entries.length < count) return out;
      count = Math.min(50, count * 2);
    }
    return out;
  }

  /** The records (JSON texts, in write order) of batch-stream entries (field: bucket, value: token). */
  async #batchesOf(shard: number, entries: Array<[string, string[]]>): Promise<string[][]> {
    const p = this.#redis.client.pipeline();
    const at: number[] = [];
    entries.forEach(([, fields], e) => {
      for (let i = 0; i + 1 < fields.length; i += 2) {
        p.hget(this.#batchesKey(shard, Number(fields[i])), fields[i + 1]!);
        at.push(e);
      }
    });
    const replies = await p.exec();
    const out: string[][] = entries.map(() => []);
    at.forEach((e, i) => {
      const text = replyOf(replies, i);
      // A batch past its bucket's expiry (or not written: a failed flush) has no records.
      if (typeof text === 'string') out[e]!.push(...text.split('\n'));
    });
    return out;
  }

  /**
   * Keeps the trail under `audit.maxRedisBytes` (every `TRIM_MS`, and on call). Each flush counts
   * what it wrote, and at most once a second (`#writeCounts`) the counts reach its shard's size
   * hash, per bucket: bytes (the JSON, plus what its index
   * entries, batch field and stream entry take), batches and records. Per shard, every instance reads
   * the count (`redisBytes`, for the metrics); when there is work, one instance per interval (a
   * lock that expires) reads it again and does it: buckets whose keys have expired are forgotten
   * (their stream entries cut). Over the cap, the oldest go first until the shard holds about 90 % of
   * it: a whole bucket (its batches, id index and time blocks unlinked) while what remains stays
   * over 90 %, else the bucket's oldest batches, in the order the batch stream holds them (which
   * is write order, across instances). At most `TRIM_STEPS` steps per check: the trail may pass
   * its cap by what a check interval writes, and after a burst it is back under within a few.
   */
  trim(): Promise<void> {
    this.#trimming ??= this.#trim().finally(() => {
      this.#trimming = undefined;
    });
    return this.#trimming;
  }

  async #trim(): Promise<void> {
    if (!this.#redis.ready) return;
    try {
      await Promise.all(this.#shards.map((_t, shard) => this.#trimShard(shard)));
    } catch (err) {
      this.#logger.debug({ err }, 'audit trim failed; tried again at the next check');
    }
  }

  async #trimShard(shard: number): Promise<void> {
    const c = this.#redis.client as RedisHandle['client'] & {
      tollgateAuditDrop(key: string, ...tokens: string[]): Promise<[number, number]>;
      tollgateAuditCut(key: string, entries: number): Promise<number>;
    };
    const sizeKey = this.#sizeKey(shard);
    const stream = this.#batchStreamKey(shard);
    // Every instance reads the count (its `size` for the metrics); one trims, when there is
    // something to do: a lock per shard and interval (the others' SET NX fails), and the count
    // read again under it, so no trim is done twice.
    let raw = await c.hgetall(sizeKey);
    if (!this.#needsTrim(shard, raw)) return;
    const lock = await c.set(this.#trimLockKey(shard), this.#tokenPrefix, 'PX', TRIM_MS - 250, 'NX');
    if (lock === null) return;
    raw = await c.hgetall(sizeKey);
    const expired = this.#expiredBucket();
    const buckets = new Map<number, { bytes: number; batches: number; records: number }>();
    const gone: string[] = [];
    let goneBatches = 0;
    for (const [field, value] of Object.entries(raw)) {
      const colon = field.indexOf(':');
      const bucket = Number(colon === -1 ? field : field.slice(0, colon));
      const v = Number(value);
      if (bucket <= expired || !Number.isSafeInteger(bucket)) {
        gone.push(field);
        if (field.endsWith(':n')) goneBatches += v;
        continue;
      }
      let e = buckets.get(bucket);
      if (e === undefined) buckets.set(bucket, (e = { bytes: 0, batches: 0, records: 0 }));
      if (colon === -1) e.bytes = v;
      else if (field.endsWith(':n')) e.batches = v;
      else e.records = v;
    }
    if (gone.length > 0) {
      await c.hdel(sizeKey, ...gone);
      if (goneBatches > 0) await c.tollgateAuditCut(stream, goneBatches);
    }
    const order = [...buckets.keys()].sort((a, b) => a - b);
    let total = 0;
    for (const e of buckets.values()) total += e.bytes;
    this.#sizes[shard] = total;
    if (total <= this.#capPerShard) return;
    const now = this.#clock.now();
    if (now - this.#warnedAt >= 600_000) {
      this.#warnedAt = now;
      this.#logger.warn(
        { shard, bytes: total, capBytes: this.#capPerShard },
        'audit trail over audit.maxRedisBytes in Redis: its oldest records are deleted before audit.retentionSec ends',
      );
    }
    const target = Math.floor(this.#capPerShard * 0.9);
    for (let step = 0; step < TRIM_STEPS && total > target && order.length > 0; step++) {
      const bucket = order[0]!;
      const e = buckets.get(bucket)!;
      if (order.length > 1 && total - e.bytes >= target) {
        await this.#dropBucket(shard, bucket, e.batches);
        this.trimmed += e.records;
        total -= e.bytes;
        order.shift();
        continue;
      }
      // The bucket's oldest batches, as many as the excess needs (by its mean batch size): enough
      // to be under the cap, and as near 90 % as whole batches get (a batch is up to 100 records:
      // rounding up to 90 % could delete the newest batch of a trail a few batches long).
      const mean = Math.max(1, e.batches > 0 ? e.bytes / e.batches : e.bytes);
      const want = Math.min(
        TRIM_BATCHES,
        Math.max(Math.ceil((total - this.#capPerShard) / mean), Math.round((total - target) / mean)),
      );
      if (want <= 0) break;
      const entries = await c.xrange(stream, '-', '+', 'COUNT', want);
      // Entries of this bucket or older (an upgrade's uncounted ones): oldest first, by bucket.
      const byBucket = new Map<number, { ids: string[]; tokens: string[] }>();
      for (const [id, fields] of entries) {
        const b = Number(fields[0]);
        if (!(b <= bucket) || fields[1] === undefined) continue;
        let d = byBucket.get(b);
        if (d === undefined) byBucket.set(b, (d = { ids: [], tokens: [] }));
        d.ids.push(id);
        d.tokens.push(fields[1]);
      }
      if (byBucket.size === 0) {
        // None of its batches is in the stream (cut by an earlier release's bound): all of it goes.
        await this.#dropBucket(shard, bucket, e.batches);
        this.trimmed += e.records;
        total -= e.bytes;
        order.shift();
        continue;
      }
      for (const [b, d] of byBucket) {
        const [bytes, records] = await c.tollgateAuditDrop(this.#batchesKey(shard, b), ...d.tokens);
        await c.xdel(stream, ...d.ids);
        this.trimmed += records;
        if (b !== bucket) continue;
        // Their index entries stay until the bucket goes: what the count keeps for them.
        const freed = Math.ceil(bytes * ALLOC_SLACK) + d.tokens.length * BATCH_BYTES;
        await c
          .pipeline()
          .hincrby(sizeKey, String(b), -freed)
          .hincrby(sizeKey, `${b}:n`, -d.tokens.length)
          .hincrby(sizeKey, `${b}:r`, -records)
          .exec();
        total -= freed;
        e.bytes -= freed;
        e.batches -= d.tokens.length;
        e.records -= records;
      }
    }
    this.#sizes[shard] = total;
  }

  /**
   * Records the shard's counted size (live buckets' bytes) and says whether a trim has work: the
   * count over the cap, or buckets past their keys' expiry to forget.
   */
  #needsTrim(shard: number, raw: Record<string, string>): boolean {
    const expired = this.#expiredBucket();
    let total = 0;
    let stale = false;
    for (const [field, value] of Object.entries(raw)) {
      const colon = field.indexOf(':');
      const bucket = Number(colon === -1 ? field : field.slice(0, colon));
      if (bucket <= expired || !Number.isSafeInteger(bucket)) stale = true;
      else if (colon === -1) total += Number(value);
    }
    this.#sizes[shard] = total;
    return stale || total > this.#capPerShard;
  }

  /** The newest bucket whose keys have expired: they live `retention + 2 buckets` after its last write. */
  #expiredBucket(): number {
    return Math.floor((this.#clock.now() - this.#retentionMs) / this.#bucketMs) - 3;
  }

  /** The trail's size in Redis as its count has it (bytes, all shards), as this instance last read it. */
  get redisBytes(): number {
    let total = 0;
    for (const n of this.#sizes) total += n ?? 0;
    return total;
  }

  /** Unlinks a bucket of a shard: its batches, its id index and its span's time blocks. */
  async #dropBucket(shard: number, bucket: number, batches: number): Promise<void> {
    const c = this.#redis.client as RedisHandle['client'] & {
      tollgateAuditCut(key: string, entries: number): Promise<number>;
    };
    const keys = [
      this.#batchesKey(shard, bucket),
      this.#idsKey(shard, bucket),
      this.#indexKey(shard, bucket),
    ];
    // The blocks of ids minted in the bucket's span, but for its last seconds: a record that came
    // then may have been flushed into the next bucket.
    const first = Math.floor((bucket * this.#bucketMs) / BLOCK_MS);
    const last = Math.floor(((bucket + 1) * this.#bucketMs - BLOCK_SKEW_MS - 2 * FLUSH_MS) / BLOCK_MS);
    const tag = `{${this.#shards[shard]!}}`;
    for (let b = first; b < last; b += 1000) {
      const chunk: string[] = [];
      for (let i = b; i < Math.min(last, b + 1000); i++)
        chunk.push(this.#redis.key(tag, `${this.#names.records}-blk`, i.toString(36)));
      if (b === first) chunk.push(...keys);
      await this.#redis.client.unlink(...chunk);
    }
    if (last <= first) await this.#redis.client.unlink(...keys);
    const sizeKey = this.#sizeKey(shard);
    await c.hdel(sizeKey, String(bucket), `${bucket}:n`, `${bucket}:r`);
    if (batches > 0) await c.tollgateAuditCut(this.#batchStreamKey(shard), batches);
  }

  async close(): Promise<void> {
    clearInterval(this.#timer);
    clearInterval(this.#trimTimer);
    await this.#trimming;
    await this.flush();
  }

  /** A shard's size count, per bucket (`<bucket>`: bytes, `<bucket>:n`: batches, `<bucket>:r`: records). */
  #sizeKey(shard: number): string {
    return this.#redis.key(`{${this.#shards[shard]!}}`, `${this.#names.records}-size`);
  }

  /** Held (with an expiry) by the instance that checks a shard's size this interval. */
  #trimLockKey(shard: number): string {
    return this.#redis.key(`{${this.#shards[shard]!}}`, `${this.#names.records}-trim`);
  }

  /** The earlier layout's stream (one entry per flush, field `r` per record): read, never written. */
  #streamKey(shard: number): string {
    return this.#redis.key(`{${this.#shards[shard]!}}`, this.#names.stream);
  }

  /** The earlier layout's id index (id → JSON lines): read, never written. */
  #indexKey(shard: number, bucket: number): string {
    return this.#redis.key(`{${this.#shards[shard]!}}`, this.#names.records, String(bucket));
  }

  /** A shard's batch stream: one entry per flush (field: the bucket, value: the batch's token). */
  #batchStreamKey(shard: number): string {
    return this.#redis.key(`{${this.#shards[shard]!}}`, `${this.#names.stream}-batches`);
  }

  /** A shard's batches of one bucket (token → the JSON texts, one per line). */
  #batchesKey(shard: number, bucket: number): string {
    return this.#redis.key(`{${this.#shards[shard]!}}`, `${this.#names.records}-json`, String(bucket));
  }

  /**
   * The block index of a time-ordered id (UUIDv7, as the gateway mints): the id's shard's hash of
   * the ids of one `BLOCK_MS` of time, one field per batch holding any (`<bucket>.<token>` → the
   * ids' last 8 hex digits, comma-separated). Undefined for any other id, and — when `time` (the
   * record's arrival) is given — for an id whose time is more than `BLOCK_SKEW_MS` away from it:
   * a client's clock, or a client piling ids into one block, goes to the id index instead.
   */
  #blockOf(id: string, time?: string): string | undefined {
    const ms = uuidV7Time(id);
    if (ms === undefined) return undefined;
    if (time !== undefined && !(Math.abs(Date.parse(time) - ms) <= BLOCK_SKEW_MS)) return undefined;
    return this.#redis.key(
      `{${this.#shards[shardOf(id, this.#shards.length)]!}}`,
      `${this.#names.records}-blk`,
      Math.floor(ms / BLOCK_MS).toString(36),
    );
  }

  /** A shard's id index of one bucket (id → the tokens of the batches holding its records). */
  #idsKey(shard: number, bucket: number): string {
    return this.#redis.key(`{${this.#shards[shard]!}}`, `${this.#names.records}-ids`, String(bucket));
  }

  /** Where version 2's first releases kept the records of an id (a list) and listed them (one stream). */
  #legacyListKey(id: string): string {
    return this.#redis.key('{audit}', this.#names.records, id);
  }

  #legacyStreamKey(): string {
    return this.#redis.key('{audit}', this.#names.stream);
  }

  /** Where versions before 2 kept one record per id (a string, overwritten): read, never written. */
  #legacyKey(id: string): string {
    return this.#redis.key(
      '{audit}',
      this.#names.records === 'reqs' ? 'req' : `${this.#names.records}-legacy`,
      id,
    );
  }
}
