import type { RequestHandler } from 'express';
import { systemClock, type Clock } from '../../core/clock.js';
import { toMiddleware } from '../../core/middleware.js';
import type { Stage } from '../../core/stage.js';
import type { KeyService } from '../../keys/service.js';
import type { Plan } from '../../core/identity.js';
import { signatureStages } from '../signature/middleware.js';
import type { ReplayStore } from '../signature/replay-store.js';
import { authSchema, routeAuthSchema, type AuthOptions, type RouteAuthOptions } from './schema.js';
import { createAuthenticateStage } from './authenticate.js';
import { JwtVerifier } from './jwt.js';
import { createKeyService } from './key-service.js';

export interface AuthenticateOptions {
  /** Accepted credentials (default both), required scopes, HMAC signing (default off). */
  route?: RouteAuthOptions;
  /** Issuers, API-key header and prefix, HMAC tolerance — the `auth` block of the config. */
  auth?: AuthOptions;
  /** Where keys are looked up. Default: a new in-memory store (create keys with `keys.create`). */
  keys?: KeyService;
  /** Plans by name (`apiAccess` is checked). Default: none. */
  plans?: Record<string, Plan>;
  replay?: ReplayStore;
  clock?: Clock;
  /** Body limit when a signature needs the raw body. Default: `limits.bodyBytes`' default. */
  bodyLimit?: number;
}

/**
 * Express middleware that authenticates the request (API key, Bearer JWT, optional HMAC
 * signature) and sets the identity on the Tollgate request context (`contextOf(req).identity`).
 * Failures go to `next` as Problems for `problemDetails()`.
 *
 * @example
 * const auth = authenticate({ route: { methods: ['apiKey'], scopes: ['orders:read'] } });
 * const { key } = await auth.keys.create({ name: 'laptop', scopes: ['orders:read'] });
 * app.use('/orders', auth, handler);
 * app.use(problemDetails());
 */
export function authenticate(options: AuthenticateOptions = {}): RequestHandler & { keys: KeyService } {
  const clock = options.clock ?? systemClock;
  const auth = authSchema.parse(options.auth ?? {});
  const parsedRoute = routeAuthSchema.parse(options.route ?? {});
  const route = parsedRoute === 'none' ? routeAuthSchema.parse({}) : parsedRoute;
  if (route === 'none') throw new Error('unreachable');
  const keys = options.keys ?? createKeyService({ prefix: auth.apiKeys.prefix, clock });
  const jwt = auth.jwt.length > 0 ? new JwtVerifier(auth.jwt, clock) : undefined;
  const stages: Stage[] = [
    createAuthenticateStage(route, {
      keys,
      jwt,
      plans: options.plans ?? {},
      apiKeyHeader: auth.apiKeys.header,
      clock,
    }),
    ...(route.hmac === 'off'
      ? []
      : signatureStages(route.hmac, {
          keys,
          hmac: auth.hmac,
          replay: options.replay,
          bodyLimit: options.bodyLimit,
          clock,
        })),
  ];
  const middleware = toMiddleware('authenticate', stages, { clock }) as RequestHandler & { keys: KeyService };
  middleware.keys = keys;
  return middleware;
}
