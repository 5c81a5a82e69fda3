import type { KeyListQuery, KeyPage, KeyRecord, KeyStore, RevokedKey, TenantRecord } from './record.js';
import { REVOKED_KEPT, revokedMatches } from './record.js';
import { KeyedMutex, afterCursor, compareKeys, decodeCursor, encodeCursor, ownedAs } from './record.js';

/** Key records in this process (the default, for a single instance). */
export class MemoryKeyStore implements KeyStore {
  readonly kind = 'memory';
  readonly #byId = new Map<string, KeyRecord>();
  readonly #byHash = new Map<string, KeyRecord>();
  /** Last use per key id, epoch ms: a number per request, turned into ISO text only when read. */
  readonly #lastUsed = new Map<string, number>();
  readonly #owners = new KeyedMutex();
  readonly #tenants = new Map<string, TenantRecord>();
  /** Newest first, at most `REVOKED_KEPT`. */
  readonly #revoked: RevokedKey[] = [];

  insert(record: KeyRecord): Promise<void> {
    const copy = structuredClone(record);
    this.#byId.set(copy.id, copy);
    this.#byHash.set(copy.hash, copy);
    return Promise.resolve();
  }

  get(id: string): Promise<KeyRecord | undefined> {
    const r = this.#byId.get(id);
    return Promise.resolve(r === undefined ? undefined : this.#view(r));
  }

  findByHash(hash: string): KeyRecord | undefined {
    return this.#byHash.get(hash);
  }

  list(query: KeyListQuery): Promise<KeyPage> {
    const cursor = query.cursor === undefined ? undefined : decodeCursor(query.cursor);
    const all = [...this.#byId.values()]
      .filter((r) => ownedAs(r, query) && (query.tenantId === undefined || r.tenantId === query.tenantId))
      .sort(compareKeys)
      .filter((r) => cursor === undefined || afterCursor(r, cursor));
    const items = all.slice(0, query.limit).map((r) => this.#view(r));
    const last = items.at(-1);
    return Promise.resolve({
      items,
      nextCursor: all.length > query.limit && last ? encodeCursor(last) : null,
    });
  }

  replace(record: KeyRecord): Promise<void> {
    return this.insert(record);
  }

  delete(id: string): Promise<KeyRecord | undefined> {
    const r = this.#byId.get(id);
    if (r === undefined) return Promise.resolve(undefined);
    this.#byId.delete(id);
    this.#byHash.delete(r.hash);
    this.#lastUsed.delete(id);
    return Promise.resolve(r);
  }

  keepRevoked(entry: RevokedKey): Promise<void> {
    this.#revoked.unshift(structuredClone(entry));
    if (this.#revoked.length > REVOKED_KEPT) this.#revoked.length = REVOKED_KEPT;
    return Promise.resolve();
  }

  listRevoked(query: Pick<KeyListQuery, 'ownerId' | 'tenantId' | 'limit'>): Promise<RevokedKey[]> {
    const out = this.#revoked.filter((r) => revokedMatches(r, query)).slice(0, query.limit);
    return Promise.resolve(structuredClone(out));
  }

  touch(id: string, at: number): void {
    this.#lastUsed.set(id, at);
  }

  countActive(ownerId: string, now: number, ownerIssuers?: ReadonlyArray<string | null>): Promise<number> {
    let n = 0;
    for (const r of this.#byId.values())
      if (
        ownedAs(r, { ownerId, ownerIssuers }) &&
        r.enabled &&
        (r.expiresAt === null || Date.parse(r.expiresAt) > now)
      )
        n++;
    return Promise.resolve(n);
  }

  withOwnerLock<T>(ownerId: string, fn: () => Promise<T>): Promise<T> {
    return this.#owners.run(ownerId, fn);
  }

  getTenant(id: string): Promise<TenantRecord | undefined> {
    const t = this.#tenants.get(id);
    return Promise.resolve(t === undefined ? undefined : { ...t });
  }

  putTenant(record: TenantRecord): Promise<void> {
    this.#tenants.set(record.id, { ...record });
    return Promise.resolve();
  }

  tenantPlan(id: string): string | null {
    return this.#tenants.get(id)?.plan ?? null;
  }

  #view(r: KeyRecord): KeyRecord {
    const copy = structuredClone(r);
    const used = this.#lastUsed.get(r.id);
    if (used !== undefined) copy.lastUsedAt = new Date(used).toISOString();
    return copy;
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
