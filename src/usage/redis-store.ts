import type { RedisHandle } from '../shared/redis.js';
import { hashTag } from '../policies/rate-limit/counters.js';
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
/** Distinct pending buckets (subject × hour) that make a flush at once, before the interval. */
export const FLUSH_AT_BUCKETS = 1000;
/** Pending buckets kept at most while Redis is away; past it, new ones are dropped (and counted). */
export const MAX_PENDING_BUCKETS = 100_000;

const CLASS_FIELD = ['', '1xx', '2xx', '3xx', '4xx', '5xx'];

interface Pending {
  kind: UsageKind;
  id: string;
  hour: number;
  b: UsageBucket;
}

/**
 * Usage in Redis, exact across instances: each instance adds requests to pending buckets in its
 * memory (no I/O on the request path) and writes them every `flushIntervalMs` — or at once when
 * `FLUSH_AT_BUCKETS` distinct buckets are pending — as one MULTI of HINCRBYs per flush (per
 * subject on a Redis Cluster): one command per bucket field that changed, however many requests
 * it counts. Layout: one hash per subject and UTC day, `usage:{k:<keyId>}:<day>` (or `{t:<tenant>}`),
 * fields `<HH>:2xx`, `<HH>:rl`, `<HH>:q`, `<HH>:m:<meter>`; the hash tag is the subject, so on a
 * Cluster keys (and their writes) spread over slots while one subject's days share one. Each hash
 * expires `retentionDays` after its day ends; its PEXPIRE is sent once per process, with the
 * first write of that day.
 *
 * What a crash loses: what is pending, at most the last `flushIntervalMs` of requests (and, while
 * Redis is away, what piled up meanwhile, up to `MAX_PENDING_BUCKETS`). A failed write is kept for
 * the next flush, except after a command timeout, where Redis may have applied it: that batch is
 * dropped (counted) rather than risk counting it twice.
 */
export class RedisUsageStore implements UsageStore {
  readonly #redis: RedisHandle;
  readonly #cluster: boolean;
  readonly #retentionDays: () => number;
  readonly #now: () => number;
  readonly #intervalMs: () => number;
  readonly #maxPending: number;
  readonly #flushAt: number;
  #pending = new Map<string, Pending>();
  #timer: NodeJS.Timeout | undefined;
  readonly #inFlight = new Set<Promise<void>>();
  /** Day hashes whose PEXPIRE this process already sent, with their day. */
  readonly #expirySet = new Map<string, number>();
  #closed = false;
  /** Buckets dropped: pending past the cap, or a batch whose write timed out. */
  dropped = 0;
  /** Flushes that failed (their buckets kept for the next, unless dropped). */
  failures = 0;
  /** Commands sent (HINCRBY, PEXPIRE, MULTI, EXEC), for the amortised cost per request. */
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
  }) {
    this.#redis = o.redis;
    this.#cluster = o.redis.config.cluster !== undefined;
    this.#retentionDays = o.retentionDays;
    this.#now = o.now;
    this.#intervalMs = o.flushIntervalMs ?? (() => FLUSH_INTERVAL_MS);
    this.#maxPending = o.maxPending ?? MAX_PENDING_BUCKETS;
    this.#flushAt = o.flushAt ?? FLUSH_AT_BUCKETS;
    this.#onError = o.onError;
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
    if (this.#pending.size >= this.#flushAt) this.#flushNow();
    else if (this.#timer === undefined && !this.#closed) {
      this.#timer = setTimeout(() => this.#flushNow(), this.#intervalMs());
      this.#timer.unref();
    }
    return b;
  }

  #key(kind: UsageKind, id: string, day: number): string {
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
    const today = Math.floor(now / DAY_MS);
    const retentionMs = this.#retentionDays() * DAY_MS;
    // Forget the expiry marks of days that can no longer be written to.
    if (this.#expirySet.size > 0)
      for (const [key, day] of this.#expirySet) if (day < today - 1) this.#expirySet.delete(key);
    // One transaction per flush; on a Cluster one per subject (a transaction stays in one slot).
    const groups = new Map<string, Array<[string, Pending]>>();
    for (const entry of batch) {
      const g = this.#cluster ? `${entry[1].kind}:${entry[1].id}` : '';
      let list = groups.get(g);
      if (list === undefined) groups.set(g, (list = []));
      list.push(entry);
    }
    await Promise.all(
      [...groups.values()].map(async (entries) => {
        const multi = this.#redis.client.multi();
        let sent = 2;
        const expiring = new Map<string, number>();
        for (const [, e] of entries) {
          const day = Math.floor(e.hour / 24);
          const ttl = (day + 1) * DAY_MS + retentionMs - now;
          if (ttl <= 0) continue; // already past the retention
          const key = this.#key(e.kind, e.id, day);
          const hh = String(e.hour % 24).padStart(2, '0');
          const b = e.b;
          for (let c = 1; c <= 5; c++)
            if (b.status[c]! > 0) {
              multi.hincrby(key, `${hh}:${CLASS_FIELD[c]!}`, b.status[c]!);
              sent++;
            }
          if (b.rateLimit > 0) {
            multi.hincrby(key, `${hh}:rl`, b.rateLimit);
            sent++;
          }
          if (b.quota > 0) {
            multi.hincrby(key, `${hh}:q`, b.quota);
            sent++;
          }
          if (b.meters !== undefined)
            for (const [name, v] of b.meters) {
              multi.hincrby(key, `${hh}:m:${name}`, v);
              sent++;
            }
          if (!this.#expirySet.has(key) && !expiring.has(key)) {
            multi.pexpire(key, ttl);
            expiring.set(key, day);
            sent++;
          }
        }
        if (sent === 2) return;
        try {
          this.commands += sent;
          await multi.exec();
          for (const [key, day] of expiring) this.#expirySet.set(key, day);
        } catch (err) {
          this.failures++;
          this.#redis.recordError(false);
          this.#onError?.(err);
          // A timeout may have been applied: dropping it errs low rather than counting twice.
          if (err instanceof Error && /timed? ?out/i.test(err.message)) this.dropped += entries.length;
          else for (const [k, e] of entries) this.#keep(k, e);
        }
      }),
    );
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
    const replies = await this.#redis.run(async () => {
      // One subject's days share a slot: one pipeline, also on a Cluster.
      const pipe = this.#redis.client.pipeline();
      for (let d = firstDay; d <= lastDay; d++) pipe.hgetall(this.#key(kind, id, d));
      const res = (await pipe.exec()) ?? [];
      return res.map(([err, v]) => {
        if (err) throw err;
        return v as Record<string, string>;
      });
    });
    replies.forEach((hash, i) => {
      const day = firstDay + i;
      for (const [field, raw] of Object.entries(hash)) {
        const hh = Number(field.slice(0, 2));
        const hour = day * 24 + hh;
        if (!(hour >= fromHour && hour < toHour) || field[2] !== ':') continue;
        const n = Number(raw);
        if (!Number.isFinite(n)) continue;
        let b = out.get(hour);
        if (b === undefined) out.set(hour, (b = emptyBucket()));
        const what = field.slice(3);
        const cls = CLASS_FIELD.indexOf(what);
        if (cls > 0) b.status[cls]! += n;
        else if (what === 'rl') b.rateLimit += n;
        else if (what === 'q') b.quota += n;
        else if (what.startsWith('m:')) {
          const m = (b.meters ??= new Map());
          m.set(what.slice(2), (m.get(what.slice(2)) ?? 0) + n);
        }
      }
    });
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
