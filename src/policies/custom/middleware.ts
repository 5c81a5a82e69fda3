import type { RequestHandler } from 'express';
import { systemClock, type Clock } from '../../core/clock.js';
import { toMiddleware } from '../../core/middleware.js';
import { compilePolicy } from './custom.js';
import type { Stage } from '../../core/stage.js';
import type { Policy } from './define-policy.js';

export interface PolicyMiddlewareOptions {
  clock?: Clock;
}

/**
 * A `definePolicy` policy as Express middleware, with its options checked by its schema (a bad
 * option throws here, at start, with its path).
 *
 * @example
 * app.use('/orders', authenticate({ keys }), policy(tenantRouter, { tenants: { acme: 'eu-1' } }), handler);
 */
export function policy<T>(
  definition: Policy<T>,
  options?: unknown,
  o: PolicyMiddlewareOptions = {},
): RequestHandler {
  const compiled = compilePolicy(definition.name, definition, options);
  if (!compiled.ok)
    throw new TypeError(
      compiled.issues.map((i) => `${i.path.replace(/^policies\./, '')}: ${i.message}`).join('\n'),
    );
  return toMiddleware(definition.name, [compiled.policy.stage], { clock: o.clock ?? systemClock });
}

/**
 * A `definePolicy` policy built with its options as a pipeline stage: what the gateway runs for
 * it, and what a policy's own tests run in a `fakeContext()`. Bad options throw, with their paths.
 *
 * @example
 * const stage = policyStage(tenantRouter, { tenants: { acme: 'eu-1' } });
 * const t = fakeContext({ headers: { 'x-tenant': 'acme' } });
 * await stage.run(t.ctx);
 */
export function policyStage<T>(definition: Policy<T>, options?: unknown): Stage {
  const compiled = compilePolicy(definition.name, definition, options);
  if (!compiled.ok)
    throw new TypeError(
      compiled.issues.map((i) => `${i.path.replace(/^policies\./, '')}: ${i.message}`).join('\n'),
    );
  return compiled.policy.stage;
}
