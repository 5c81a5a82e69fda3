import { after, type Clock } from './clock.js';
import type { RequestContext } from './context.js';

/**
 * Waits `ms` on the clock for a request, unless its client leaves first: resolves `true` when
 * the time passed, `false` as soon as the response is over (the timer is cancelled then, so a
 * client that hangs up leaves no timer behind). Bounded by `ms` either way.
 */
export function waitForRequest(ctx: RequestContext, clock: Clock, ms: number): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    let settled = false;
    const cancel = after(clock, ms, () => {
      if (settled) return;
      settled = true;
      resolve(true);
    });
    // Runs at once when the client already left; otherwise when the response closes. After the
    // wait it finds the promise settled and does nothing.
    ctx.onClose(() => {
      if (settled) return;
      settled = true;
      cancel();
      resolve(false);
    });
  });
}
