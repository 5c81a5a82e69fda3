import type { Clock } from '../core/clock.js';
import type { RateLimitRule } from '../core/identity.js';
import { Problem } from '../problems/problem.js';
import { generateKey, newKeyId, parseKey, randomBase62, type KeyEnvironment } from './format.js';
import { hashKey, sameHash } from './hash.js';
import {
  keyView,
  usesIdOf,
  type KeyListQuery,
  type KeyPage,
  type KeyRecord,
  type KeyStore,
  type TenantRecord,
} from './record.js';
import type { SecretBox } from './secret-box.js';

export interface CreateKeyInput {
  name: string;
  ownerId?: string | null | undefined;
  /** The JWT issuer of the owner (self-service keys). */
  ownerIssuer?: string | null | undefined;
  tenantId?: string | null | undefined;
  scopes?: string[] | undefined;
  plan?: string | null | undefined;
  enabled?: boolean | undefined;
  expiresAt?: string | null | undefined;
  remaining?: number | null | undefined;
  meta?: Record<string, unknown> | undefined;
  rateLimits?: RateLimitRule[] | null | undefined;
  /** Also make an HMAC signing secret (returned once). */
  hmac?: boolean | undefined;
  environment?: KeyEnvironment | undefined;
  /** Made by its owner through self-service (never from an admin or API body). */
  selfService?: boolean | undefined;
}

export type KeyPatch = Partial<
  Pick<
    KeyRecord,
    'name' | 'ownerIssuer' | 'scopes' | 'plan' | 'enabled' | 'expiresAt' | 'remaining' | 'meta' | 'rateLimits'
  >
>;

export interface CreatedKey {
  record: KeyRecord;
  /** The plaintext key: shown once, never stored. */
  key: string;
  /** The signing secret, when `hmac: true`: shown once. */
  signingSecret?: string;
}

/**
 * Key management over a `KeyStore`: creation (plaintext returned once, stored as SHA-256),
 * updates, revocation, rotation with a grace period, and reading back a sealed signing secret.
 * The same rules whichever store holds the records.
 */
export class KeyService {
  readonly store: KeyStore;
  readonly prefix: string;
  readonly #box: SecretBox;
  readonly #clock: Clock;
  readonly #secrets = new Map<string, string>();
  readonly #throwawaySealing: boolean;
  /** Called when `remaining` is set by an admin: the live counter restarts from the new value. */
  onRemainingChanged: ((keyId: string) => void | Promise<void>) | undefined;

  /**
   * `throwawaySealing: false` refuses to create signing secrets when the box has no configured key
   * (`TOLLGATE_SECRET_KEY`): sealed with a per-process key they would be unreadable after a restart
   * and, in Redis, by every other instance. The gateway allows it only in development.
   */
  constructor(options: {
    store: KeyStore;
    prefix: string;
    box: SecretBox;
    clock: Clock;
    throwawaySealing?: boolean;
  }) {
    this.store = options.store;
    this.prefix = options.prefix;
    this.#box = options.box;
    this.#clock = options.clock;
    this.#throwawaySealing = options.throwawaySealing ?? true;
  }

  get secretBox(): SecretBox {
    return this.#box;
  }

  async create(input: CreateKeyInput): Promise<CreatedKey> {
    if (input.hmac === true && this.#box.ephemeral && !this.#throwawaySealing)
      throw new Problem('service-unavailable', {
        detail:
          'Keys with a signing secret cannot be created: the gateway has no TOLLGATE_SECRET_KEY to seal it with.',
        // The catalog gives every 503 a Retry-After; this one lasts until an operator sets the key.
        headers: { 'retry-after': '60' },
      });
    const environment = input.environment ?? 'live';
    const key = generateKey(this.prefix, environment);
    const signingSecret = input.hmac ? `whsec_${randomBase62(40)}` : undefined;
    const record: KeyRecord = {
      id: newKeyId(),
      name: input.name,
      ownerId: input.ownerId ?? null,
      ownerIssuer: input.ownerIssuer ?? null,
      tenantId: input.tenantId ?? null,
      scopes: input.scopes ?? [],
      plan: input.plan ?? null,
      enabled: input.enabled ?? true,
      expiresAt: input.expiresAt ?? null,
      remaining: input.remaining ?? null,
      meta: input.meta ?? {},
      rateLimits: input.rateLimits ?? null,
      createdAt: new Date(this.#clock.now()).toISOString(),
      lastUsedAt: null,
      environment,
      prefix: this.prefix,
      last4: key.slice(-4),
      hash: hashKey(key),
      signingSecret: signingSecret === undefined ? null : this.#box.seal(signingSecret),
      rotatedFrom: null,
    };
    if (input.selfService === true) record.selfService = true;
    await this.store.insert(record);
    return signingSecret === undefined ? { record, key } : { record, key, signingSecret };
  }

  get(id: string): Promise<KeyRecord | undefined> {
    return this.store.get(id);
  }

  list(query: KeyListQuery): Promise<KeyPage> {
    return this.store.list(query);
  }

  async update(id: string, patch: KeyPatch): Promise<KeyRecord | undefined> {
    const record = await this.store.get(id);
    if (record === undefined) return undefined;
    const next: KeyRecord = { ...record, ...stripUndefined(patch) };
    await this.store.replace(next);
    if (patch.remaining !== undefined) await this.onRemainingChanged?.(usesIdOf(next));
    return next;
  }

  async revoke(id: string): Promise<KeyRecord | undefined> {
    const record = await this.store.delete(id);
    if (record === undefined) return undefined;
    this.#secrets.delete(record.id);
    // Remembered for listing (`GET /keys?state=revoked`): the view only, never the hash or secret.
    await this.store.keepRevoked({
      ...keyView(record),
      revokedAt: new Date(this.#clock.now()).toISOString(),
    });
    return record;
  }

  /**
   * A new key with the same attributes (and a new signing secret when the old had one); the old
   * key keeps working until `graceSec` from now (or its own earlier expiry), then expires.
   */
  async rotate(
    id: string,
    graceSec: number,
  ): Promise<{ created: CreatedKey; previous: KeyRecord } | undefined> {
    const old = await this.store.get(id);
    if (old === undefined) return undefined;
    // One successor per key, and none for a key already dead: either would hand out a key the
    // operator did not mean to exist (a second live copy, or one born expired).
    if (old.rotatedTo)
      throw new Problem('conflict', {
        detail: `This key was already rotated (to ${old.rotatedTo}); rotate that one instead.`,
      });
    if (old.expiresAt !== null && Date.parse(old.expiresAt) <= this.#clock.now())
      throw new Problem('conflict', { detail: 'This key has expired; create a new one instead.' });
    const created = await this.create({
      name: old.name,
      ownerId: old.ownerId,
      ownerIssuer: old.ownerIssuer ?? null,
      tenantId: old.tenantId,
      scopes: old.scopes,
      plan: old.plan,
      enabled: old.enabled,
      expiresAt: old.expiresAt,
      // The same allowance, drawn from the same counter (usesOf below): during the grace period
      // the two keys share what is left instead of each having it.
      remaining: old.remaining,
      meta: old.meta,
      rateLimits: old.rateLimits,
      hmac: old.signingSecret !== null,
      environment: old.environment,
      selfService: old.selfService,
    });
    const graceEnd = this.#clock.now() + graceSec * 1000;
    const expiresAt =
      old.expiresAt !== null && Date.parse(old.expiresAt) < graceEnd
        ? old.expiresAt
        : new Date(graceEnd).toISOString();
    const previous: KeyRecord = { ...old, expiresAt, rotatedTo: created.record.id };
    await this.store.replace(previous);
    const record: KeyRecord = { ...created.record, rotatedFrom: old.id, usesOf: usesIdOf(old) };
    await this.store.replace(record);
    return { created: { ...created, record }, previous };
  }

  /**
   * Looks a presented key up: `undefined` when it is malformed, fails its checksum (no store
   * lookup then), or is unknown. The stored hash is compared in constant time.
   */
  find(key: string): KeyRecord | undefined | Promise<KeyRecord | undefined> {
    if (parseKey(key, this.prefix) === undefined) return undefined;
    const hash = hashKey(key);
    const found = this.store.findByHash(hash);
    if (found instanceof Promise)
      return found.then((r) => (r !== undefined && sameHash(r.hash, hash) ? r : undefined));
    return found !== undefined && sameHash(found.hash, hash) ? found : undefined;
  }

  /** A tenant's settings, or undefined when no plan was ever set for it. */
  getTenant(id: string): Promise<TenantRecord | undefined> {
    return this.store.getTenant(id);
  }

  /**
   * Sets the plan of a tenant (null: none): every key of the tenant without a plan of its own
   * follows it at once, on every instance (SPEC §10). The caller checks the plan exists.
   */
  async setTenantPlan(id: string, plan: string | null): Promise<TenantRecord> {
    const record: TenantRecord = { id, plan, updatedAt: new Date(this.#clock.now()).toISOString() };
    await this.store.putTenant(record);
    return record;
  }

  /**
   * The plan a key is on: its own, else its tenant's (null: none). Synchronous when the tenant's
   * plan is cached or not needed.
   */
  planOf(record: Pick<KeyRecord, 'plan' | 'tenantId'>): string | null | Promise<string | null> {
    if (record.plan !== null || record.tenantId === null) return record.plan;
    return this.store.tenantPlan(record.tenantId);
  }

  /** The plaintext signing secret of a key, or undefined when it has none (or it cannot be opened). */
  signingSecretOf(record: Pick<KeyRecord, 'id' | 'signingSecret'>): string | undefined {
    if (record.signingSecret === null) return undefined;
    const cached = this.#secrets.get(record.id);
    if (cached !== undefined) return cached;
    const secret = this.#box.open(record.signingSecret);
    if (secret === undefined)
      throw new Problem('internal-error', {
        detail: 'The signing secret of this key cannot be read.',
        cause: new Error(`signing secret of ${record.id} does not open with TOLLGATE_SECRET_KEY`),
      });
    if (this.#secrets.size > 10_000) this.#secrets.clear();
    this.#secrets.set(record.id, secret);
    return secret;
  }

  close(): Promise<void> {
    return this.store.close();
  }
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
