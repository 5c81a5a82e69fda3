/*
 * The plain types every stage shares: who is calling (`Identity`), the rate-limit rule a key or
 * plan carries, and the stored key behind an API-key identity. Plain interfaces, so that a
 * library user (and a custom policy) sees ordinary TypeScript, not zod generics; the schemas
 * that validate them are checked against these types where they are defined.
 */

/** What a rate limit counts by. */
export type RateLimitBy = 'ip' | 'key' | 'subject' | 'tenant' | 'route' | 'global';

/** One rate-limit rule, as a route, a plan or a key lists it (SPEC §7). */
export interface RateLimitRule {
  /** Shown in `RateLimit-Policy` and in a 429's `policy` member. */
  name: string;
  by: RateLimitBy;
  /** Units allowed per window. */
  limit: number;
  windowSec: number;
  /** Units one request consumes (a metered limit ignores it: the meter's reported value is the cost). */
  cost: number;
  /** `fixed-window` (unset: windows aligned to the epoch) or `sliding-window` (SPEC §10, never over-admitting). */
  algorithm?: 'fixed-window' | 'sliding-window' | undefined;
  /** `enforce` (unset) refuses with 429; `shadow` counts and reports would-be refusals, never refuses. */
  mode?: 'enforce' | 'shadow' | undefined;
  /** Counts this meter of the route (its value reported by the upstream) instead of requests. */
  meter?: string | undefined;
}

/** Who made the request, as the authenticate stage established it. */
export interface Identity {
  method: 'jwt' | 'api-key';
  /** Key id, or for a JWT `jwt_` + a hash of issuer and subject. What `by: key` counts. */
  credentialId: string;
  /** Key owner, or the JWT's principal (`sub`, or its issuer's `subjectClaim`). */
  subject: string;
  /**
   * The JWT's `iss`; for an API key made in self-service, its owner's issuer. Subjects are unique
   * only within one issuer: `alice` of two issuers are two people.
   */
  issuer?: string | undefined;
  tenant: string | undefined;
  scopes: readonly string[];
  plan: string | undefined;
  /** The key record's own rate limits, applied on top of the plan's (API keys only). */
  rateLimits: readonly RateLimitRule[] | undefined;
  /** The key record's use allowance (`remaining`), when it has one (API keys only). */
  remaining: number | undefined;
  /** Whose remaining-uses counter it draws on (a rotated key shares its predecessor's). */
  usesId?: string | undefined;
  /** A JWT's verified claims (API keys: undefined). Read by claim rules and custom policies. */
  claims?: Readonly<Record<string, unknown>> | undefined;
}

/** The stored key behind an API-key identity, as far as stages read it (a `KeyRecord` is one). */
export interface KeyCredential {
  readonly id: string;
  readonly ownerId: string | null;
  readonly ownerIssuer?: string | null | undefined;
  /** Sealed HMAC signing secret, or null. */
  readonly signingSecret: string | null;
  /** Made through self-service (its quota counts per owner by default). */
  readonly selfService?: boolean | undefined;
}

/** A quota period: calendar UTC day or month, or the key's whole life. */
export type QuotaPeriod = 'day' | 'month' | 'lifetime';

/** A plan credentials belong to (`plans.<name>`), as validated. */
export interface Plan {
  /** Keys on a plan without API access get 403 forbidden. */
  apiAccess: boolean;
  /** `meter`: counts that meter of the route instead of the route's `quota.cost` (metered routes only). */
  quota?: { limit: number; period: QuotaPeriod; meter?: string | undefined } | undefined;
  /** Whose quota a request is charged to; unset: `owner` for self-service keys, else `credential`. */
  quotaBy?: 'credential' | 'tenant' | 'owner' | undefined;
  rateLimits: RateLimitRule[];
}
