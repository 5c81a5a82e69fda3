import { Problem } from '../../problems/problem.js';
import type { Clock } from '../../core/clock.js';
import type { Identity, Plan } from '../../core/identity.js';
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
import { hashTag, needOf, type ConsumeResult, type CounterSpec, type CounterStore } from './counters.js';
import type { MetersConfig, RateLimitConfig } from './schema.js';

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
  /** Shadow mode: reported and counted, never refusing, not in the headers. */
  shadow: boolean;
  /** The meter it counts (its check costs 0; the value is settled when the response ends). */
  meter: number | undefined;
  /**
   * A metered quota: the counter the meter's value is added to, at settlement time. A metered rate
   * limit needs no closure: its counter comes from `rule`, `scope` and `subject` (`rateSettlement`).
   */
  settleSpec: ((value: number, now: number) => { spec: CounterSpec; resetAt: number | null }) | undefined;
  /** A metered rate limit: its rule (undefined otherwise). */
  rule: RateLimitConfig | undefined;
  /** A rate limit: the scope and subject of its counter. */
  scope: string;
  subject: string;
  /**
   * A metered rate limit: the epoch ms span in which `spec` is still the counter of now (its fixed
   * window, or its sliding window's current bucket): a settlement then reuses its key.
   */
  currentFrom: number;
  currentUntil: number;
  /** Quota: whose counter it is (for quota events). */
  holder: { by: QuotaBy; subject: string } | undefined;
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
  /** The route's meters (SPEC §10): limits naming one of them count it instead of requests. */
  meters?: MetersConfig | undefined;
  /** A response whose meter value was missing or unusable (it added 0). */
  onMeterMissing?: ((meter: string) => void) | undefined;
  /**
   * Quota events (SPEC §11): `quota.threshold` when a charge crosses one of `thresholds` (fractions
   * of the limit), `quota.exhausted` when it reaches the limit (or a charge is refused first) —
   * for a metered quota, when its settlement does. Raised once per holder, period and threshold
   * across instances; never awaited.
   */
  quotaEvents?: { sink: EventSink; thresholds: readonly number[]; exhausted: boolean } | undefined;
  /**
   * Usage history (SPEC §11): told each identified request's meter values once settled (route
   * order, 0 for a missing one), whether or not a limit counts them.
   */
  usage?:
    | {
        meters(
          identity: Identity,
          startedAt: number,
          names: readonly string[],
          values: readonly number[],
        ): void;
      }
    | undefined;
}

/** The largest meter value taken: beyond 2^53 − 1 integers are no longer exact. */
const MAX_METER = Number.MAX_SAFE_INTEGER;

/**
 * A meter value as the upstream reported it: a non-negative integer of decimal digits (surrounding
 * whitespace allowed), at most 2^53 − 1. Anything else (missing, empty, negative, fractional,
 * exponent, hex, too large, several values) is undefined: it adds 0 and is counted as missing.
 */
export function meterValue(raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  // The usual value, digits only: read in one pass (15 digits are below 2^53, exact as a double).
  const len = raw.length;
  if (len > 0 && len <= 15) {
    let v = 0;
    let i = 0;
    for (; i < len; i++) {
      const d = raw.charCodeAt(i) - 48;
      if (d < 0 || d > 9) break;
      v = v * 10 + d;
    }
    if (i === len) return v;
  }
  const t = raw.trim();
  if (t.length === 0 || t.length > 16 || !/^[0-9]+$/.test(t)) return undefined;
  const n = Number(t);
  return n <= MAX_METER ? n : undefined;
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
  raiseQuotaCrossings(
    ev,
    ctx,
    a.holder!,
    a.spec,
    a.resetAt,
    refused ? used : used - a.spec.cost,
    used,
    refused,
  );
}

/**
 * The quota events of a counter going from `before` to `used` (or of a refusal at `used`): at a
 * request-counted quota's charge, or at a metered quota's settlement (its counter and period are
 * the settlement's own: a period may have ended meanwhile).
 */
function raiseQuotaCrossings(
  ev: NonNullable<RateLimitStageOptions['quotaEvents']>,
  ctx: RequestContext,
  holder: { by: QuotaBy; subject: string },
  spec: CounterSpec,
  resetAt: number | null,
  before: number,
  used: number,
  refused: boolean,
): void {
  const limit = spec.limit;
  const base = {
    holder: { by: holder.by, id: holder.subject },
    keyId: ctx.identity?.credentialId ?? null,
    tenantId: ctx.identity?.tenant ?? null,
    period: spec.key.split(':').at(-2) ?? null,
    periodId: periodIdOf(spec.key),
    limit,
    resetsAt: resetAt === null ? null : new Date(resetAt).toISOString(),
  };
  const a = { spec };
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
  // Compiled once: the route's meters, by name, and the response fields carrying them.
  const meterNames = Object.keys(o.meters ?? {});
  const meterFields = meterNames.map((m) => o.meters![m]!.responseHeader);
  const meterIndex = (name: string | undefined): number | undefined => {
    if (name === undefined) return undefined;
    const i = meterNames.indexOf(name);
    return i === -1 ? undefined : i;
  };
  /** A limit that names a meter this route lacks does not apply here (a plan's, a key's own). */
  const appliesHere = (rl: { meter?: string | undefined }): boolean =>
    rl.meter === undefined || meterIndex(rl.meter) !== undefined;

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
    const meter = meterIndex(rl.meter);
    let currentFrom = 0;
    let currentUntil = 0;
    if (meter !== undefined) {
      const slide = spec.slide;
      const spanMs = slide === undefined ? rl.windowSec * 1000 : (rl.windowSec * 1000) / SLIDING_BUCKETS;
      currentFrom = slide === undefined ? resetAt - spanMs : slide.bucket * spanMs;
      currentUntil = currentFrom + spanMs;
    }
    return {
      spec,
      kind: 'rate',
      name: rl.name,
      limit: rl.limit,
      windowSec: rl.windowSec,
      resetAt,
      shadow: rl.mode === 'shadow',
      meter,
      settleSpec: undefined,
      rule: meter === undefined ? undefined : rl,
      scope,
      subject,
      currentFrom,
      currentUntil,
      holder: undefined,
    };
  };

  const policyHeader = (applied: readonly Applied[], cacheKey: string | undefined): string => {
    if (cacheKey !== undefined) {
      const cached = policyHeaderCache.get(cacheKey);
      if (cached !== undefined) return cached;
    }
    // Enforced limits only (SPEC §10): a shadow limit refuses nothing a client should plan for.
    const value = applied
      .filter((a) => a.kind === 'rate' && !a.shadow)
      .map(
        (a) =>
          `"${a.name}";q=${a.limit};w=${a.windowSec}${a.meter === undefined ? '' : `;qu="${meterNames[a.meter]!}"`}`,
      )
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
        if (a.shadow || result.used[i]! + needOf(a.spec) <= a.limit) return;
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
        for (let i = 0; i < applied.length; i++) {
          const a = applied[i]!;
          if (a.kind !== 'rate' || a.shadow) continue;
          const left = Math.max(0, a.limit - result.used[i]!);
          if (left < bestLeft || (left === bestLeft && a.resetAt! > applied[best]!.resetAt!)) {
            bestLeft = left;
            best = i;
          }
        }
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
    if (result.over !== undefined) ctx.rateLimitShadow = result.over.map((i) => applied[i]!.name);
    // Quota events of request-counted quotas here; a metered quota's charge is known at settlement.
    if (o.quotaEvents !== undefined)
      applied.forEach((a, i) => {
        if (a.kind === 'quota' && a.meter === undefined)
          raiseQuotaEvents(o.quotaEvents!, ctx, a, result.used[i]!, false);
      });
    let owed: CounterSpec[] | undefined;
    for (const a of applied) if (a.kind !== 'rate' && a.meter === undefined) (owed ??= []).push(a.spec);
    if (owed !== undefined) refundUnlessAnswered(ctx, owed, o.counters, o.local);
    if (meterNames.length > 0) {
      const metered = applied.some((a) => a.meter !== undefined);
      if (metered || wantsUsage(ctx)) settleMeters(ctx, applied, metered);
    }
  };

  const wantsUsage = (ctx: RequestContext): boolean => o.usage !== undefined && ctx.identity !== undefined;

  /**
   * Once the response is over, adds each meter's reported value to the metered counters (batched
   * by the store: one more command, fire-and-forget). Only when the request got an answer: the
   * upstream's (from its header, or trailer), or on a local route the gateway's own.
   */
  const settleMeters = (ctx: RequestContext, applied: readonly Applied[], metered: boolean): void => {
    // The terminal stage (proxy, mock) records the values it answers with (`ctx.readMeters`).
    ctx.meterFields = meterFields;
    ctx.onClose((c) => settle(c, applied, metered));
  };

  /** The close hook of `settleMeters`: `metered`, some limit of `applied` counts a meter. */
  const settle = (c: RequestContext, applied: readonly Applied[], metered: boolean): void => {
    if (o.local ? !c.res.headersSent : c.upstreamStatus === undefined) return;
    const reported = c.meterValues;
    const values = new Array<number>(meterFields.length);
    for (let i = 0; i < meterFields.length; i++) {
      let raw = reported?.[i];
      if (raw === undefined && o.local) {
        // A local answer written by other code (an Express handler): what it set on the response.
        const h = c.responseHeader(meterFields[i]!);
        raw = typeof h === 'string' || typeof h === 'number' ? String(h) : undefined;
      }
      const v = meterValue(raw);
      // Counted where a limit wanted it (a meter only recorded in the usage history is optional).
      if (v === undefined && metered) o.onMeterMissing?.(meterNames[i]!);
      values[i] = v ?? 0;
    }
    if (c.identity !== undefined) o.usage?.meters(c.identity, c.startedAt, meterNames, values);
    if (!metered) return;
    const now = o.clock.now();
    let specs: CounterSpec[] | undefined;
    const ev = o.quotaEvents;
    for (const a of applied) {
      if (a.meter === undefined) continue;
      const value = values[a.meter]!;
      if (value <= 0) continue;
      if (a.rule !== undefined) {
        (specs ??= []).push(rateSettlement(a, value, now));
        continue;
      }
      const { spec, resetAt } = a.settleSpec!(value, now);
      if (ev !== undefined && a.kind === 'quota')
        spec.settled = (before, after) =>
          raiseQuotaCrossings(ev, c, a.holder!, spec, resetAt, before, after, false);
      (specs ??= []).push(spec);
    }
    if (specs !== undefined) o.counters.settle(specs);
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
      // A metered limit applies only on routes that declare its meter.
      if (plan !== undefined)
        for (const rl of plan.rateLimits)
          if ((own === undefined || !own.some((k) => k.name === rl.name)) && appliesHere(rl))
            applied.push(rateApplied(ctx, `plan:${planName}`, rl, now));
      if (own !== undefined)
        for (const rl of own)
          if (appliesHere(rl)) applied.push(rateApplied(ctx, `key:${id!.credentialId}`, rl, now));
      const quota =
        o.quota ?? (plan?.quota === undefined ? undefined : { config: plan.quota, by: plan.quotaBy });
      if (o.quotaCost !== undefined && quota !== undefined && id !== undefined && appliesHere(quota.config)) {
        const holder = quotaHolder(quota.by, id.credentialId, id.tenant, ctx.keyRecord);
        const meter = meterIndex(quota.config.meter);
        const cost = meter === undefined ? o.quotaCost : 0;
        const { spec, resetAt } = quotaLimit(quota.config, holder.subject, holder.by, cost, now);
        applied.push({
          spec,
          kind: 'quota',
          name: 'quota',
          limit: spec.limit,
          windowSec: 0,
          resetAt,
          shadow: false,
          meter,
          settleSpec:
            meter === undefined
              ? undefined
              : (value, at) => quotaLimit(quota.config, holder.subject, holder.by, value, at),
          rule: undefined,
          scope: '',
          subject: holder.subject,
          currentFrom: 0,
          currentUntil: 0,
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
          shadow: false,
          meter: undefined,
          settleSpec: undefined,
          rule: undefined,
          scope: '',
          subject: '',
          currentFrom: 0,
          currentUntil: 0,
          holder: undefined,
        });
      if (applied.length === 0) {
        // Nothing to count, but the usage history still sums the route's meters.
        if (meterNames.length > 0 && wantsUsage(ctx)) settleMeters(ctx, applied, false);
        return;
      }
      // The policy header depends on the route and the plan only (a key's own limits are rare).
      const cacheKey = own === undefined ? (planName ?? '') : undefined;
      const specs = new Array<CounterSpec>(applied.length);
      for (let i = 0; i < applied.length; i++) specs[i] = applied[i]!.spec;
      const result = o.counters.consume(specs);
      if (result instanceof Promise) return result.then((r) => decide(ctx, applied, r, now, cacheKey));
      decide(ctx, applied, result, now, cacheKey);
    },
  };
}

/**
 * The counter a metered rate limit's value is added to at `at`: while the check's window (or
 * sliding bucket) is still current, the check's own key with the ttl of now — nothing to build;
 * else the counter of `at` (a response that ended in a later window counts there).
 */
function rateSettlement(a: Applied, value: number, at: number): CounterSpec {
  const s = a.spec;
  if (at >= a.currentFrom && at < a.currentUntil)
    return {
      kind: 'rate',
      key: s.key,
      tag: s.tag,
      limit: s.limit,
      cost: value,
      // As `rateCounter` at `at`: a fixed window's ttl runs to its end; a sliding window's is constant.
      ttlMs: s.slide === undefined ? a.resetAt! - at + 1000 : s.ttlMs,
      spanSec: s.spanSec,
      slide: s.slide,
      soft: undefined,
    };
  return { ...rateCounter(a.scope, a.rule!, a.subject, at).spec, cost: value, soft: undefined };
}

/** Sub-windows (buckets) per sliding window: a request stops counting 1–1.1 windows after it. */
export const SLIDING_BUCKETS = 10;

/**
 * The counter of one rate-limit policy for one subject at `now`: the fixed window `now` falls in,
 * or a sliding window's buckets (tenths of the window) with the current one's index.
 * `resetAt`: when the fixed window ends; for a sliding window, when everything counted now has
 * left it (between one window and a tenth more from now) — a client waiting that long gets room.
 */
export function rateCounter(
  scope: string,
  rl: RateLimitConfig,
  subject: string,
  now: number,
): { spec: CounterSpec; resetAt: number } {
  const windowMs = rl.windowSec * 1000;
  const tag = hashTag(`${rl.by}:${subject}`);
  const cost = rl.meter === undefined ? rl.cost : 0;
  const soft = rl.mode === 'shadow' ? true : undefined;
  if (rl.algorithm === 'sliding-window') {
    const bucketMs = windowMs / SLIDING_BUCKETS; // whole ms: windowSec × 100
    const bucket = Math.floor(now / bucketMs);
    return {
      spec: {
        kind: 'rate',
        key: `rl:{${tag}}:${scope}:${rl.name}:${rl.windowSec}:s`,
        tag,
        limit: rl.limit,
        cost,
        ttlMs: windowMs + bucketMs + 1000,
        spanSec: rl.windowSec + Math.ceil(rl.windowSec / SLIDING_BUCKETS) + 1,
        slide: { bucket, buckets: SLIDING_BUCKETS },
        soft,
      },
      resetAt: (bucket + SLIDING_BUCKETS + 1) * bucketMs,
    };
  }
  const index = Math.floor(now / windowMs);
  const resetAt = (index + 1) * windowMs;
  return {
    spec: {
      kind: 'rate',
      key: `rl:{${tag}}:${scope}:${rl.name}:${rl.windowSec}:${index}`,
      tag,
      limit: rl.limit,
      cost,
      ttlMs: resetAt - now + 1000,
      spanSec: rl.windowSec + 1,
      soft,
    },
    resetAt,
  };
}
