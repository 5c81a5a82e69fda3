import type { Clock } from '../core/clock.js';
import type { RedisHandle } from '../shared/redis.js';
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

/** Sorts records newest first by arrival (`time`); ties keep their order (stable sort). */
function newestFirst(records: AuditRecord[]): AuditRecord[] {
  return records.length < 2 ? records : records.sort((a, b) => Date.parse(b.time) - Date.parse(a.time));
}

const FLUSH_MS = 100;
// Small batches: a large pipeline right after an outage must not run into the command timeout.
const BATCH = 100;
const MAX_PENDING = 10_000;
const MAX_SCAN = 5_000;

/**
 * Audit records in Redis, shared by every instance: appended to a list per request id with the
 * retention as TTL (lookup by id is one LRANGE; a reused id adds to the list, never replaces a
 * record; a list over `maxEntries` is trimmed to the newest, as the stream is) and to a capped
 * stream (`MAXLEN ~ maxEntries`) for listing. Writes are batched off the request path (one
 * pipeline per 100 ms or 100 records);
 * while Redis is down records wait in a bounded buffer and the oldest are dropped first. A local
 * ring answers for this instance's own recent records even when Redis does not.
 * All keys share one `{audit}` hash tag so a pipeline stays in one Cluster slot.
 */
export class RedisAuditStore implements AuditStore {
  readonly #redis: RedisHandle;
  readonly #local: MemoryAuditStore;
  readonly #logger: Logger;
  readonly #retentionMs: number;
  readonly #maxEntries: number;
  readonly #stream: string;
  readonly #clock: Clock;
  readonly #records: string;
  #pending: Array<{ id: string; json: string }> = [];
  #flushing: Promise<void> | undefined;
  #timer: NodeJS.Timeout;
  dropped = 0;

  constructor(options: {
    redis: RedisHandle;
    maxEntries: number;
    retentionSec: number;
    clock: Clock;
    logger: Logger;
    /** A sibling trail (admin records) under names of its own; default: the request trail. */
    names?: { stream: string; records: string } | undefined;
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
    this.#stream = options.redis.key('{audit}', options.names?.stream ?? 'stream');
    this.#records = options.names?.records ?? 'reqs';
    this.#timer = setInterval(() => void this.flush(), FLUSH_MS);
    this.#timer.unref();
  }

  append(record: AuditRecord, json: string = JSON.stringify(record)): void {
    this.#local.append(record, json);
    this.#pending.push({ id: record.request_id, json });
    if (this.#pending.length > MAX_PENDING) {
      const excess = this.#pending.length - MAX_PENDING;
      this.#pending.splice(0, excess);
      this.dropped += excess;
    }
    if (this.#pending.length >= BATCH) void this.flush();
  }

  flush(): Promise<void> {
    this.#flushing ??= this.#flush().finally(() => {
      this.#flushing = undefined;
    });
    return this.#flushing;
  }

  async #flush(): Promise<void> {
    while (this.#pending.length > 0 && this.#redis.ready) {
      const batch = this.#pending.slice(0, BATCH);
      const pipeline = this.#redis.client.pipeline();
      for (const { id, json } of batch) {
        const key = this.#recordsKey(id);
        pipeline.rpush(key, json);
        pipeline.pexpire(key, this.#retentionMs);
        pipeline.xadd(this.#stream, 'MAXLEN', '~', String(this.#maxEntries), '*', 'r', json);
      }
      pipeline.pexpire(this.#stream, this.#retentionMs);
      try {
        const results = (await pipeline.exec()) ?? [];
        if (results.some(([err]) => err !== null))
          throw results.find(([err]) => err !== null)?.[0] ?? new Error('pipeline failed');
        this.#pending.splice(0, batch.length);
        await this.#trim(batch, results);
      } catch (err) {
        this.#redis.recordError(false);
        this.#logger.debug({ err }, 'audit flush failed; records kept for the next attempt');
        return;
      }
    }
  }

  /**
   * A list longer than `maxEntries` (one id reused that often within the retention) loses its
   * oldest records, as the stream does: the RPUSH replies say which, so the common write pays no
   * LTRIM.
   */
  async #trim(batch: Array<{ id: string }>, results: Array<[Error | null, unknown]>): Promise<void> {
    let pipeline: ReturnType<RedisHandle['client']['pipeline']> | undefined;
    batch.forEach(({ id }, i) => {
      const length = results[i * 3]?.[1];
      if (typeof length === 'number' && length > this.#maxEntries)
        (pipeline ??= this.#redis.client.pipeline()).ltrim(this.#recordsKey(id), -this.#maxEntries, -1);
    });
    // A failed trim is retried by the next RPUSH on that id, which finds the list still too long.
    if (pipeline !== undefined) await pipeline.exec();
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
        const results = await this.#redis.client
          .pipeline()
          .lrange(this.#recordsKey(id), 0, -1)
          .get(this.#legacyKey(id))
          .exec();
        const failed = results?.find(([err]) => err !== null)?.[0];
        if (failed) throw failed;
        const list = (results?.[0]?.[1] ?? []) as string[];
        const legacy = results?.[1]?.[1] as string | null | undefined;
        return typeof legacy === 'string' ? [legacy, ...list] : list;
      });
    } catch (err) {
      const local = await this.#local.getAll(id);
      if (local.length > 0) return local;
      throw err;
    }
    // A flush retried after a partial failure may have pushed a record twice: one JSON text is one
    // record. Records of this instance still waiting for the next flush are added.
    const texts = new Set(stored);
    for (const p of this.#pending) if (p.id === id) texts.add(p.json);
    const oldest = this.#clock.now() - this.#retentionMs;
    const out: AuditRecord[] = [];
    for (const json of texts) {
      const r = JSON.parse(json) as AuditRecord;
      // PEXPIRE is renewed by each append: records past the retention are dropped here.
      if (Date.parse(r.time) >= oldest) out.push(r);
    }
    return newestFirst(out.reverse());
  }

  async list(query: AuditQuery): Promise<AuditRecord[]> {
    if (!this.#redis.ready) return this.#local.list(query);
    const end = query.since === undefined ? '-' : String(query.since);
    const entries = await this.#redis.run(() =>
      this.#redis.client.xrevrange(this.#stream, '+', end, 'COUNT', MAX_SCAN),
    );
    const out: AuditRecord[] = [];
    // The stream is capped by count (approximately: MAXLEN ~) and lives while traffic flows, so
    // retention is applied here: newest first, the first record past it ends the list.
    const oldest = this.#clock.now() - this.#retentionMs;
    for (const [, fields] of entries) {
      const json = fields[1];
      if (json === undefined) continue;
      const r = JSON.parse(json) as AuditRecord;
      if (Date.parse(r.time) < oldest) break;
      if (matches(r, query)) out.push(r);
      if (out.length >= query.limit) break;
    }
    return out;
  }

  async close(): Promise<void> {
    clearInterval(this.#timer);
    await this.flush();
  }

  #recordsKey(id: string): string {
    return this.#redis.key('{audit}', this.#records, id);
  }

  /** Where versions before 2 kept one record per id (a string, overwritten): read, never written. */
  #legacyKey(id: string): string {
    return this.#redis.key('{audit}', this.#records === 'reqs' ? 'req' : `${this.#records}-legacy`, id);
  }
}
