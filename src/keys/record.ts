import type { RateLimitRule } from '../core/identity.js';
import { maskKey, type KeyEnvironment } from './format.js';

/** An API key as stored (SPEC §5). The plaintext key is never stored; only its SHA-256. */
export interface KeyRecord {
  id: string;
  name: string;
  ownerId: string | null;
  /**
   * The JWT issuer `ownerId` is a subject of: set on keys a signed-in user made in self-service,
   * which belong to issuer + subject (SPEC §9). Absent or null on keys from the admin API or CLI
   * without one, and on self-service keys made before version 2 (see `ownerIssuersOf`).
   */
  ownerIssuer?: string | null;
  tenantId: string | null;
  scopes: string[];
  plan: string | null;
  enabled: boolean;
  /** ISO 8601; null for no expiry. */
  expiresAt: string | null;
  /** Uses left; null for unlimited. The live count is kept by the quota mechanism. */
  remaining: number | null;
  meta: Record<string, unknown>;
  /** The key's own rate limits, on top of its plan's. */
  rateLimits: RateLimitRule[] | null;
  createdAt: string;
  lastUsedAt: string | null;
  environment: KeyEnvironment;
  prefix: string;
  last4: string;
  /** SHA-256 (hex) of the key: how it is looked up. Internal. */
  hash: string;
  /** The HMAC signing secret, sealed with AES-256-GCM (`SecretBox`). Internal. */
  signingSecret: string | null;
  /** When this key replaced another by rotation, that key's id. */
  rotatedFrom: string | null;
  /**
   * The key whose remaining-uses counter this one draws on: the first key of a rotation chain, so
   * that during a grace period the old and the new key share one allowance. Absent: its own.
   * Internal.
   */
  usesOf?: string | null;
  /** The key that replaced this one by rotation (it is in, or past, its grace period). Internal. */
  rotatedTo?: string | null;
  /** Made by its owner through self-service (its quota counts per owner by default). Internal. */
  selfService?: boolean;
}

/** The id of the remaining-uses counter a key draws on. */
export function usesIdOf(r: KeyRecord): string {
  return r.usesOf ?? r.id;
}

/** What listing and the admin API show: never the hash, the secret or the plaintext. */
export type KeyView = Omit<
  KeyRecord,
  'environment' | 'prefix' | 'last4' | 'hash' | 'signingSecret' | 'usesOf' | 'rotatedTo' | 'selfService'
> & {
  maskedKey: string;
  hmac: boolean;
  environment: KeyEnvironment;
};

export function keyView(r: KeyRecord, remaining: number | null = r.remaining): KeyView {
  return {
    id: r.id,
    name: r.name,
    maskedKey: maskKey(r.prefix, r.environment, r.last4),
    ownerId: r.ownerId,
    ownerIssuer: r.ownerIssuer ?? null,
    tenantId: r.tenantId,
    scopes: r.scopes,
    plan: r.plan,
    enabled: r.enabled,
    expiresAt: r.expiresAt,
    remaining,
    meta: r.meta,
    rateLimits: r.rateLimits,
    createdAt: r.createdAt,
    lastUsedAt: r.lastUsedAt,
    hmac: r.signingSecret !== null,
    environment: r.environment,
    rotatedFrom: r.rotatedFrom,
  };
}

/** What is kept of a revoked key (its view: never a hash or secret), for the console's filter. */
export type RevokedKey = KeyView & { revokedAt: string };

/** Revoked keys kept for listing, newest first; older ones are forgotten. */
export const REVOKED_KEPT = 1000;

/** Whether a revoked key passes the owner and tenant filters of a listing. */
export function revokedMatches(r: RevokedKey, query: Pick<KeyListQuery, 'ownerId' | 'tenantId'>): boolean {
  return (
    (query.ownerId === undefined || r.ownerId === query.ownerId) &&
    (query.tenantId === undefined || r.tenantId === query.tenantId)
  );
}

/**
 * A tenant's settings (SPEC §10): its plan, which every key of the tenant without a plan of its
 * own follows. A tenant exists as far as the store knows once a plan was set for it.
 */
export interface TenantRecord {
  id: string;
  /** The plan of the tenant's keys that have none of their own; null: none. */
  plan: string | null;
  /** ISO 8601: when the plan was last set. */
  updatedAt: string;
}

export interface KeyListQuery {
  ownerId?: string | undefined;
  /** Only keys whose owner issuer is one of these (`null`: keys without one). */
  ownerIssuers?: ReadonlyArray<string | null> | undefined;
  tenantId?: string | undefined;
  limit: number;
  /** Opaque: `nextCursor` of the previous page. */
  cursor?: string | undefined;
}

export interface KeyPage {
  items: KeyRecord[];
  nextCursor: string | null;
}

/** Whether `r` passes the owner filters of `query` (`ownerId` and `ownerIssuers`). */
export function ownedAs(r: KeyRecord, query: Pick<KeyListQuery, 'ownerId' | 'ownerIssuers'>): boolean {
  if (query.ownerId !== undefined && r.ownerId !== query.ownerId) return false;
  return query.ownerIssuers === undefined || query.ownerIssuers.includes(r.ownerIssuer ?? null);
}

/** Newest first: by creation time, then id. */
export function compareKeys(a: KeyRecord, b: KeyRecord): number {
  if (a.createdAt !== b.createdAt) return a.createdAt < b.createdAt ? 1 : -1;
  return a.id < b.id ? 1 : a.id > b.id ? -1 : 0;
}

/** A page cursor is the sort position of the last item: `<createdAt>|<id>` in base64url. */
export function encodeCursor(r: KeyRecord): string {
  return Buffer.from(`${r.createdAt}|${r.id}`).toString('base64url');
}

export function decodeCursor(cursor: string): { createdAt: string; id: string } | undefined {
  const text = Buffer.from(cursor, 'base64url').toString('utf8');
  const bar = text.lastIndexOf('|');
  if (bar <= 0) return undefined;
  const createdAt = text.slice(0, bar);
  const id = text.slice(bar + 1);
  return Number.isNaN(Date.parse(createdAt)) || id === '' ? undefined : { createdAt, id };
}

/** Whether `r` sorts after the cursor position (is on a later page). */
export function afterCursor(r: KeyRecord, c: { createdAt: string; id: string }): boolean {
  return r.createdAt < c.createdAt || (r.createdAt === c.createdAt && r.id < c.id);
}

/**
 * Where key records live. Two twins pass one contract suite: `MemoryKeyStore` (one instance) and
 * `RedisKeyStore` (shared; revocations reach every instance at once through pub/sub).
 * Key creation, rotation and the rules around them live in `KeyService`, above both.
 */
export interface KeyStore {
  readonly kind: 'memory' | 'redis';
  insert(record: KeyRecord): Promise<void>;
  get(id: string): Promise<KeyRecord | undefined>;
  /**
   * The hot path of every API-key request. May answer synchronously (memory, or a cached
   * record) so a request that needs no I/O allocates no promise.
   */
  findByHash(hash: string): KeyRecord | undefined | Promise<KeyRecord | undefined>;
  list(query: KeyListQuery): Promise<KeyPage>;
  /** Stores a changed record (same id and hash). */
  replace(record: KeyRecord): Promise<void>;
  /** Removes the record; resolves with it, or undefined when there was none. */
  delete(id: string): Promise<KeyRecord | undefined>;
  /** Remembers a revoked key (the newest `REVOKED_KEPT`, shared across instances on Redis). */
  keepRevoked(entry: RevokedKey): Promise<void>;
  /** Revoked keys, newest first, filtered by owner and tenant. */
  listRevoked(query: Pick<KeyListQuery, 'ownerId' | 'tenantId' | 'limit'>): Promise<RevokedKey[]>;
  /** Records a use; written in batches, never once per request. */
  touch(id: string, at: number): void;
  /** Active (enabled, unexpired) keys of one owner (of one of `ownerIssuers`, when given). */
  countActive(ownerId: string, now: number, ownerIssuers?: ReadonlyArray<string | null>): Promise<number>;
  /**
   * Runs `fn` while no other call for the same owner runs — in this process and, for the Redis
   * store, on every instance — so a check-then-create (the self-service cap) cannot be raced.
   */
  withOwnerLock<T>(ownerId: string, fn: () => Promise<T>): Promise<T>;
  /** The tenant's settings, or undefined when none were ever set. */
  getTenant(id: string): Promise<TenantRecord | undefined>;
  /** Stores a tenant's settings; every instance sees them at once (the Redis store publishes it). */
  putTenant(record: TenantRecord): Promise<void>;
  /**
   * The hot path: the plan of a tenant (null: none set), for a key without a plan of its own. May
   * answer synchronously (memory, or cached as key records are), so a request allocates no promise.
   */
  tenantPlan(id: string): string | null | Promise<string | null>;
  close(): Promise<void>;
}

/** Serialises async work per key within this process (a promise chain per key). */
export class KeyedMutex {
  readonly #tails = new Map<string, Promise<unknown>>();

  run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.#tails.get(key) ?? Promise.resolve();
    const result = previous.then(fn, fn);
    const tail = result.then(
      () => undefined,
      () => undefined,
    );
    this.#tails.set(key, tail);
    void tail.then(() => {
      if (this.#tails.get(key) === tail) this.#tails.delete(key);
    });
    return result;
  }
}
