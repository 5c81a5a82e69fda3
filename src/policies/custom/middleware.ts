import type { RequestHandler } from 'express';
import { systemClock, type Clock } from '../../core/clock.js';
import { toMiddleware } from '../../core/middleware.js';
import { compilePolicy } from './custom.js';
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
