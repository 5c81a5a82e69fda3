import { createHash, createPublicKey, createSecretKey, type KeyObject } from 'node:crypto';
import { decodeJwt, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import { Problem } from '../../problems/problem.js';
import type { Clock } from '../../core/clock.js';
import type { Identity } from '../../core/context.js';
import type { JwtIssuerConfig } from './schema.js';
import { JwksUnavailableError, RemoteJwks } from './jwks.js';
import { challenge } from './challenge.js';

const CACHE_MAX = 10_000;

interface Issuer {
  config: JwtIssuerConfig;
  key: KeyObject | JWTVerifyGetKey;
  jwks: RemoteJwks | undefined;
}

interface CachedToken {
  identity: Identity;
  /** `exp` in epoch ms. */
  exp: number;
  nbf: number;
}

/**
 * Verifies Bearer JWTs against the configured issuers with jose: allow-listed algorithms only
 * (never `none`; an HS token is refused by an RS issuer), `iss`, `aud`, `nbf` and a required `exp`
 * checked with the issuer's clock tolerance.
 *
 * A verified token is cached until its `exp` in a bounded LRU keyed by the token's SHA-256 (the
 * token itself is not kept): jose's `jwtVerify` costs ~57 µs (../shared/bench/RESULTS.md), a
 * cache hit about what an API-key lookup costs.
 */
export class JwtVerifier {
  readonly #issuers = new Map<string, Issuer>();
  readonly #clock: Clock;
  readonly #cache = new Map<string, CachedToken>();

  constructor(issuers: readonly JwtIssuerConfig[], clock: Clock) {
    this.#clock = clock;
    for (const config of issuers) {
      let key: KeyObject | JWTVerifyGetKey;
      let jwks: RemoteJwks | undefined;
      if (config.secret !== undefined) key = createSecretKey(Buffer.from(config.secret, 'utf8'));
      else if (config.publicKey !== undefined) key = createPublicKey(config.publicKey);
      else {
        jwks = new RemoteJwks(config.jwksUri!, {
          clock,
          cooldownMs: config.jwksCooldownSec * 1000,
          maxStaleMs: config.jwksMaxStaleSec * 1000,
          timeoutMs: config.jwksTimeoutMs,
        });
        key = jwks.getKey;
      }
      this.#issuers.set(config.issuer, { config, key, jwks });
    }
  }

  /** Fetches every remote JWKS once (at start), without failing when one is down. */
  warmUp(): Promise<void> {
    const fetches = [...this.#issuers.values()].flatMap((i) => (i.jwks ? [i.jwks.refresh()] : []));
    return Promise.all(fetches).then(() => undefined);
  }

  jwksStatus(): Array<{ issuer: string; usable: boolean; status: ReturnType<RemoteJwks['status']> }> {
    return [...this.#issuers.values()]
      .filter((i) => i.jwks !== undefined)
      .map((i) => ({ issuer: i.config.issuer, usable: i.jwks!.usable(), status: i.jwks!.status() }));
  }

  /** The identity of a valid token; throws the Problem a client should see otherwise. */
  verify(token: string): Identity | Promise<Identity> {
    const digest = createHash('sha256').update(token).digest('base64url');
    const cached = this.#cache.get(digest);
    const now = this.#clock.now();
    if (cached !== undefined) {
      if (now < cached.exp && now >= cached.nbf) {
        // LRU: move to the newest position.
        this.#cache.delete(digest);
        this.#cache.set(digest, cached);
        return cached.identity;
      }
      this.#cache.delete(digest);
    }
    return this.#verify(token, digest);
  }

  async #verify(token: string, digest: string): Promise<Identity> {
    let claims: JWTPayload;
    try {
      claims = decodeJwt(token);
    } catch (err) {
      throw invalid('The bearer token is not a valid JWT.', err);
    }
    const issuer = typeof claims.iss === 'string' ? this.#issuers.get(claims.iss) : undefined;
    if (issuer === undefined) throw invalid('The token issuer is not trusted.');
    const c = issuer.config;
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, issuer.key as KeyObject, {
        issuer: c.issuer,
        audience: c.audience,
        algorithms: c.algorithms,
        clockTolerance: c.clockToleranceSec,
        requiredClaims: ['exp'],
        currentDate: new Date(this.#clock.now()),
      }));
    } catch (err) {
      throw mapJoseError(err);
    }
    // The principal: every token without one would be the same caller (one credential id, one
    // set of limits, one idempotency scope), so a token must name it.
    const sub = claimText(payload[c.subjectClaim]);
    if (sub === undefined || sub === '')
      throw invalid(
        c.subjectClaim === 'sub'
          ? 'The token names no subject (sub).'
          : `The token names no subject (${c.subjectClaim}).`,
      );
    const tenantValue = c.tenantClaim === undefined ? undefined : payload[c.tenantClaim];
    const tenant = claimText(tenantValue);
    const scopes = scopesOf(payload);
    // Identity values go upstream in headers (percent-encoded there); a lone surrogate has no
    // encoding, and two tokens that differ only in one would look alike upstream.
    if (!wellFormed(sub) || (tenant !== undefined && !wellFormed(tenant)) || !scopes.every(wellFormed))
      throw invalid('The token carries a subject, tenant or scope that is not valid Unicode.');
    const identity: Identity = {
      method: 'jwt',
      credentialId: `jwt_${createHash('sha256').update(`${c.issuer}\n${sub}`).digest('hex').slice(0, 20)}`,
      subject: sub,
      issuer: c.issuer,
      tenant,
      scopes,
      plan: undefined,
      rateLimits: undefined,
      remaining: undefined,
      usesId: undefined,
      claims: Object.freeze({ ...payload }),
    };
    const toleranceMs = c.clockToleranceSec * 1000;
    const exp = (payload.exp as number) * 1000 + toleranceMs;
    const nbf = typeof payload.nbf === 'number' ? payload.nbf * 1000 - toleranceMs : 0;
    if (this.#cache.size >= CACHE_MAX) this.#cache.delete(this.#cache.keys().next().value!);
    this.#cache.set(digest, { identity, exp, nbf });
    return identity;
  }
}

/** A string or number claim as text; anything else (absent, object, array, boolean) is undefined. */
function claimText(value: unknown): string | undefined {
  return typeof value === 'string' || (typeof value === 'number' && Number.isFinite(value))
    ? String(value)
    : undefined;
}

function wellFormed(text: string): boolean {
  return !/\p{Cs}/u.test(text);
}

/** Scopes from `scope` (space separated, RFC 8693) or `scp` (an array, as some IdPs send). */
export function scopesOf(payload: JWTPayload): string[] {
  const scope = payload.scope;
  if (typeof scope === 'string') return scope.split(' ').filter(Boolean);
  const scp = payload.scp;
  if (Array.isArray(scp)) return scp.filter((s): s is string => typeof s === 'string');
  if (typeof scp === 'string') return scp.split(' ').filter(Boolean);
  return [];
}

function invalid(detail: string, cause?: unknown): Problem {
  return new Problem('invalid-credentials', { detail, headers: challenge('invalid_token', detail), cause });
}

/** jose failures by their stable `code` (never by message). */
function mapJoseError(err: unknown): Problem {
  if (err instanceof JwksUnavailableError)
    return new Problem('service-unavailable', {
      detail: 'The identity provider’s keys are unavailable; try again shortly.',
      // Until the next JWKS fetch is allowed: retrying sooner cannot succeed.
      headers: { 'retry-after': String(err.retryAfterSec) },
      cause: err,
    });
  const code = (err as { code?: string }).code;
  const claim = (err as { claim?: string }).claim;
  switch (code) {
    case 'ERR_JWT_EXPIRED':
      return new Problem('expired-credentials', {
        detail: 'The token has expired.',
        headers: challenge('invalid_token', 'The token has expired.'),
        cause: err,
      });
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
      return invalid(
        claim === 'exp'
          ? 'The token has no expiry (exp).'
          : claim === 'nbf'
            ? 'The token is not valid yet.'
            : `The token's ${claim ?? 'claims'} claim is not accepted.`,
        err,
      );
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
      return invalid('The token is signed with an algorithm this issuer does not allow.', err);
    case 'ERR_JWKS_NO_MATCHING_KEY':
      return invalid('No key of the issuer matches the token.', err);
    default:
      return invalid('The token is not valid.', err);
  }
}
