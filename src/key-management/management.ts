import type { Clock } from '../core/clock.js';
import type { Plan } from '../core/identity.js';
import { noEvents, type EventSink, type EventType } from '../core/events.js';
import type { CounterSpec, CounterStore } from '../policies/rate-limit/counters.js';
import { rateCounter } from '../policies/rate-limit/rate-limit.js';
import { quotaCounter, quotaHolder, remainingSpec } from '../policies/quota/quota.js';
import { keyView, usesIdOf, type KeyRecord, type KeyView } from '../keys/record.js';
import type { CreateKeyInput, KeyPatch, KeyService } from '../keys/service.js';

export type VerifyCode =
  | 'VALID'
  | 'NOT_FOUND'
  | 'DISABLED'
  | 'EXPIRED'
  | 'FORBIDDEN'
  | 'INSUFFICIENT_PERMISSIONS'
  | 'USAGE_EXCEEDED'
  | 'RATE_LIMITED';

export interface VerifyResult {
  valid: boolean;
  code: VerifyCode;
  keyId: string | null;
  ownerId: string | null;
  tenantId: string | null;
  scopes: string[];
  plan: string | null;
  expiresAt: string | null;
  remaining: number | null;
  meta: Record<string, unknown>;
}

/** How long an admin call waits for its key event to be queued durably (Redis slow or down). */
const KEY_EVENT_WAIT_MS = 2_000;

export type CreatedView = KeyView & { key: string; signingSecret?: string };

/**
 * Key management as the admin and self-service APIs see it: views with the live `remaining`
 * count, rotation that carries the count over, and verification with the SPEC's codes (it looks at
 * counters without charging them).
 */
export class KeyManagement {
  readonly keys: KeyService;
  readonly #counters: CounterStore;
  readonly #plans: () => Readonly<Record<string, Plan>>;
  readonly #clock: Clock;
  readonly #events: EventSink;

  constructor(options: {
    keys: KeyService;
    counters: CounterStore;
    plans: () => Readonly<Record<string, Plan>>;
    clock: Clock;
    /** Where key.created, key.updated, key.rotated and key.revoked go (webhooks). */
    events?: EventSink | undefined;
  }) {
    this.keys = options.keys;
    this.#counters = options.counters;
    this.#plans = options.plans;
    this.#clock = options.clock;
    this.#events = options.events ?? noEvents;
  }

  /**
   * Raises a key event and waits (at most `KEY_EVENT_WAIT_MS`) until it is queued durably, so an
   * admin call that answered has its event in the store (a crash right after loses nothing).
   */
  async #raise(type: EventType, keyId: string, data: Record<string, unknown>): Promise<void> {
    if (!this.#events.wants(type)) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.#events.raise({ type, data, orderKey: `key:${keyId}` }),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, KEY_EVENT_WAIT_MS);
        timer.unref();
      }),
    ]);
    clearTimeout(timer);
  }

  /** Uses left now: the record's allowance minus what its counter has used. */
  async remainingOf(record: KeyRecord): Promise<number | null> {
    if (record.remaining === null) return null;
    const [used] = await this.#counters.peek([remainingSpec(usesIdOf(record), record.remaining)]);
    return Math.max(0, record.remaining - (used ?? 0));
  }

  async view(record: KeyRecord): Promise<KeyView> {
    return keyView(record, await this.remainingOf(record));
  }

  async create(input: CreateKeyInput): Promise<CreatedView> {
    const created = await this.keys.create(input);
    const view: CreatedView = { ...keyView(created.record), key: created.key };
    if (created.signingSecret !== undefined) view.signingSecret = created.signingSecret;
    await this.#raise('key.created', created.record.id, { key: keyView(created.record) });
    return view;
  }

  async update(id: string, patch: KeyPatch): Promise<KeyView | undefined> {
    const record = await this.keys.update(id, patch);
    if (record === undefined) return undefined;
    const view = await this.view(record);
    await this.#raise('key.updated', id, { key: view, changed: Object.keys(patch).sort() });
    return view;
  }

  /** Deletes the key (it stops working at once); undefined when there is none. */
  async revoke(id: string): Promise<KeyRecord | undefined> {
    const revoked = await this.keys.revoke(id);
    if (revoked !== undefined) await this.#raise('key.revoked', id, { key: keyView(revoked) });
    return revoked;
  }

  async rotate(
    id: string,
    graceSec: number,
  ): Promise<(CreatedView & { previous: { id: string; expiresAt: string } }) | undefined> {
    const old = await this.keys.get(id);
    if (old === undefined) return undefined;
    const rotated = await this.keys.rotate(id, graceSec);
    if (rotated === undefined) return undefined;
    const { created, previous } = rotated;
    const view: CreatedView & { previous: { id: string; expiresAt: string } } = {
      ...(await this.view(created.record)),
      key: created.key,
      previous: { id: previous.id, expiresAt: previous.expiresAt! },
    };
    if (created.signingSecret !== undefined) view.signingSecret = created.signingSecret;
    // Ordered with the old key's events: a receiver sees the rotation after its updates.
    await this.#raise('key.rotated', id, {
      key: keyView(created.record),
      previous: { id: previous.id, expiresAt: previous.expiresAt },
    });
    return view;
  }

  /** What the gateway would say about `key` now, without charging anything (SPEC §6 codes). */
  async verify(key: string, scopes: readonly string[] = []): Promise<VerifyResult> {
    const record = await this.keys.find(key);
    if (record === undefined) return result('NOT_FOUND', undefined, null);
    const remaining = await this.remainingOf(record);
    const now = this.#clock.now();
    const plans = this.#plans();
    const plan = record.plan !== null && Object.hasOwn(plans, record.plan) ? plans[record.plan] : undefined;
    let code: VerifyCode = 'VALID';
    if (!record.enabled) code = 'DISABLED';
    else if (record.expiresAt !== null && Date.parse(record.expiresAt) <= now) code = 'EXPIRED';
    else if (record.plan !== null && (plan === undefined || !plan.apiAccess)) code = 'FORBIDDEN';
    else if (scopes.some((s) => !record.scopes.includes(s))) code = 'INSUFFICIENT_PERMISSIONS';
    else if (remaining === 0) code = 'USAGE_EXCEEDED';
    else {
      const holder = quotaHolder(plan?.quotaBy, record.id, record.tenantId, record);
      const quota =
        plan?.quota === undefined ? undefined : quotaCounter(plan.quota, holder.subject, holder.by, 1, now);
      // Only limits counted per key can be judged without a request: per-IP or per-route ones cannot.
      const limits: CounterSpec[] = [
        ...(plan?.rateLimits ?? [])
          .filter((rl) => rl.by === 'key')
          .map((rl) => rateCounter(`plan:${record.plan}`, rl, record.id, now).spec),
        ...(record.rateLimits ?? [])
          .filter((rl) => rl.by === 'key')
          .map((rl) => rateCounter(`key:${record.id}`, rl, record.id, now).spec),
      ];
      const specs = quota === undefined ? limits : [quota, ...limits];
      const used = specs.length === 0 ? [] : await this.#counters.peek(specs);
      const full = (i: number) => (used[i] ?? 0) + specs[i]!.cost > specs[i]!.limit;
      if (quota !== undefined && full(0)) code = 'USAGE_EXCEEDED';
      else if (specs.some((s, i) => s.kind === 'rate' && full(i))) code = 'RATE_LIMITED';
    }
    return result(code, record, remaining);
  }
}

function result(code: VerifyCode, r: KeyRecord | undefined, remaining: number | null): VerifyResult {
  return {
    valid: code === 'VALID',
    code,
    keyId: r?.id ?? null,
    ownerId: r?.ownerId ?? null,
    tenantId: r?.tenantId ?? null,
    scopes: r?.scopes ?? [],
    plan: r?.plan ?? null,
    expiresAt: r?.expiresAt ?? null,
    remaining,
    meta: r?.meta ?? {},
  };
}
