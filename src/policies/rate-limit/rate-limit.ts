import { Problem } from '../../problems/problem.js';
import type { Clock } from '../../core/clock.js';
import type { Plan } from '../../core/identity.js';
import type { RequestContext } from '../../core/context.js';
import type { Stage } from '../../core/stage.js';
import type { EventSink } from '../../core/events.js';
import type { PlanQuotaConfig } from '../quota/schema.js';
import {
  quotaHolder,
  quotaLimit,
  refundUnlessAnswered,
  remainingSpec,
  type QuotaBy,
} from '../quota/quota.js';
import { hashTag, type ConsumeResult, type CounterSpec, type CounterStore } from './counters.js';
import type { RateLimitConfig } from './schema.js';

/** A rate-limit policy as applied to one request. */
interface Applied {
  spec: CounterSpec;
  kind: 'rate' | 'quota' | 'remaining';
  name: string;
  limit: number;
  /** Window length (rate) in seconds. */
  windowSec: number;
  /** Epoch ms when this counter resets (null: never). */
  resetAt: number | null;
  /** Quota: whose counter it is (for quota events). */
  holder?: { by: QuotaBy; subject: string };
}

export interface RateLimitStageOptions {
  routeId: string;
  /** The route's own rate limits. */
  rateLimits: readonly RateLimitConfig[];
  /** The route's charge against the plan quota; undefined when the route charges none. */
  quotaCost: number | undefined;
  plans: Readonly<Record<string, Plan>>;
  counters: CounterStore;
  clock: Clock;
  /** True when the route answers locally (mock): quota is owed when the answer is below 500. */
  local: boolean;
  /** A quota for every identity, whatever its plan (the `quota()` middleware). */
  quota?: { config: PlanQuotaConfig; by: QuotaBy | undefined } | undefined;
  /**
   * Quota events (SPEC §11): `quota.threshold` when a charge crosses one of `thresholds` (fractions
   * of the limit), `quota.exhausted` when it reaches the limit (or a charge is refused first).
   * Raised once per holder, period and threshold across instances; never awaited.
   */
  quotaEvents?: { sink: EventSink; thresholds: readonly number[]; exhausted: boolean } | undefined;
}

/** A quota counter's period id, from its key `q:{tag}:<period>:<id>`. */
function periodIdOf(key: string): string {
  return key.slice(key.lastIndexOf(':') + 1);
}

/**
 * Raises the quota events a charge caused: each threshold it crossed (`used - cost < t·limit ≤
 * used`) and the limit reached. The counter is atomic, so across instances only one request sees
 * each crossing; the once-key guards against a refund letting it be crossed again.
 */
function raiseQuotaEvents(
  ev: NonNullable<RateLimitStageOptions['quotaEvents']>,
  ctx: RequestContext,
  a: Applied,
  used: number,
  refused: boolean,
): void {
  const limit = a.limit;
  const before = refused ? used : used - a.spec.cost;
  const holder = a.holder!;
  const base = {
    holder: { by: holder.by, id: holder.subject },
    keyId: ctx.identity?.credentialId ?? null,
    tenantId: ctx.identity?.tenant ?? null,
    period: a.spec.key.split(':').at(-2) ?? null,
    periodId: periodIdOf(a.spec.key),
    limit,
    resetsAt: a.resetAt === null ? null : new Date(a.resetAt).toISOString(),
  };
  // Kept as long as the counter (lifetime quotas: for years).
  const ttlMs = a.spec.ttlMs > 0 ? a.spec.ttlMs : 10 * 365 * 86_400_000;
  const orderKey = `quota:${holder.by}:${holder.subject}`;
  if (!refused)
    for (const t of ev.thresholds) {
      const mark = t * limit;
      if (before < mark && used >= mark)
        void ev.sink.raise({
          type: 'quota.threshold',
          data: { ...base, threshold: t, used },
          orderKey,
          once: { key: `${a.spec.key}:t:${t}`, ttlMs },
        });
    }
  if (ev.exhausted && (refused || (before < limit && used >= limit)))
    void ev.sink.raise({
      type: 'quota.exhausted',
      data: { ...base, used: refused ? before : used },
      orderKey,
      once: { key: `${a.spec.key}:exhausted`, ttlMs },
    });
}

/**
 * Rate limits, quota and the key's `remaining` uses, enforced together so that all of a
 * request's counters take one Redis round trip and are all-or-nothing (a request refused by one
 * limit consumes no other budget).
 *
 * - Rate limits: the route's, the plan's and the key's own (`by`: ip, key, subject, tenant, route,
 *   global; anonymous requests count by client IP), fixed windows aligned to the epoch.
 *   `RateLimit-Policy` and `RateLimit` (IETF httpapi draft) on every response; 429 with
 *   `Retry-After` and `policy`.
 * - Quota and `remaining`: reserved with the request, refunded unless the route answered: the
 *   upstream answered below 500, or the request reached it and the client left before the answer
 *   (the upstream may have acted on it). Refunded for an upstream 5xx, a gateway error, a request
 *   that never reached the upstream, and every refusal after this stage (idempotency conflicts, a
 *   replay). Exhausted: 402.
 */
export function createRateLimitStage(o: RateLimitStageOptions): Stage {
  const policyHeaderCache = new Map<string, string>();
  const routeScope = `route:${o.routeId}`;

  const rateApplied = (ctx: RequestContext, scope: string, rl: RateLimitConfig, now: number): Applied => {
    const id = ctx.identity;
    let subject: string;
    switch (rl.by) {
      case 'ip':
        subject = ctx.clientIp;
        break;
      case 'key':
        subject = id?.credentialId ?? ctx.clientIp;
        break;
      case 'subject':
        subject = id?.subject ?? ctx.clientIp;
        break;
      case 'tenant':
        subject = id === undefined ? ctx.clientIp : (id.tenant ?? id.subject);
        break;
      case 'route':
        subject = o.routeId;
        break;
      case 'global':
        subject = 'global';
        break;
    }
    const { spec, resetAt } = rateCounter(scope, rl, subject, now);
    return { spec, kind: 'rate', name: rl.name, limit: rl.limit, windowSec: rl.windowSec, resetAt };
  };

  const policyHeader = (applied: readonly Applied[], cacheKey: string | undefined): string => {
    if (cacheKey !== undefined) {
      const cached = policyHeaderCache.get(cacheKey);
      if (cached !== undefined) return cached;
    }
    const value = applied
      .filter((a) => a.kind === 'rate')
      .map((a) => `"${a.name}";q=${a.limit};w=${a.windowSec}`)
      .join(', ');
    if (cacheKey !== undefined) policyHeaderCache.set(cacheKey, value);
    return value;
  };

  const decide = (
    ctx: RequestContext,
    applied: Applied[],
    result: ConsumeResult,
    now: number,
    cacheKey: string | undefined,
  ): void => {
    const policies = policyHeader(applied, cacheKey);
    // On a refusal, every counter that has no room (not only the first the store found): the
    // 429 must name the one that blocks longest, or a client waiting out Retry-After is refused again.
    let blocking = -1;
    let quotaBlocking = -1;
    if (!result.ok)
      applied.forEach((a, i) => {
        if (result.used[i]! + a.spec.cost <= a.limit) return;
        if (a.kind !== 'rate') {
          if (quotaBlocking === -1) quotaBlocking = i;
        } else if (blocking === -1 || a.resetAt! > applied[blocking]!.resetAt!) blocking = i;
      });
    if (policies !== '') {
      ctx.setResponseHeader('ratelimit-policy', policies);
      // The policy that refused the request, else the one nearest exhaustion: the fewest requests
      // left, and of those the one that resets last.
      let best = blocking;
      if (best === -1) {
        let bestLeft = Infinity;
        applied.forEach((a, i) => {
          if (a.kind !== 'rate') return;
          const left = Math.max(0, a.limit - result.used[i]!);
          if (left < bestLeft || (left === bestLeft && a.resetAt! > applied[best]!.resetAt!)) {
            bestLeft = left;
            best = i;
          }
        });
      }
      if (best !== -1) {
        const a = applied[best]!;
        const remaining = best === blocking ? 0 : Math.max(0, a.limit - result.used[best]!);
        ctx.setResponseHeader(
          'ratelimit',
          `"${a.name}";r=${remaining};t=${Math.max(0, Math.ceil((a.resetAt! - now) / 1000))}`,
        );
      }
    }
    if (!result.ok) {
      if (blocking !== -1) {
        const a = applied[blocking]!;
        ctx.rateLimitPolicy = a.name;
        const retryAfter = Math.max(1, Math.ceil((a.resetAt! - now) / 1000));
        throw new Problem('rate-limit-exceeded', {
          detail: `The rate limit "${a.name}" (${a.limit} per ${a.windowSec} s) is exhausted; retry in ${retryAfter} s.`,
          extensions: { policy: a.name },
          headers: { 'retry-after': String(retryAfter) },
        });
      }
      const a = applied[quotaBlocking === -1 ? result.failed : quotaBlocking]!;
      const at = applied.indexOf(a);
      if (o.quotaEvents !== undefined && a.kind === 'quota')
        raiseQuotaEvents(o.quotaEvents, ctx, a, result.used[at]!, true);
      throw new Problem('quota-exceeded', {
        detail:
          a.kind === 'quota'
            ? `The plan's quota of ${a.limit} is used up${a.resetAt === null ? '' : ` until ${new Date(a.resetAt).toISOString()}`}.`
            : `This key's ${a.limit} uses are used up.`,
        extensions: {
          limit: a.limit,
          resets_at: a.resetAt === null ? null : new Date(a.resetAt).toISOString(),
        },
      });
    }
    if (o.quotaEvents !== undefined)
      applied.forEach((a, i) => {
        if (a.kind === 'quota') raiseQuotaEvents(o.quotaEvents!, ctx, a, result.used[i]!, false);
      });
    const owed = applied.filter((a) => a.kind !== 'rate').map((a) => a.spec);
    if (owed.length > 0) refundUnlessAnswered(ctx, owed, o.counters, o.local);
  };

  return {
    name: 'rate-limit',
    run(ctx: RequestContext) {
      const id = ctx.identity;
      const planName = id?.plan;
      const plan: Plan | undefined =
        planName !== undefined && Object.hasOwn(o.plans, planName) ? o.plans[planName] : undefined;
      const now = o.clock.now();
      const applied: Applied[] = [];
      for (const rl of o.rateLimits) applied.push(rateApplied(ctx, routeScope, rl, now));
      const own = id?.rateLimits;
      // SPEC §10: a key's own limit named like one of its plan's replaces it (raises or lowers it).
      if (plan !== undefined)
        for (const rl of plan.rateLimits)
          if (own === undefined || !own.some((k) => k.name === rl.name))
            applied.push(rateApplied(ctx, `plan:${planName}`, rl, now));
      if (own !== undefined)
        for (const rl of own) applied.push(rateApplied(ctx, `key:${id!.credentialId}`, rl, now));
      const quota =
        o.quota ?? (plan?.quota === undefined ? undefined : { config: plan.quota, by: plan.quotaBy });
      if (o.quotaCost !== undefined && quota !== undefined && id !== undefined) {
        const holder = quotaHolder(quota.by, id.credentialId, id.tenant, ctx.keyRecord);
        const { spec, resetAt } = quotaLimit(quota.config, holder.subject, holder.by, o.quotaCost, now);
        applied.push({
          spec,
          kind: 'quota',
          name: 'quota',
          limit: spec.limit,
          windowSec: 0,
          resetAt,
          holder,
        });
      }
      if (id?.remaining !== undefined)
        applied.push({
          spec: remainingSpec(id.usesId ?? id.credentialId, id.remaining),
          kind: 'remaining',
          name: 'remaining',
          limit: id.remaining,
          windowSec: 0,
          resetAt: null,
        });
      if (applied.length === 0) return;
      // The policy header depends on the route and the plan only (a key's own limits are rare).
      const cacheKey = own === undefined ? (planName ?? '') : undefined;
      const result = o.counters.consume(applied.map((a) => a.spec));
      if (result instanceof Promise) return result.then((r) => decide(ctx, applied, r, now, cacheKey));
      decide(ctx, applied, result, now, cacheKey);
    },
  };
}

/** The counter of one rate-limit policy for one subject, in the window `now` falls in. */
export function rateCounter(
  scope: string,
  rl: RateLimitConfig,
  subject: string,
  now: number,
): { spec: CounterSpec; resetAt: number } {
  const windowMs = rl.windowSec * 1000;
  const index = Math.floor(now / windowMs);
  const resetAt = (index + 1) * windowMs;
  const tag = hashTag(`${rl.by}:${subject}`);
  return {
    spec: {
      kind: 'rate',
      key: `rl:{${tag}}:${scope}:${rl.name}:${rl.windowSec}:${index}`,
      tag,
      limit: rl.limit,
      cost: rl.cost,
      ttlMs: resetAt - now + 1000,
      spanSec: rl.windowSec + 1,
    },
    resetAt,
  };
}
