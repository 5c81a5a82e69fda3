import { Problem } from '../../problems/problem.js';
import type { RequestContext } from '../../core/context.js';
import type { Stage } from '../../core/stage.js';
import { hashTag } from '../rate-limit/counters.js';
import type { ConcurrencyConfig } from './schema.js';
import type { ConcurrencyStore, Slot } from './store.js';

export interface ConcurrencyStageOptions {
  routeId: string;
  config: ConcurrencyConfig;
  store: ConcurrencyStore;
  /** Told about a renewal or release that failed (the lease frees the slot anyway). */
  onError?: (err: unknown) => void;
}

/** The policy name in the 429's `policy` member and the `rate_limit_policy` of the audit record. */
export const CONCURRENCY_POLICY = 'concurrency';

/**
 * A concurrency limit (SPEC §9): at most `limit` requests, streams or WebSockets in flight per
 * `by` value. A slot is taken before the request goes on (one store round trip), renewed every
 * `leaseSec / 3` while it runs (Redis), and freed when the response ends or the client leaves —
 * for a WebSocket, when the connection closes. One over: 429 `rate-limit-exceeded`,
 * `policy: "concurrency"`, `Retry-After: 1`.
 */
export function createConcurrencyStage(o: ConcurrencyStageOptions): Stage {
  const { limit, by, leaseSec } = o.config;
  const leaseMs = leaseSec * 1000;
  const renewMs = Math.max(250, Math.floor(leaseMs / 3));
  const refusal = () =>
    new Problem('rate-limit-exceeded', {
      detail: `At most ${limit} requests may be in flight at once here (by ${by}); retry when one has finished.`,
      extensions: { policy: CONCURRENCY_POLICY },
      headers: { 'retry-after': '1' },
    });
  const subjectOf = (ctx: RequestContext): string => {
    const id = ctx.identity;
    switch (by) {
      case 'ip':
        return ctx.clientIp;
      case 'key':
        return id?.credentialId ?? ctx.clientIp;
      case 'subject':
        return id?.subject ?? ctx.clientIp;
      case 'tenant':
        return id === undefined ? ctx.clientIp : (id.tenant ?? id.subject);
      case 'route':
        return o.routeId;
      case 'global':
        return 'global';
    }
  };
  const report = (err: unknown) => o.onError?.(err);
  const hold = (ctx: RequestContext, slot: Slot | undefined): void => {
    if (slot === undefined) {
      ctx.rateLimitPolicy = CONCURRENCY_POLICY;
      throw refusal();
    }
    const store = slot.store;
    const timer = setInterval(() => {
      const pending = store.renew(slot, leaseMs);
      if (pending !== undefined) pending.catch(report);
    }, renewMs);
    timer.unref();
    ctx.onClose(() => {
      clearInterval(timer);
      try {
        const pending = store.release(slot);
        if (pending !== undefined) pending.catch(report);
      } catch (err) {
        report(err);
      }
    });
  };
  const scope = `route:${o.routeId}:${by}`;
  return {
    name: 'concurrency',
    run(ctx: RequestContext) {
      const subject = subjectOf(ctx);
      const tag = hashTag(`${by}:${subject}`);
      const key = `cc:{${tag}}:${scope}`;
      const got = o.store.acquire(key, limit, leaseMs);
      if (got instanceof Promise) return got.then((slot) => hold(ctx, slot));
      hold(ctx, got);
    },
  };
}
