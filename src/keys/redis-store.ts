import type { Clock } from '../core/clock.js';
import type { RedisHandle } from '../shared/redis.js';
import type { Logger } from 'pino';
import { Problem } from '../problems/problem.js';
import type { KeyListQuery, KeyPage, KeyRecord, KeyStore, RevokedKey, TenantRecord } from './record.js';
import { REVOKED_KEPT, revokedMatches } from './record.js';
import { KeyedMutex, afterCursor, compareKeys, decodeCursor, encodeCursor, ownedAs } from './record.js';
import { randomBytes } from 'node:crypto';

/**
 * Key records cached per process: above an API product's active keys (10,000+), so that a
 * working set of that size is served from memory, not one Redis read per request.
 */
const CACHE_MAX = 50_000;
/** The most key records one coalesced lookup reads (one MGET). */
const LOOKUP_BATCH_MAX = 256;
/** While Redis is down, a cached record keeps serving this long past its TTL. */
const STALE_GRACE_MS = 5 * 60_000;
const TOUCH_FLUSH_MS = 5_000;
/** An owner lock expires on its own after this long (a crashed holder cannot block an owner forever). */
const OWNER_LOCK_TTL_MS = 10_000;
/** How long to wait for another instance's owner lock before answering 503. */
const OWNER_LOCK_WAIT_MS = 3_000;
const UNLOCK_LUA = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`;

interface Cached {
  record: KeyRecord | null;
  at: number;
}

interface CachedTenant {
  plan: string | null;
  at: number;
}

/** Invalidation messages are key hashes (hex), or this prefix and a tenant id (a tenant's plan changed). */
const TENANT_MESSAGE = 'tenant:';

/**
 * Key records in Redis, shared by every gateway instance.
 *
 * Layout (all under one `{keys}` hash tag, so each MULTI stays in one Cluster slot):
 * `rec:<id>` and `hash:<sha256>` hold the record's JSON (auth reads by hash in one GET, the admin
 * API by id), `all`, `owner:<id>` and `tenant:<id>` are sorted sets by creation time for listing,
 * `used` is a hash of last-use times written in batches, `tenantrec:<id>` a tenant's settings (its
 * plan) as JSON.
 *
 * Lookups by hash are cached in process for `auth.apiKeys.cacheTtlMs` (a repeated key costs no
 * Redis round trip); every change publishes the hash on `keys:invalidate`, and every instance
 * drops it from its cache at once — a revocation is honoured everywhere without waiting for a TTL.
 * While Redis is down, cached records keep serving for a bounded grace; uncached keys get 503.
 * Tenant plans are cached the same way and invalidated with a `tenant:<id>` message: a tenant's new
 * plan reaches its keys on every instance at once.
 */
export class RedisKeyStore implements KeyStore {
  readonly kind = 'redis';
  readonly #redis: RedisHandle;
  readonly #clock: Clock;
  readonly #logger: Logger;
  readonly #ttlMs: number;
  readonly #cache = new Map<string, Cached>();
  readonly #pending = new Map<string, Promise<KeyRecord | undefined>>();
  readonly #tenantCache = new Map<string, CachedTenant>();
  readonly #tenantPending = new Map<string, Promise<string | null>>();
  /** Bumped by every tenant invalidation: a load that raced one does not cache what it read. */
  #tenantGeneration = 0;
  readonly #touched = new Map<string, number>();
  readonly #channel: string;
  readonly #timer: NodeJS.Timeout;
  readonly #owners = new KeyedMutex();
  /** Lookups waiting for the next coalesced MGET (see `#read`). */
  #reads: Array<{ key: string; resolve: (json: string | null) => void; reject: (err: unknown) => void }> = [];

  constructor(options: { redis: RedisHandle; clock: Clock; logger: Logger; cacheTtlMs: number }) {
    this.#redis = options.redis;
    this.#clock = options.clock;
    this.#logger = options.logger;
    this.#ttlMs = options.cacheTtlMs;
    this.#channel = options.redis.key('keys', 'invalidate');
    const sub = options.redis.subscriber();
    sub.on('message', (channel: string, message: string) => {
      if (channel !== this.#channel) return;
      if (message.startsWith(TENANT_MESSAGE)) {
        this.#tenantGeneration++;
        this.#tenantCache.delete(message.slice(TENANT_MESSAGE.length));
      } else this.#cache.delete(message);
    });
    // Reconnecting resubscribes (ioredis); drop the caches then, since invalidations may have been missed.
    sub.on('ready', () => {
      this.#cache.clear();
      this.#tenantGeneration++;
      this.#tenantCache.clear();
    });
    void sub
      .subscribe(this.#channel)
      .catch((err: unknown) => this.#logger.warn({ err }, 'key invalidation subscribe failed'));
    this.#timer = setInterval(() => void this.#flushTouches(), TOUCH_FLUSH_MS);
    this.#timer.unref();
  }

  #k(...parts: string[]): string {
    return this.#redis.key('{keys}', ...parts);
  }

  insert(record: KeyRecord): Promise<void> {
    return this.#redis.run(async () => {
      const json = JSON.stringify(record);
      const score = Date.parse(record.createdAt);
      const m = this.#redis.client.multi();
      m.set(this.#k('rec', record.id), json);
      m.set(this.#k('hash', record.hash), json);
      m.zadd(this.#k('all'), score, record.id);
      if (record.ownerId !== null) m.zadd(this.#k('owner', record.ownerId), score, record.id);
      if (record.tenantId !== null) m.zadd(this.#k('tenant', record.tenantId), score, record.id);
      await exec(m);
      this.#cache.delete(record.hash);
    });
  }

  get(id: string): Promise<KeyRecord | undefined> {
    return this.#redis.run(async () => {
      const [json, used] = await Promise.all([
        this.#redis.client.get(this.#k('rec', id)),
        this.#redis.client.hget(this.#k('used'), id),
      ]);
      if (json === null) return undefined;
      return withLastUsed(JSON.parse(json) as KeyRecord, used, this.#touched.get(id));
    });
  }

  findByHash(hash: string): KeyRecord | undefined | Promise<KeyRecord | undefined> {
    const now = this.#clock.now();
    const cached = this.#cache.get(hash);
    if (cached !== undefined && now - cached.at < this.#ttlMs) return cached.record ?? undefined;
    if (!this.#redis.available) {
      // Still connecting at start: wait for the connection (bounded) rather than refuse.
      if (this.#redis.state === 'connecting')
        return this.#redis.whenReady().then(() => this.findByHash(hash));
      if (cached !== undefined && now - cached.at < this.#ttlMs + STALE_GRACE_MS)
        return cached.record ?? undefined;
      throw new Problem('service-unavailable', {
        detail: 'The key store is unavailable.',
        headers: { 'retry-after': '1' },
      });
    }
    // One Redis GET per hash at a time, however many requests carry it.
    let pending = this.#pending.get(hash);
    if (pending === undefined) {
      pending = this.#load(hash, now, cached).finally(() => this.#pending.delete(hash));
      this.#pending.set(hash, pending);
    }
    return pending;
  }

  async #load(hash: string, now: number, stale: Cached | undefined): Promise<KeyRecord | undefined> {
    let json: string | null;
    try {
      json = await this.#read(this.#k('hash', hash));
    } catch (err) {
      this.#redis.recordError();
      if (stale !== undefined && now - stale.at < this.#ttlMs + STALE_GRACE_MS)
        return stale.record ?? undefined;
      throw new Problem('service-unavailable', {
        detail: 'The key store is unavailable.',
        headers: { 'retry-after': '1' },
        cause: err,
      });
    }
    const record = json === null ? null : (JSON.parse(json) as KeyRecord);
    if (this.#cache.size >= CACHE_MAX) this.#cache.delete(this.#cache.keys().next().value!);
    this.#cache.set(hash, { record, at: now });
    return record ?? undefined;
  }

  /**
   * Lookups of different keys in the same event-loop turn share one MGET (all under the `{keys}`
   * tag: one slot): with many distinct keys, records expiring from the cache cost a fraction of a
   * command per request, not a GET each.
   */
  #read(key: string): Promise<string | null> {
    return new Promise((resolve, reject) => {
      if (this.#reads.push({ key, resolve, reject }) > 1) return;
      setImmediate(() => {
        const waiting = this.#reads;
        this.#reads = [];
        for (let i = 0; i < waiting.length; i += LOOKUP_BATCH_MAX) {
          const part = waiting.slice(i, i + LOOKUP_BATCH_MAX);
          this.#redis.client.mget(part.map((w) => w.key)).then(
            (values) => part.forEach((w, j) => w.resolve(values[j] ?? null)),
            (err: unknown) => part.forEach((w) => w.reject(err)),
          );
        }
      });
    });
  }

  list(query: KeyListQuery): Promise<KeyPage> {
    return this.#redis.run(async () => {
      const set =
        query.ownerId !== undefined
          ? this.#k('owner', query.ownerId)
          : query.tenantId !== undefined
            ? this.#k('tenant', query.tenantId)
            : this.#k('all');
      const cursor = query.cursor === undefined ? undefined : decodeCursor(query.cursor);
      const max = cursor === undefined ? '+inf' : String(Date.parse(cursor.createdAt));
      const out: KeyRecord[] = [];
      let offset = 0;
      // Page through the sorted set by score; records are re-filtered (tenant with owner) and re-sorted by id within a score.
      for (;;) {
        const ids = await this.#redis.client.zrevrangebyscore(set, max, '-inf', 'LIMIT', offset, 200);
        if (ids.length === 0) break;
        offset += ids.length;
        const [jsons, used] = await Promise.all([
          this.#redis.client.mget(ids.map((id) => this.#k('rec', id))),
          this.#redis.client.hmget(this.#k('used'), ...ids),
        ]);
        jsons.forEach((json, i) => {
          if (json === null) return;
          const r = withLastUsed(JSON.parse(json) as KeyRecord, used[i] ?? null, this.#touched.get(ids[i]!));
          if (query.tenantId !== undefined && r.tenantId !== query.tenantId) return;
          if (!ownedAs(r, query)) return;
          if (cursor !== undefined && !afterCursor(r, cursor)) return;
          out.push(r);
        });
        if (out.length > query.limit) break;
      }
      out.sort(compareKeys);
      const items = out.slice(0, query.limit);
      const last = items.at(-1);
      return { items, nextCursor: out.length > query.limit && last ? encodeCursor(last) : null };
    });
  }

  replace(record: KeyRecord): Promise<void> {
    return this.#redis.run(async () => {
      const previous = await this.get(record.id);
      const json = JSON.stringify(record);
      const score = Date.parse(record.createdAt);
      const m = this.#redis.client.multi();
      m.set(this.#k('rec', record.id), json);
      m.set(this.#k('hash', record.hash), json);
      if (previous && previous.ownerId !== record.ownerId && previous.ownerId !== null)
        m.zrem(this.#k('owner', previous.ownerId), record.id);
      if (previous && previous.tenantId !== record.tenantId && previous.tenantId !== null)
        m.zrem(this.#k('tenant', previous.tenantId), record.id);
      if (record.ownerId !== null) m.zadd(this.#k('owner', record.ownerId), score, record.id);
      if (record.tenantId !== null) m.zadd(this.#k('tenant', record.tenantId), score, record.id);
      m.publish(this.#channel, record.hash);
      await exec(m);
      this.#cache.delete(record.hash);
    });
  }

  delete(id: string): Promise<KeyRecord | undefined> {
    return this.#redis.run(async () => {
      const record = await this.get(id);
      if (record === undefined) return undefined;
      const m = this.#redis.client.multi();
      m.del(this.#k('rec', id), this.#k('hash', record.hash));
      m.zrem(this.#k('all'), id);
      if (record.ownerId !== null) m.zrem(this.#k('owner', record.ownerId), id);
      if (record.tenantId !== null) m.zrem(this.#k('tenant', record.tenantId), id);
      m.hdel(this.#k('used'), id);
      m.publish(this.#channel, record.hash);
      await exec(m);
      this.#cache.delete(record.hash);
      this.#touched.delete(id);
      return record;
    });
  }

  /** `revoked`: a list of their views' JSON, newest first, trimmed to `REVOKED_KEPT` in the same MULTI. */
  keepRevoked(entry: RevokedKey): Promise<void> {
    return this.#redis.run(async () => {
      const m = this.#redis.client.multi();
      m.lpush(this.#k('revoked'), JSON.stringify(entry));
      m.ltrim(this.#k('revoked'), 0, REVOKED_KEPT - 1);
      await exec(m);
    });
  }

  listRevoked(query: Pick<KeyListQuery, 'ownerId' | 'tenantId' | 'limit'>): Promise<RevokedKey[]> {
    return this.#redis.run(async () => {
      const all = await this.#redis.client.lrange(this.#k('revoked'), 0, REVOKED_KEPT - 1);
      const out: RevokedKey[] = [];
      for (const json of all) {
        const r = JSON.parse(json) as RevokedKey;
        if (revokedMatches(r, query)) out.push(r);
        if (out.length >= query.limit) break;
      }
      return out;
    });
  }

  touch(id: string, at: number): void {
    this.#touched.set(id, at);
  }

  async countActive(
    ownerId: string,
    now: number,
    ownerIssuers?: ReadonlyArray<string | null>,
  ): Promise<number> {
    const page = await this.list({ ownerId, ownerIssuers, limit: 10_000 });
    return page.items.filter((r) => r.enabled && (r.expiresAt === null || Date.parse(r.expiresAt) > now))
      .length;
  }

  /** The in-process mutex first (no self-contention), then `SET NX PX` on Redis for the other instances. */
  withOwnerLock<T>(ownerId: string, fn: () => Promise<T>): Promise<T> {
    return this.#owners.run(ownerId, async () => {
      const key = this.#k('lock', 'owner', ownerId);
      const token = randomBytes(16).toString('hex');
      const deadline = performance.now() + OWNER_LOCK_WAIT_MS;
      const acquire = () =>
        this.#redis.run(() => this.#redis.client.set(key, token, 'PX', OWNER_LOCK_TTL_MS, 'NX'));
      while ((await acquire()) !== 'OK') {
        if (performance.now() > deadline)
          throw new Problem('service-unavailable', {
            detail: 'Another change to these keys is in progress; try again.',
            headers: { 'retry-after': '1' },
          });
        await new Promise((r) => setTimeout(r, 20));
      }
      try {
        return await fn();
      } finally {
        await this.#redis.client
          .eval(UNLOCK_LUA, 1, key, token)
          .catch((err: unknown) => this.#logger.warn({ err }, 'owner lock release failed; it expires'));
      }
    });
  }

  getTenant(id: string): Promise<TenantRecord | undefined> {
    return this.#redis.run(async () => {
      const json = await this.#redis.client.get(this.#k('tenantrec', id));
      return json === null ? undefined : (JSON.parse(json) as TenantRecord);
    });
  }

  putTenant(record: TenantRecord): Promise<void> {
    return this.#redis.run(async () => {
      const m = this.#redis.client.multi();
      m.set(this.#k('tenantrec', record.id), JSON.stringify(record));
      m.publish(this.#channel, TENANT_MESSAGE + record.id);
      await exec(m);
      this.#tenantGeneration++;
      this.#tenantCache.delete(record.id);
    });
  }

  tenantPlan(id: string): string | null | Promise<string | null> {
    const now = this.#clock.now();
    const cached = this.#tenantCache.get(id);
    if (cached !== undefined && now - cached.at < this.#ttlMs) return cached.plan;
    if (!this.#redis.available) {
      if (this.#redis.state === 'connecting') return this.#redis.whenReady().then(() => this.tenantPlan(id));
      if (cached !== undefined && now - cached.at < this.#ttlMs + STALE_GRACE_MS) return cached.plan;
      throw new Problem('service-unavailable', {
        detail: 'The key store is unavailable.',
        headers: { 'retry-after': '1' },
      });
    }
    let pending = this.#tenantPending.get(id);
    if (pending === undefined) {
      pending = this.#loadTenant(id, now, cached).finally(() => this.#tenantPending.delete(id));
      this.#tenantPending.set(id, pending);
    }
    return pending;
  }

  async #loadTenant(id: string, now: number, stale: CachedTenant | undefined): Promise<string | null> {
    const generation = this.#tenantGeneration;
    let json: string | null;
    try {
      json = await this.#redis.client.get(this.#k('tenantrec', id));
    } catch (err) {
      this.#redis.recordError();
      if (stale !== undefined && now - stale.at < this.#ttlMs + STALE_GRACE_MS) return stale.plan;
      throw new Problem('service-unavailable', {
        detail: 'The key store is unavailable.',
        headers: { 'retry-after': '1' },
        cause: err,
      });
    }
    const plan = json === null ? null : (JSON.parse(json) as TenantRecord).plan;
    if (generation !== this.#tenantGeneration) return plan;
    if (this.#tenantCache.size >= CACHE_MAX) this.#tenantCache.delete(this.#tenantCache.keys().next().value!);
    this.#tenantCache.set(id, { plan, at: now });
    return plan;
  }

  async #flushTouches(): Promise<void> {
    if (this.#touched.size === 0 || !this.#redis.ready) return;
    const batch = [...this.#touched];
    this.#touched.clear();
    try {
      await this.#redis.client.hset(
        this.#k('used'),
        Object.fromEntries(batch.map(([id, at]) => [id, String(at)])),
      );
    } catch (err) {
      this.#redis.recordError(false);
      this.#logger.debug({ err }, 'lastUsedAt flush failed; kept for the next one');
      for (const [id, at] of batch) if (!this.#touched.has(id)) this.#touched.set(id, at);
    }
  }

  async close(): Promise<void> {
    clearInterval(this.#timer);
    await this.#flushTouches();
  }
}

function withLastUsed(r: KeyRecord, stored: string | null, local: number | undefined): KeyRecord {
  const at = Math.max(stored === null ? 0 : Number(stored), local ?? 0);
  if (at > 0) r.lastUsedAt = new Date(at).toISOString();
  return r;
}

async function exec(m: { exec(): Promise<Array<[Error | null, unknown]> | null> }): Promise<void> {
  const results = await m.exec();
  const failed = results?.find(([err]) => err !== null);
  if (failed) throw failed[0]!;
}
