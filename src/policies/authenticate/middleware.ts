import type { RequestHandler } from 'express';
import type { z } from 'zod';
import { systemClock, type Clock } from '../../core/clock.js';
import { ensureContext } from '../../core/request-id.js';
import { createReadBodyStage } from '../body-limit/read-body.js';
import { runStages } from '../../core/stage.js';
import type { Stage } from '../../core/stage.js';
import { KeyService } from '../../keys/service.js';
import { MemoryKeyStore } from '../../keys/memory-store.js';
import { SecretBox } from '../../keys/secret-box.js';
import type { PlanConfig } from '../../config/schema.js';
import { authSchema, routeAuthSchema } from './schema.js';
import { createAuthenticateStage } from './authenticate.js';
import { JwtVerifier } from './jwt.js';
import { MemoryReplayStore, type ReplayStore } from '../signature/replay-store.js';
import { createSignatureStage } from '../signature/signature.js';

export interface AuthenticateOptions {
  /** Accepted credentials (default both), required scopes, HMAC signing (default off). */
  route?: z.input<typeof routeAuthSchema>;
  /** Issuers, API-key header and prefix, HMAC tolerance — the `auth` block of the config. */
  auth?: z.input<typeof authSchema>;
  /** Where keys are looked up. Default: a new in-memory store (create keys with `keys.create`). */
  keys?: KeyService;
  /** Plans by name (`apiAccess` is checked). Default: none. */
  plans?: Record<string, PlanConfig>;
  replay?: ReplayStore;
  clock?: Clock;
  /** Body limit when a signature needs the raw body. Default 1 MiB. */
  bodyLimit?: number;
}

/**
 * Express middleware that authenticates the request (API key, Bearer JWT, optional HMAC
 * signature) and sets the identity on the Tollgate request context (`contextOf(req).identity`).
 * Failures go to `next` as Problems for `problemDetails()`.
 *
 * @example
 * const keys = new KeyService({ store: new MemoryKeyStore(), prefix: 'tg', box: new SecretBox(process.env.TOLLGATE_SECRET_KEY), clock: systemClock });
 * app.use('/orders', authenticate({ keys, route: { methods: ['apiKey'], scopes: ['orders:read'] } }), handler);
 * app.use(problemDetails());
 */
export function authenticate(options: AuthenticateOptions = {}): RequestHandler & { keys: KeyService } {
  const clock = options.clock ?? systemClock;
  const auth = authSchema.parse(options.auth ?? {});
  const parsedRoute = routeAuthSchema.parse(options.route ?? {});
  const route =
    parsedRoute === 'none'
      ? { methods: ['jwt', 'apiKey'] as ('jwt' | 'apiKey')[], scopes: [], hmac: 'off' as const }
      : parsedRoute;
  const keys =
    options.keys ??
    new KeyService({
      store: new MemoryKeyStore(),
      prefix: auth.apiKeys.prefix,
      box: new SecretBox(undefined),
      clock,
    });
  const jwt = auth.jwt.length > 0 ? new JwtVerifier(auth.jwt, clock) : undefined;
  const stages: Stage[] = [
    createAuthenticateStage(route, {
      keys,
      jwt,
      plans: options.plans ?? {},
      apiKeyHeader: auth.apiKeys.header,
      clock,
    }),
  ];
  if (route.hmac !== 'off') {
    stages.push(createReadBodyStage(options.bodyLimit ?? 1_048_576));
    stages.push(
      createSignatureStage(route.hmac, {
        keys,
        replay: auth.hmac.replayProtection
          ? (options.replay ?? new MemoryReplayStore(clock, auth.hmac.replayCache))
          : undefined,
        toleranceSec: auth.hmac.toleranceSec,
        clock,
      }),
    );
  }
  const middleware = function authenticateMiddleware(req, res, next) {
    const ctx = ensureContext(req, res, clock);
    try {
      const pending = runStages(ctx, stages);
      if (pending === undefined) next();
      else pending.then(() => next(), next);
    } catch (err) {
      next(err);
    }
  } as RequestHandler & { keys: KeyService };
  middleware.keys = keys;
  return middleware;
}
