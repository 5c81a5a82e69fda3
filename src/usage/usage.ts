import { finalStatus, type RequestContext } from '../core/context.js';
import type { Identity } from '../core/identity.js';

/*
 * Usage history (SPEC §11): per key and per tenant, hourly buckets of requests by status class,
 * each meter's sum, and rate-limit and quota refusals. The request path only adds to a bucket in
 * memory (`UsageStore.bucket`); the Redis store writes its pending buckets in batches off the
 * request path (see `RedisUsageStore`), the memory store keeps them where they are.
 */

export const HOUR_MS = 3_600_000;
export const DAY_MS = 86_400_000;

/** Whose usage: an API key (`k`, by key id) or a tenant (`t`). */
export type UsageKind = 'k' | 't';

/** One subject's counts in one hour, as the request path adds to them. */
export interface UsageBucket {
  /** Requests by status class: index 1 = 1xx (WebSocket handshakes that became tunnels) … 5 = 5xx. */
  readonly status: number[];
  /** Refused with 429 rate-limit-exceeded (a rate limit or a concurrency limit). */
  rateLimit: number;
  /** Refused with 402 quota-exceeded (a plan quota or the key's remaining uses). */
  quota: number;
  /** Meter sums by meter name (undefined while none was reported). */
  meters: Map<string, number> | undefined;
}

export function emptyBucket(): UsageBucket {
  return { status: [0, 0, 0, 0, 0, 0], rateLimit: 0, quota: 0, meters: undefined };
}

/** Adds `from` into `into`. */
export function addBucket(into: UsageBucket, from: UsageBucket): void {
  for (let i = 1; i <= 5; i++) into.status[i]! += from.status[i]!;
  into.rateLimit += from.rateLimit;
  into.quota += from.quota;
  if (from.meters !== undefined) {
    const m = (into.meters ??= new Map());
    for (const [name, v] of from.meters) m.set(name, (m.get(name) ?? 0) + v);
  }
}

/** Where usage buckets live. */
export interface UsageStore {
  /**
   * The bucket the request path adds to (synchronous, no I/O): the stored one (memory) or a
   * pending one that the next flush writes (Redis). Undefined: the store is full, nothing is kept.
   */
  bucket(kind: UsageKind, id: string, hour: number): UsageBucket | undefined;
  /** The buckets of hours `fromHour` ≤ h < `toHour` that hold anything, by hour index. */
  read(kind: UsageKind, id: string, fromHour: number, toHour: number): Promise<Map<number, UsageBucket>>;
  /** Writes what is pending (Redis); resolves once written or failed. */
  flush(): Promise<void>;
  /** For the metrics: buckets pending a write, and dropped so far. */
  stats(): { pending: number; dropped: number };
  close(): Promise<void>;
}

const REFUSED = { 'rate-limit-exceeded': 1, 'quota-exceeded': 2 } as const;

/**
 * Records finished requests in a store: the request's own status class and refusal, in the hour
 * it arrived, for its key (API keys only) and its tenant. Meters are recorded when the rate-limit
 * stage settles them (`meters`), into the same hour.
 */
export class UsageRecorder {
  readonly store: UsageStore;

  constructor(store: UsageStore) {
    this.store = store;
  }

  /** The observer: once per request whose response is over. */
  readonly request = (ctx: RequestContext): void => {
    const id = ctx.identity;
    if (id === undefined) return;
    const cls = Math.floor(finalStatus(ctx) / 100);
    if (cls < 1 || cls > 5) return;
    const slug = ctx.problem?.slug;
    const refused = slug === undefined ? 0 : (REFUSED[slug as keyof typeof REFUSED] ?? 0);
    const hour = Math.floor(ctx.startedAt / HOUR_MS);
    if (id.method === 'api-key') count(this.store.bucket('k', id.credentialId, hour), cls, refused);
    if (id.tenant !== undefined) count(this.store.bucket('t', id.tenant, hour), cls, refused);
  };

  /** A request's settled meter values (names and values in the route's order; zeros skipped). */
  meters(identity: Identity, startedAt: number, names: readonly string[], values: readonly number[]): void {
    const hour = Math.floor(startedAt / HOUR_MS);
    if (identity.method === 'api-key')
      addMeters(this.store.bucket('k', identity.credentialId, hour), names, values);
    if (identity.tenant !== undefined)
      addMeters(this.store.bucket('t', identity.tenant, hour), names, values);
  }
}

function count(b: UsageBucket | undefined, cls: number, refused: number): void {
  if (b === undefined) return;
  b.status[cls]!++;
  if (refused === 1) b.rateLimit++;
  else if (refused === 2) b.quota++;
}

function addMeters(b: UsageBucket | undefined, names: readonly string[], values: readonly number[]): void {
  if (b === undefined) return;
  for (let i = 0; i < names.length; i++) {
    const v = values[i]!;
    if (v <= 0) continue;
    const m = (b.meters ??= new Map());
    m.set(names[i]!, (m.get(names[i]!) ?? 0) + v);
  }
}

/** The answer's counts of one bucket (or of the whole range). */
export interface UsageCountsView {
  requests: { total: number; '1xx': number; '2xx': number; '3xx': number; '4xx': number; '5xx': number };
  meters: Record<string, number>;
  refusals: { rateLimit: number; quota: number };
}

export function countsView(b: UsageBucket): UsageCountsView {
  const s = b.status;
  const meters: Record<string, number> = {};
  if (b.meters !== undefined)
    for (const [name, v] of [...b.meters].sort(([x], [y]) => (x < y ? -1 : 1))) meters[name] = v;
  return {
    requests: {
      total: s[1]! + s[2]! + s[3]! + s[4]! + s[5]!,
      '1xx': s[1]!,
      '2xx': s[2]!,
      '3xx': s[3]!,
      '4xx': s[4]!,
      '5xx': s[5]!,
    },
    meters,
    refusals: { rateLimit: b.rateLimit, quota: b.quota },
  };
}

/**
 * The buckets of `[fromMs, toMs)` at a granularity, every one of them (zeros included, so a chart
 * needs no gap filling), each starting on its UTC hour or day, and their totals.
 */
export function usageSeries(
  hours: ReadonlyMap<number, UsageBucket>,
  fromMs: number,
  toMs: number,
  granularity: 'hour' | 'day',
): {
  from: string;
  to: string;
  buckets: Array<{ start: string } & UsageCountsView>;
  totals: UsageCountsView;
} {
  const step = granularity === 'hour' ? HOUR_MS : DAY_MS;
  const start = Math.floor(fromMs / step) * step;
  const end = Math.ceil(toMs / step) * step;
  const buckets: Array<{ start: string } & UsageCountsView> = [];
  const totals = emptyBucket();
  for (let t = start; t < end; t += step) {
    const b = emptyBucket();
    for (let h = t / HOUR_MS; h < (t + step) / HOUR_MS; h++) {
      const got = hours.get(h);
      if (got !== undefined) addBucket(b, got);
    }
    addBucket(totals, b);
    buckets.push({ start: new Date(t).toISOString(), ...countsView(b) });
  }
  return {
    from: new Date(start).toISOString(),
    to: new Date(end).toISOString(),
    buckets,
    totals: countsView(totals),
  };
}

/** Buckets the memory store keeps at most (each ~100 bytes): past it the oldest hours go first. */
export const MEMORY_MAX_BUCKETS = 200_000;

/**
 * Usage in process memory (no Redis): bounded by `retentionDays` (a bucket is dropped once its UTC
 * day ended `retentionDays` ago, as in Redis) and by `maxBuckets` (past it, the oldest hours are
 * dropped first).
 */
export class MemoryUsageStore implements UsageStore {
  readonly #subjects = new Map<string, Map<number, UsageBucket>>();
  readonly #retentionDays: () => number;
  readonly #now: () => number;
  readonly #maxBuckets: number;
  #size = 0;
  #sweptHour = -1;
  /** Buckets dropped to stay under `maxBuckets` (not for age). */
  evicted = 0;

  constructor(o: { retentionDays: () => number; now: () => number; maxBuckets?: number }) {
    this.#retentionDays = o.retentionDays;
    this.#now = o.now;
    this.#maxBuckets = o.maxBuckets ?? MEMORY_MAX_BUCKETS;
  }

  get size(): number {
    return this.#size;
  }

  bucket(kind: UsageKind, id: string, hour: number): UsageBucket {
    const subject = `${kind}:${id}`;
    let hours = this.#subjects.get(subject);
    let b = hours?.get(hour);
    if (b !== undefined) return b;
    // Sweeping first: it may drop this subject's (empty) map.
    this.#sweep();
    hours = this.#subjects.get(subject);
    if (hours === undefined) this.#subjects.set(subject, (hours = new Map<number, UsageBucket>()));
    hours.set(hour, (b = emptyBucket()));
    this.#size++;
    return b;
  }

  read(kind: UsageKind, id: string, fromHour: number, toHour: number): Promise<Map<number, UsageBucket>> {
    this.#sweep();
    const out = new Map<number, UsageBucket>();
    const hours = this.#subjects.get(`${kind}:${id}`);
    if (hours !== undefined)
      for (const [h, b] of hours)
        if (h >= fromHour && h < toHour) {
          const copy = emptyBucket();
          addBucket(copy, b);
          out.set(h, copy);
        }
    return Promise.resolve(out);
  }

  /**
   * Drops buckets past the retention (at most once per hour of traffic), then, while over the
   * cap, the oldest hours.
   */
  #sweep(): void {
    const hour = Math.floor(this.#now() / HOUR_MS);
    if (hour !== this.#sweptHour) {
      this.#sweptHour = hour;
      const oldestDay = Math.floor(this.#now() / DAY_MS) - this.#retentionDays();
      this.#drop((h) => Math.floor(h / 24) < oldestDay);
    }
    if (this.#size < this.#maxBuckets) return;
    // Over the cap: the oldest tenth of what is kept goes, so a full store sweeps rarely.
    const hoursKept: number[] = [];
    for (const hours of this.#subjects.values()) for (const h of hours.keys()) hoursKept.push(h);
    hoursKept.sort((x, y) => x - y);
    const cut = hoursKept[Math.floor(hoursKept.length / 10)]!;
    const before = this.#size;
    this.#drop((h) => h <= cut);
    this.evicted += before - this.#size;
  }

  #drop(old: (hour: number) => boolean): void {
    for (const [subject, hours] of this.#subjects) {
      for (const h of hours.keys())
        if (old(h)) {
          hours.delete(h);
          this.#size--;
        }
      if (hours.size === 0) this.#subjects.delete(subject);
    }
  }

  flush(): Promise<void> {
    return Promise.resolve();
  }

  stats(): { pending: number; dropped: number } {
    return { pending: 0, dropped: this.evicted };
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
