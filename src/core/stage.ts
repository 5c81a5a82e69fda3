import type { RequestContext } from './context.js';

/**
 * One step of the request pipeline. `run` does only per-request work: everything that can be
 * computed from config was computed by the factory that made the stage.
 *
 * A stage either returns (the next stage runs), throws or rejects with a `Problem` (the problem
 * writer answers), or answers the request itself and sets `ctx.handled` (later stages are
 * skipped). Synchronous stages return `undefined`, so a request that needs no I/O allocates no
 * promise for them.
 */
export interface Stage {
  readonly name: string;
  run(ctx: RequestContext): void | Promise<void>;
}

/** Runs `stages` from index `from`; returns a promise only if some stage was asynchronous. */
export function runStages(ctx: RequestContext, stages: readonly Stage[], from = 0): void | Promise<void> {
  for (let i = from; i < stages.length; i++) {
    if (ctx.handled) return;
    const pending = stages[i]!.run(ctx);
    if (pending !== undefined) {
      const next = i + 1;
      // The last stage's own promise is the pipeline's: no `then`, closure and microtask hop more.
      return next === stages.length ? pending : pending.then(() => runStages(ctx, stages, next));
    }
  }
}
