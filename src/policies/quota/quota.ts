import type { RequestContext } from '../../core/context.js';
import type { KeyCredential } from '../../core/identity.js';
import { hashTag, type CounterSpec, type CounterStore } from '../rate-limit/counters.js';
import { periodOf } from './period.js';
import type { PlanQuotaConfig } from './schema.js';

/*
 * Quotas and a key's `remaining` uses (SPEC §7): which counter a request draws on, and when the
 * charge stands. They are charged with the request's rate limits, in the same all-or-nothing
 * round trip (the `rate-limit` stage), and given back here when nothing was answered.
 */

/** Whose quota a request is charged to (a plan's `quotaBy`). */
export type QuotaBy = 'credential' | 'tenant' | 'owner';

/**
 * Whose quota counter a credential draws on. `quotaBy` unset: a self-service key's owner (all of
 * one user's keys share one quota, so revoking and re-creating keys cannot reset it), any other
 * credential's own. An owner is issuer + subject (the same `sub` at two issuers is two people); a
 * key without one, and a JWT (whose credential is its subject already), count as the credential.
 */
export function quotaHolder(
  by: QuotaBy | undefined,
  credentialId: string,
  tenant: string | null | undefined,
  key: Pick<KeyCredential, 'ownerId' | 'ownerIssuer' | 'selfService'> | undefined,
): { by: QuotaBy; subject: string } {
  const effective = by ?? (key?.selfService === true ? 'owner' : 'credential');
  if (effective === 'tenant') return { by: 'tenant', subject: tenant ?? credentialId };
  if (effective === 'owner' && typeof key?.ownerId === 'string')
    return {
      by: 'owner',
      subject: typeof key.ownerIssuer === 'string' ? `${key.ownerIssuer}\n${key.ownerId}` : key.ownerId,
    };
  return { by: 'credential', subject: credentialId };
}

/** The counter of a plan quota for one holder in the period `now` falls in, and when it resets. */
export function quotaLimit(
  quota: PlanQuotaConfig,
  subject: string,
  by: QuotaBy,
  cost: number,
  now: number,
): { spec: CounterSpec; resetAt: number | null } {
  const period = periodOf(quota.period, now);
  // Owners have a namespace of their own: an owner id that looks like a key id is another counter.
  const tag = hashTag(`${by === 'tenant' ? 'tenant' : by === 'owner' ? 'owner' : 'key'}:${subject}`);
  return {
    spec: {
      kind: 'quota',
      key: `q:{${tag}}:${quota.period}:${period.id}`,
      tag,
      limit: quota.limit,
      cost,
      // Kept an hour past the period's end (refunds arriving late still find it); lifetime: for ever.
      ttlMs: period.endsAt === null ? 0 : period.endsAt - now + 3_600_000,
      // Memory counters expire through setTimeout, which cannot wait a month (2³¹ ms ≈ 24.8 days):
      // a month's counter is kept (a few bytes per credential and month), a day's expires.
      spanSec: quota.period === 'day' ? 86_400 + 3_600 : 0,
    },
    resetAt: period.endsAt,
  };
}

/** The counter spec of a plan quota (for `/keys/verify`, which looks without charging). */
export function quotaCounter(
  quota: PlanQuotaConfig,
  subject: string,
  by: QuotaBy,
  cost: number,
  now: number,
): CounterSpec {
  return quotaLimit(quota, subject, by, cost, now).spec;
}

/** The counter keys of a key's `remaining` uses (reset when an admin sets `remaining`). */
export function remainingCounter(credentialId: string): { key: string; tag: string } {
  const tag = hashTag(`key:${credentialId}`);
  return { key: `rem:{${tag}}:${credentialId}`, tag };
}

/** The `remaining` counter of a key with `limit` uses, one use per request. */
export function remainingSpec(usesId: string, limit: number): CounterSpec {
  const { key, tag } = remainingCounter(usesId);
  return { kind: 'remaining', key, tag, limit, cost: 1, ttlMs: 0, spanSec: 0 };
}

/**
 * Gives `owed` (quota and `remaining`) back once the response is over, unless the route itself
 * answered: the upstream below 500, or a local (mock) route's own answer below 500 — not the
 * gateway's problems (a bad Idempotency-Key, a conflict) nor a replay. A request the upstream
 * received stays charged when its client hangs up before the answer (else hanging up would be
 * free); with idempotency the answer is awaited, so its status decides.
 */
export function refundUnlessAnswered(
  ctx: RequestContext,
  owed: readonly CounterSpec[],
  counters: CounterStore,
  local: boolean,
): void {
  ctx.onClose((c) => {
    const answered = local
      ? c.res.writableFinished && c.res.statusCode < 500 && c.problem === undefined && !c.idempotentReplay
      : c.upstreamStatus !== undefined
        ? c.upstreamStatus < 500
        : c.upstreamSent && c.problem === undefined;
    if (!answered) void Promise.resolve(counters.refund(owed)).catch(() => undefined);
  });
}
