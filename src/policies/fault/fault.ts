import { Problem } from '../../problems/problem.js';
import type { Clock } from '../../core/clock.js';
import type { RequestContext } from '../../core/context.js';
import type { Stage } from '../../core/stage.js';
import { waitForRequest } from '../../core/wait.js';
import { FAULT_ABORT_SLUGS, type FaultConfig } from './schema.js';

export type FaultKind = 'delay' | 'abort';

export interface FaultStageOptions {
  fault: FaultConfig;
  clock: Clock;
  /** Uniform in [0, 1), as `Math.random` (the default): a seeded generator makes tests exact. */
  random?: (() => number) | undefined;
  /** Told about every fault injected (the gateway counts `tollgate_faults_injected_total`). */
  onInjected?: ((ctx: RequestContext, kind: FaultKind) => void) | undefined;
}

const DETAIL = 'This failure was injected by the gateway for testing (fault.abort).';

/**
 * Fault injection (Envoy's fault filter): a share of requests waits `ms` + up to `jitterMs`, and
 * a share is answered with a problem of the configured status and `injected: true` — delay first,
 * then abort, each drawn on its own. Everything but the two draws is decided here, once; a
 * request that draws no fault costs two `random()` calls and allocates nothing.
 */
export function createFaultStage(o: FaultStageOptions): Stage {
  const random = o.random ?? Math.random;
  const onInjected = o.onInjected;
  const clock = o.clock;
  const delay = o.fault.delay;
  const delayShare = delay === undefined ? 0 : delay.percent / 100;
  const delayMs = delay?.ms ?? 0;
  const jitterSpan = (delay?.jitterMs ?? 0) + 1;
  const abort = o.fault.abort;
  const abortShare = abort === undefined ? 0 : abort.percent / 100;
  const slug = abort === undefined ? undefined : FAULT_ABORT_SLUGS[abort.status];
  // 429 and 503 tell the client when to come back, as the catalog's own do (SPEC §3).
  const headers =
    abort?.status === 429 || abort?.status === 503 ? Object.freeze({ 'retry-after': '1' }) : undefined;
  const extensions = Object.freeze(
    abort?.status === 429 ? { injected: true, policy: 'fault' } : { injected: true },
  );

  const maybeAbort = (ctx: RequestContext): void => {
    if (slug === undefined || !(random() < abortShare)) return;
    onInjected?.(ctx, 'abort');
    throw new Problem(slug, { detail: DETAIL, extensions, headers });
  };

  return {
    name: 'fault',
    run(ctx: RequestContext) {
      if (delayShare > 0 && random() < delayShare) {
        // A whole number of milliseconds, uniform over [ms, ms + jitterMs].
        const ms = jitterSpan > 1 ? delayMs + Math.floor(random() * jitterSpan) : delayMs;
        onInjected?.(ctx, 'delay');
        return waitForRequest(ctx, clock, ms).then((waited) => {
          // The client left during the wait: nothing is left to answer, later stages are skipped.
          if (!waited) {
            ctx.handled = true;
            return;
          }
          maybeAbort(ctx);
        });
      }
      maybeAbort(ctx);
    },
  };
}
