import { Problem } from '../../problems/problem.js';
import type { Clock } from '../../core/clock.js';
import type { Plan } from '../../core/identity.js';
import type { Identity, RequestContext } from '../../core/context.js';
import type { Stage } from '../../core/stage.js';
import { looksLikeKey } from '../../keys/format.js';
import { keyView, usesIdOf, type KeyRecord } from '../../keys/record.js';
import type { EventSink } from '../../core/events.js';
import type { KeyService } from '../../keys/service.js';
import type { RouteAuthConfig } from './schema.js';
import { challenge } from './challenge.js';
import { presentedCredentials } from './credentials.js';
import type { JwtVerifier } from './jwt.js';

export interface AuthenticateDeps {
  keys: KeyService;
  jwt: JwtVerifier | undefined;
  plans: Readonly<Record<string, Plan>>;
  apiKeyHeader: string;
  clock: Clock;
  /**
   * Where `key.expired` goes: raised lazily, when an expired key is first presented (once per key
   * across instances), not by a sweep. Undefined: nobody listens.
   */
  events?: EventSink | undefined;
}

/** A key's expiry is told once: the once-key outlives any sensible key lifetime. */
const EXPIRED_ONCE_TTL_MS = 400 * 86_400_000;

const MISSING = () =>
  new Problem('missing-credentials', {
    detail: 'This route needs an API key or a Bearer token.',
    headers: challenge(),
  });

// One body for unknown, revoked and disabled keys: the answer must not tell them apart.
const INVALID_KEY = () =>
  new Problem('invalid-credentials', {
    detail: 'The API key is not valid.',
    headers: challenge('invalid_token', 'The API key is not valid.'),
  });

/**
 * The `authenticate` stage: establishes `ctx.identity` from an API key (header or Bearer) or a
 * JWT, and enforces the route's scopes. Everything about the route (accepted kinds, required
 * scopes) is fixed here, at config load.
 */
export function createAuthenticateStage(
  auth: Exclude<RouteAuthConfig, 'none'>,
  deps: AuthenticateDeps,
): Stage {
  const allowKeys = auth.methods.includes('apiKey');
  const allowJwt = auth.methods.includes('jwt') && deps.jwt !== undefined;
  const required = auth.scopes;
  const prefix = deps.keys.prefix;
  const accepted = [allowKeys ? 'API keys' : undefined, allowJwt ? 'Bearer JWTs' : undefined]
    .filter(Boolean)
    .join(' or ');

  const fromKey = (ctx: RequestContext, record: KeyRecord | undefined): void | Promise<void> => {
    if (record === undefined || !record.enabled) throw INVALID_KEY();
    const now = deps.clock.now();
    if (record.expiresAt !== null && Date.parse(record.expiresAt) <= now) {
      void deps.events?.raise({
        type: 'key.expired',
        data: { key: keyView(record) },
        orderKey: `key:${record.id}`,
        once: { key: `key.expired:${record.id}`, ttlMs: EXPIRED_ONCE_TTL_MS },
      });
      throw new Problem('expired-credentials', {
        detail: 'The API key has expired.',
        headers: challenge('invalid_token', 'The API key has expired.'),
      });
    }
    // SPEC §10: a key without a plan of its own is on its tenant's (cached like the key itself).
    const plan = deps.keys.planOf(record);
    if (plan instanceof Promise) return plan.then((p) => onPlan(ctx, record, p, now));
    onPlan(ctx, record, plan, now);
  };

  const onPlan = (ctx: RequestContext, record: KeyRecord, planName: string | null, now: number): void => {
    if (planName !== null) {
      // A stored name is looked up as an own property: `constructor` must not find Object's.
      const plan = Object.hasOwn(deps.plans, planName) ? deps.plans[planName] : undefined;
      if (plan === undefined || !plan.apiAccess)
        throw new Problem('forbidden', { detail: 'The plan of this key does not include API access.' });
    }
    deps.keys.store.touch(record.id, now);
    ctx.keyRecord = record;
    authorize(ctx, {
      method: 'api-key',
      credentialId: record.id,
      subject: record.ownerId ?? record.id,
      issuer: record.ownerIssuer ?? undefined,
      tenant: record.tenantId ?? undefined,
      scopes: record.scopes,
      plan: planName ?? undefined,
      rateLimits: record.rateLimits ?? undefined,
      remaining: record.remaining ?? undefined,
      usesId: record.remaining === null ? undefined : usesIdOf(record),
    });
  };

  const claimRules = compileClaimRules(auth.claims);

  const authorize = (ctx: RequestContext, identity: Identity): void => {
    ctx.identity = identity;
    if (required.length === 0) {
      if (claimRules !== undefined) checkClaims(identity, claimRules);
      return;
    }
    const missing = required.filter((s) => !identity.scopes.includes(s));
    if (missing.length > 0) {
      const scope = missing.join(' ');
      throw new Problem('insufficient-scope', {
        detail: `This route needs the scope${missing.length === 1 ? '' : 's'} ${scope}.`,
        extensions: { required_scope: scope },
        headers: {
          'www-authenticate': `Bearer realm="tollgate", error="insufficient_scope", scope="${required.join(' ')}"`,
        },
      });
    }
    if (claimRules !== undefined) checkClaims(identity, claimRules);
  };

  return {
    name: 'authenticate',
    run(ctx: RequestContext) {
      const presented = presentedCredentials(ctx.req, deps.apiKeyHeader);
      if (presented.repeated)
        throw new Problem('invalid-credentials', {
          detail: 'A credential header was sent more than once.',
          headers: challenge('invalid_request', 'A credential header was sent more than once.'),
        });
      // Beside an API key too: an `Authorization` the gateway cannot read is a second credential
      // it has not verified, and it must not ride along to the upstream.
      if (presented.malformed)
        throw new Problem('invalid-credentials', {
          detail: 'The Authorization header must be "Bearer <token>".',
          headers: challenge('invalid_request', 'The Authorization header must be "Bearer <token>".'),
        });
      const bearerIsKey = presented.bearer !== undefined && looksLikeKey(presented.bearer, prefix);
      let key = presented.header;
      if (bearerIsKey) {
        if (key !== undefined && key !== presented.bearer)
          throw new Problem('invalid-credentials', {
            detail: 'The request carries two different credentials.',
            headers: challenge('invalid_request', 'The request carries two different credentials.'),
          });
        key = presented.bearer;
      } else if (presented.bearer !== undefined && key !== undefined)
        throw new Problem('invalid-credentials', {
          detail: 'The request carries two different credentials.',
          headers: challenge('invalid_request', 'The request carries two different credentials.'),
        });

      if (key !== undefined) {
        // SPEC §9: a credential of a kind the route does not take is forbidden here, not invalid.
        if (!allowKeys)
          throw new Problem('forbidden', {
            detail: `This route accepts ${accepted} only: it cannot be used with an API key.`,
          });
        const found = deps.keys.find(key);
        if (found instanceof Promise) return found.then((record) => fromKey(ctx, record));
        return fromKey(ctx, found);
      }
      if (presented.bearer !== undefined) {
        if (!auth.methods.includes('jwt'))
          throw new Problem('forbidden', {
            detail: `This route accepts ${accepted} only: it cannot be used with a Bearer token.`,
          });
        // JWTs are accepted, but no issuer is configured to vouch for one.
        if (!allowJwt)
          throw new Problem('invalid-credentials', {
            detail: 'The token issuer is not trusted.',
            headers: challenge('invalid_token', 'The token issuer is not trusted.'),
          });
        const identity = deps.jwt!.verify(presented.bearer);
        if (identity instanceof Promise) return identity.then((id) => authorize(ctx, id));
        authorize(ctx, identity);
        return;
      }
      throw MISSING();
    },
  };
}

interface ClaimRule {
  readonly claim: string;
  readonly allowed: ReadonlySet<string>;
  /** The 403 when the claim holds none of the values (built once, at load). */
  readonly detail: string;
  readonly keyDetail: string;
}

function compileClaimRules(
  claims: Readonly<Record<string, readonly string[]>> | undefined,
): ClaimRule[] | undefined {
  if (claims === undefined) return undefined;
  const rules = Object.entries(claims).map(([claim, values]) => ({
    claim,
    allowed: new Set(values),
    detail: `This route needs the token's "${claim}" claim to be ${values.length === 1 ? `"${values[0]}"` : `one of ${values.map((v) => `"${v}"`).join(', ')}`}.`,
    keyDetail: `This route needs the token's "${claim}" claim: it cannot be used with an API key (API keys carry no claims).`,
  }));
  return rules.length === 0 ? undefined : rules;
}

/**
 * SPEC §9 `auth.claims`: every listed claim of the JWT — a string, or an array of strings — must
 * hold one of its allowed values; anything else (missing, a number, an object) holds none. An API
 * key carries no claims, so it never passes a route with claim rules: 403 forbidden as for a JWT
 * without the claim, with the same `required_claim`.
 */
function checkClaims(identity: Identity, rules: readonly ClaimRule[]): void {
  const claims = identity.claims;
  for (const rule of rules) {
    const value = claims === undefined || !Object.hasOwn(claims, rule.claim) ? undefined : claims[rule.claim];
    if (
      typeof value === 'string'
        ? rule.allowed.has(value)
        : Array.isArray(value) && value.some((v) => typeof v === 'string' && rule.allowed.has(v))
    )
      continue;
    throw new Problem('forbidden', {
      detail: identity.method === 'api-key' ? rule.keyDetail : rule.detail,
      extensions: { required_claim: rule.claim },
    });
  }
}
