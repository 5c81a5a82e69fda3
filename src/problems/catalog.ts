/**
 * The problem catalog of SPEC §3 as data: slug → status, title and a one-line description.
 * Every error Tollgate answers is made from one of these entries; `docs/problems.md` and the
 * README's table are generated from (and checked against) this object.
 */
export const catalog = {
  'missing-credentials': {
    status: 401,
    title: 'Missing credentials',
    when: 'No `Authorization` header and no API key header on a route that needs a credential.',
  },
  'invalid-credentials': {
    status: 401,
    title: 'Invalid credentials',
    when: 'Unknown, revoked or disabled key; bad JWT signature, issuer, audience or `nbf` in the future; two different credentials in one request; a wrong admin token.',
  },
  'expired-credentials': {
    status: 401,
    title: 'Expired credentials',
    when: 'An API key past its `expiresAt`, or a JWT past its `exp`.',
  },
  'invalid-signature': {
    status: 401,
    title: 'Invalid signature',
    when: 'The HMAC `X-Signature` is missing (when the route requires it), malformed or wrong.',
  },
  'timestamp-skew': {
    status: 401,
    title: 'Timestamp outside the allowed window',
    when: '`X-Timestamp` is missing, not an integer, or outside ±`auth.hmac.toleranceSec` of the gateway clock.',
  },
  'replayed-request': {
    status: 401,
    title: 'Replayed request',
    when: 'A signed request already seen inside the tolerance window.',
  },
  'insufficient-scope': {
    status: 403,
    title: 'Insufficient scope',
    when: 'The credential lacks a scope the route requires.',
  },
  forbidden: {
    status: 403,
    title: 'Forbidden',
    when: 'The plan has no `apiAccess`; a credential of a kind the route does not accept (an API key on a JWT-only route); an API key was used on key management; another policy refused.',
  },
  'quota-exceeded': {
    status: 402,
    title: 'Quota exceeded',
    when: "The plan's quota for the period, or the key's `remaining` uses, are exhausted.",
  },
  'rate-limit-exceeded': {
    status: 429,
    title: 'Rate limit exceeded',
    when: 'A rate limit of the route, the plan or the key was hit.',
  },
  conflict: {
    status: 409,
    title: 'Conflict',
    when: 'Key management: too many active keys for one owner, or another state conflict.',
  },
  'idempotency-conflict': {
    status: 409,
    title: 'Idempotency key conflict',
    when: 'The `Idempotency-Key` is in flight, or was used before with a different request.',
  },
  'validation-failed': {
    status: 400,
    title: 'Validation failed',
    when: 'Bad JSON or fields on a gateway-owned endpoint; a bad `Idempotency-Key`; a required key missing.',
  },
  'not-found': {
    status: 404,
    title: 'Not found',
    when: 'No route matches the path; an unknown (or another owner’s) key id on key management.',
  },
  'method-not-allowed': {
    status: 405,
    title: 'Method not allowed',
    when: 'The route exists but does not list the method; TRACE on a route without a `methods` list; CONNECT.',
  },
  gone: {
    status: 410,
    title: 'Gone',
    when: 'The route was retired (`gone` route).',
  },
  'payload-too-large': {
    status: 413,
    title: 'Payload too large',
    when: 'The request body is over `limits.bodyBytes`.',
  },
  'bad-request': {
    status: 400,
    title: 'Bad request',
    when: "A request Node's HTTP parser refused (malformed request line, headers or framing); a path the gateway will not route; a request target with a fragment (`#`); a missing, repeated or malformed `Host`.",
  },
  'headers-too-large': {
    status: 431,
    title: 'Request header fields too large',
    when: "The request line and headers are over the server's limit.",
  },
  'expectation-failed': {
    status: 417,
    title: 'Expectation failed',
    when: 'An `Expect` header other than `100-continue` (RFC 9110 §10.1.1).',
  },
  'bad-gateway': {
    status: 502,
    title: 'Bad gateway',
    when: 'The upstream refused the connection, reset it, or sent an invalid response.',
  },
  'service-unavailable': {
    status: 503,
    title: 'Service unavailable',
    when: 'No healthy target; a dependency the request needs is down (JWKS, Redis when failing closed); the gateway is draining.',
  },
  'gateway-timeout': {
    status: 504,
    title: 'Gateway timeout',
    when: 'The upstream did not answer within the route’s `upstream.timeoutMs`.',
  },
  'internal-error': {
    status: 500,
    title: 'Internal error',
    when: 'Anything unexpected. The cause is logged with the request id, never sent.',
  },
} as const satisfies Record<string, { status: number; title: string; when: string }>;

export type ProblemSlug = keyof typeof catalog;

/** Named extension members and headers per slug, as SPEC §3 fixes them (used by docs and tests). */
export const catalogExtras: Partial<Record<ProblemSlug, string>> = {
  'missing-credentials': '`WWW-Authenticate`',
  'invalid-credentials': '`WWW-Authenticate`',
  'timestamp-skew': '`server_time`',
  'insufficient-scope': '`required_scope`',
  'quota-exceeded': '`limit`, `resets_at`',
  'rate-limit-exceeded': '`Retry-After`, `RateLimit`, `RateLimit-Policy`; `policy`',
  'idempotency-conflict': '`reason`: `in-flight` / `payload-mismatch`; `Retry-After` when in flight',
  'validation-failed': '`errors`: `[{pointer, message}]`',
  'method-not-allowed': '`Allow`',
  gone: '`redirect_endpoint`; `Sunset`, `Deprecation`',
  'service-unavailable': '`Retry-After`',
};

export const problemSlugs = Object.keys(catalog) as ProblemSlug[];
