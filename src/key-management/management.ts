import type { Clock } from '../core/clock.js';
import type { Plan, RateLimitRule } from '../core/identity.js';
import { Problem } from '../problems/problem.js';
import { noEvents, type EventSink, type EventType } from '../core/events.js';
import { needOf, type CounterSpec, type CounterStore } from '../policies/rate-limit/counters.js';
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
  /** Unkey's verify shape (SPEC §10): the key's name, whether it is enabled, its environment. */
  name: string | null;
  enabled: boolean | null;
  environment: 'live' | 'test' | null;
  /** The limits asked for in `ratelimits`, each after this verification. */
  ratelimits?: Array<{ name: string; limit: number; remaining: number; reset: number }>;
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

  /**
   * What the gateway would say about `key` now (SPEC §6 codes, §10 additions). Without `charge`
   * nothing is counted; with it the verification is counted like a proxied request — the same
   * counters (the rate-limit stage's keys and store), all or nothing: the key's rate limits (those
   * named in `ratelimits`, else every one a key alone determines), its plan quota (1 unit) and its
   * `remaining` uses.
   */
  async verify(key: string, options: VerifyOptions = {}): Promise<VerifyResult> {
    const scopes = options.scopes ?? [];
    const record = await this.keys.find(key);
    if (record === undefined) return result('NOT_FOUND', undefined, null, null);
    const planName = await this.keys.planOf(record);
    const now = this.#clock.now();
    const plans = this.#plans();
    const plan = planName !== null && Object.hasOwn(plans, planName) ? plans[planName] : undefined;
    const limits = this.#limitsOf(record, planName, plan, options.ratelimits, now);
    let remaining = await this.remainingOf(record);
    let code: VerifyCode = 'VALID';
    if (!record.enabled) code = 'DISABLED';
    else if (record.expiresAt !== null && Date.parse(record.expiresAt) <= now) code = 'EXPIRED';
    else if (planName !== null && (plan === undefined || !plan.apiAccess)) code = 'FORBIDDEN';
    else if (scopes.some((s) => !record.scopes.includes(s))) code = 'INSUFFICIENT_PERMISSIONS';
    else if (remaining === 0) code = 'USAGE_EXCEEDED';
    let used: number[] = [];
    if (code === 'VALID') {
      const holder = quotaHolder(plan?.quotaBy, record.id, record.tenantId, record);
      const quota =
        plan?.quota === undefined ? undefined : quotaCounter(plan.quota, holder.subject, holder.by, 1, now);
      const specs: CounterSpec[] = limits.map((l) => l.spec);
      if (quota !== undefined) specs.push(quota);
      if (options.charge === true && record.remaining !== null)
        specs.push(remainingSpec(usesIdOf(record), record.remaining));
      if (options.charge === true) {
        const charged =
          specs.length === 0 ? { ok: true as const, used: [] } : await this.#counters.consume(specs);
        used = charged.used;
        if (!charged.ok) {
          // The store reports the first counter without room; a rate limit names the code.
          const failed = specs[charged.failed]!;
          code = failed.kind === 'rate' ? 'RATE_LIMITED' : 'USAGE_EXCEEDED';
        } else {
          this.keys.store.touch(record.id, now);
          if (record.remaining !== null) remaining = Math.max(0, record.remaining - used.at(-1)!);
        }
      } else {
        used = specs.length === 0 ? [] : await this.#counters.peek(specs);
        // As the rate-limit stage decides: a shadow limit never refuses; a metered one refuses
        // when already at or over its limit (it needs 1 free).
        const full = (i: number) => {
          const s = specs[i]!;
          if (s.soft === true) return false;
          return (used[i] ?? 0) + (limits[i]?.metered === true ? needOf(s) : s.cost) > s.limit;
        };
        if (quota !== undefined && full(limits.length)) code = 'USAGE_EXCEEDED';
        else if (limits.some((_l, i) => full(i))) code = 'RATE_LIMITED';
      }
    }
    const out = result(code, record, remaining, planName);
    if (options.ratelimits !== undefined)
      out.ratelimits = limits.map((l, i) => ({
        name: l.name,
        limit: l.spec.limit,
        remaining: Math.max(0, l.spec.limit - (used[i] ?? 0)),
        reset: l.resetAt,
      }));
    return out;
  }

  /**
   * The key's rate limits as the rate-limit stage applies them (its plan's, each replaced by the
   * key's own limit of the same name, and the key's own), as counters: those named in `requested`
   * (with their cost), else every one that a key alone determines (by key, subject or tenant).
   */
  #limitsOf(
    record: KeyRecord,
    planName: string | null,
    plan: Plan | undefined,
    requested: VerifyOptions['ratelimits'],
    now: number,
  ): Array<{ name: string; spec: CounterSpec; resetAt: number; metered: boolean }> {
    const own = record.rateLimits ?? [];
    const effective: Array<{ scope: string; rl: RateLimitRule }> = [
      ...(plan?.rateLimits ?? [])
        .filter((rl) => !own.some((k) => k.name === rl.name))
        .map((rl) => ({ scope: `plan:${planName}`, rl })),
      ...own.map((rl) => ({ scope: `key:${record.id}`, rl })),
    ];
    const subjectOf = (rl: RateLimitRule): string | undefined => {
      const subject = record.ownerId ?? record.id;
      if (rl.by === 'key') return record.id;
      if (rl.by === 'subject') return subject;
      if (rl.by === 'tenant') return record.tenantId ?? subject;
      return undefined; // by ip, route or global: a verification has no request to read it from
    };
    // A metered limit's units are the meter's (tokens…): a verification charges them only when it
    // names a cost; by default it checks (cost 0), as the stage does before the response.
    const counter = (e: { scope: string; rl: RateLimitRule }, cost: number | undefined) => {
      const { spec, resetAt } = rateCounter(e.scope, e.rl, subjectOf(e.rl)!, now);
      const metered = e.rl.meter !== undefined;
      return {
        name: e.rl.name,
        spec: { ...spec, cost: cost ?? (metered ? 0 : e.rl.cost) },
        resetAt,
        metered,
      };
    };
    if (requested === undefined)
      return effective.filter((e) => subjectOf(e.rl) !== undefined).map((e) => counter(e, undefined));
    const errors: Array<{ pointer: string; message: string }> = [];
    const out = requested.flatMap((want, i) => {
      const e = effective.find((x) => x.rl.name === want.name);
      if (e === undefined) {
        errors.push({
          pointer: `/ratelimits/${i}/name`,
          message: 'is not a rate limit of this key or its plan',
        });
        return [];
      }
      if (subjectOf(e.rl) === undefined) {
        errors.push({
          pointer: `/ratelimits/${i}/name`,
          message: `counts by ${e.rl.by}, which a verification has no request to read from`,
        });
        return [];
      }
      return [counter(e, want.cost)];
    });
    if (errors.length > 0)
      throw new Problem('validation-failed', {
        detail: 'The request body is invalid.',
        extensions: { errors },
      });
    return out;
  }
}

export interface VerifyOptions {
  /** Scopes the caller needs. */
  scopes?: readonly string[] | undefined;
  /** Limits to check by name, with a cost each (default the limit's). */
  ratelimits?: ReadonlyArray<{ name: string; cost?: number | undefined }> | undefined;
  /** Count the verification as a request would. */
  charge?: boolean | undefined;
}

function result(
  code: VerifyCode,
  r: KeyRecord | undefined,
  remaining: number | null,
  plan: string | null,
): VerifyResult {
  return {
    valid: code === 'VALID',
    code,
    keyId: r?.id ?? null,
    ownerId: r?.ownerId ?? null,
    tenantId: r?.tenantId ?? null,
    scopes: r?.scopes ?? [],
    plan,
    expiresAt: r?.expiresAt ?? null,
    remaining,
    meta: r?.meta ?? {},
    name: r?.name ?? null,
    enabled: r?.enabled ?? null,
    environment: r?.environment ?? null,
  };
}
