import type { Config, RouteConfig } from '../config/schema.js';
import type { ProblemWriter } from '../problems/problem-details.js';
import type { TrustFn } from '../core/client-ip.js';
import type { Stage } from '../core/stage.js';
import { createGoneStage } from '../policies/gone/gone.js';
import { createMockStage } from '../policies/mock/mock.js';
import { createBodyLimitStage } from '../policies/body-limit/body-limit.js';
import { createReadBodyStage } from '../policies/body-limit/read-body.js';
import { createProxyStage } from '../policies/proxy/proxy.js';
import { createWebSocketStage } from '../policies/websocket/websocket.js';
import { requestHeaderPlan } from '../policies/proxy/headers.js';
import { createAuthenticateStage } from '../policies/authenticate/authenticate.js';
import type { JwtVerifier } from '../policies/authenticate/jwt.js';
import { createSignatureStage } from '../policies/signature/signature.js';
import { createRateLimitStage } from '../policies/rate-limit/rate-limit.js';
import { createConcurrencyStage } from '../policies/concurrency/concurrency.js';
import { createIdempotencyStage } from '../policies/idempotency/idempotency.js';
import type { CompiledPolicy } from '../policies/custom/custom.js';
import type { PolicyPhase } from '../policies/custom/define-policy.js';
import { createNoApiKeysStage, createSelfServiceStage } from '../key-management/self-service.js';
import type { Services } from './services.js';

/** What a stage factory may use. Everything here is fixed for the life of one config. */
export interface StageBuild {
  readonly route: RouteConfig;
  readonly config: Config;
  readonly services: Services;
  readonly writer: ProblemWriter;
  readonly securityHeaders: ReadonlyArray<readonly [string, string]>;
  readonly trust: TrustFn;
  readonly trustsNobody: boolean;
  /** The JWT verifier of this config (issuers change with the config). */
  readonly jwt: JwtVerifier | undefined;
  /** The config's custom policies, built once for it. */
  readonly policies: ReadonlyMap<string, CompiledPolicy>;
  /** Set when the route is the self-service endpoint (SPEC §6), a route kind of its own. */
  readonly selfService: NonNullable<Config['selfService']> | undefined;
}

interface PipelineEntry {
  readonly name: string;
  /** The stage(s) for this route, or undefined when the route does not use it. */
  readonly build: (b: StageBuild) => Stage | readonly Stage[] | undefined;
}

/** Self-service answers small JSON bodies: it never reads more than this. */
const SELF_SERVICE_BODY_BYTES = 65_536;

/**
 * THE order of the request pipeline. Route config switches stages on and off; it never reorders
 * them. Why this order:
 * - `gone` first: a retired route answers 410 whatever else it says.
 * - `websocket` (websocket routes) right after: a malformed handshake is refused before any work,
 *   and `access_token` leaves the query before any stage (authentication included) or log sees it.
 * - `body-limit` before anything reads the body, and before authentication so an oversized
 *   upload is refused without a key lookup.
 * - `no-api-keys` (self-service only): API keys cannot manage keys, whatever else is sent.
 * - `policies: early` before authentication (a custom policy that refuses by header or address
 *   costs no key lookup).
 * - `authenticate` before anything that depends on who is calling (limits, quotas, idempotency
 *   scopes), and before the body is buffered: an anonymous upload is refused unread.
 * - `read-body` (only where the exact bytes are hashed, or self-service parses them) before the
 *   stages that read them.
 * - `verify-signature` right after: the signature covers the body.
 * - `rate-limit` (rate limits, quota and the key's remaining uses, in one round trip) after
 *   authentication, so limits can count by key, subject and tenant, and failed authentication
 *   costs no budget.
 * - `concurrency` right after the rate limits: a request they refuse takes no slot (and costs no
 *   slot round trip); the slot is held from here until the response ends or the client leaves.
 * - `policies: late` (the default phase) after limits: a custom policy sees who is calling and
 *   cannot be used to skip the limits.
 * - `idempotency` last before the answer: a replay or a conflict needs to know the caller (scope),
 *   the body (fingerprint) and must not bypass limits; the lock is held only while the answer runs.
 * - the terminal stages (`mock`, `self-service`, `proxy`) last; exactly one of them (or `gone`)
 *   is on a route.
 */
export const PIPELINE: readonly PipelineEntry[] = [
  { name: 'gone', build: (b) => (b.route.gone ? createGoneStage(b.route.gone) : undefined) },
  { name: 'websocket', build: (b) => (b.route.websocket ? createWebSocketStage() : undefined) },
  {
    name: 'body-limit',
    build: (b) => (b.route.gone ? undefined : createBodyLimitStage(b.config.limits.bodyBytes)),
  },
  {
    name: 'no-api-keys',
    build: (b) =>
      b.selfService
        ? createNoApiKeysStage(b.config.auth.apiKeys.header, b.config.auth.apiKeys.prefix)
        : undefined,
  },
  { name: 'policies:early', build: (b) => customPolicies(b, 'early') },
  {
    name: 'authenticate',
    build: (b) =>
      b.route.auth === 'none'
        ? undefined
        : createAuthenticateStage(b.route.auth, {
            keys: b.services.keys,
            jwt: b.jwt,
            plans: b.config.plans,
            apiKeyHeader: b.config.auth.apiKeys.header,
            clock: b.services.clock,
          }),
  },
  {
    name: 'read-body',
    build: (b) =>
      b.selfService
        ? createReadBodyStage(Math.min(b.config.limits.bodyBytes, SELF_SERVICE_BODY_BYTES))
        : needsRawBody(b.route)
          ? createReadBodyStage(b.config.limits.bodyBytes)
          : undefined,
  },
  {
    name: 'verify-signature',
    build: (b) =>
      b.route.auth === 'none' || b.route.auth.hmac === 'off'
        ? undefined
        : createSignatureStage(b.route.auth.hmac, {
            keys: b.services.keys,
            replay: b.config.auth.hmac.replayProtection ? b.services.replay : undefined,
            toleranceSec: b.config.auth.hmac.toleranceSec,
            clock: b.services.clock,
          }),
  },
  {
    name: 'rate-limit',
    build: (b) =>
      b.route.gone || b.selfService || (b.route.auth === 'none' && b.route.rateLimits.length === 0)
        ? undefined
        : createRateLimitStage({
            routeId: b.route.id,
            rateLimits: b.route.rateLimits,
            quotaCost: b.route.quota?.cost,
            plans: b.config.plans,
            counters: b.services.counters,
            clock: b.services.clock,
            local: b.route.mock !== undefined,
          }),
  },
  {
    name: 'concurrency',
    build: (b) =>
      b.route.concurrency === undefined || b.route.gone
        ? undefined
        : createConcurrencyStage({
            routeId: b.route.id,
            config: b.route.concurrency,
            store: b.services.concurrency,
            onError: (err) => b.services.logger.debug({ err }, 'concurrency slot renewal or release failed'),
          }),
  },
  { name: 'policies:late', build: (b) => customPolicies(b, 'late') },
  {
    name: 'idempotency',
    build: (b) => {
      const config = b.route.idempotency;
      if (config === undefined || b.route.gone) return undefined;
      // A lock outlives the first request only by a margin: if its gateway dies, the key frees itself.
      const lockTtlMs = Math.min((b.route.upstream?.timeoutMs ?? 5_000) + 5_000, config.ttlSec * 1000);
      return createIdempotencyStage({
        config,
        store: b.services.idempotency,
        lockTtlMs,
        failOpen: b.config.redis?.onError === 'open',
      });
    },
  },
  {
    name: 'mock',
    build: (b) => (b.route.mock ? createMockStage(b.route.mock, b.securityHeaders) : undefined),
  },
  {
    name: 'self-service',
    build: (b) =>
      b.selfService
        ? createSelfServiceStage({
            config: b.selfService,
            management: b.services.management,
            apiKeyHeader: b.config.auth.apiKeys.header,
            apiKeyPrefix: b.config.auth.apiKeys.prefix,
            issuers: b.config.auth.jwt.map((i) => i.issuer),
            clock: b.services.clock,
            securityHeaders: b.securityHeaders,
          })
        : undefined,
  },
  {
    name: 'proxy',
    build: (b) => {
      const upstream = b.route.upstream;
      if (!upstream) return undefined;
      return createProxyStage({
        upstream,
        upstreamErrors: b.route.upstreamErrors,
        pool: b.services.upstreams.pool(upstream, b.route.id),
        headers: requestHeaderPlan({
          apiKeyHeader: b.config.auth.apiKeys.header,
          apiKeyPrefix: b.config.auth.apiKeys.prefix,
          preserveHost: upstream.preserveHost,
          trust: b.trust,
          trustsNobody: b.trustsNobody,
        }),
        writer: b.writer,
        clock: b.services.clock,
        bodyLimit: b.config.limits.bodyBytes,
        logger: b.services.logger,
        onUpstreamError: (ctx, target, code) =>
          b.services.metrics.upstreamError(b.route.id, target.origin, code),
        websocket: b.route.websocket && {
          idleTimeoutMs: b.route.websocket.idleTimeoutSec * 1000,
          tunnels: b.services.websockets,
        },
      });
    },
  },
];

/** The route's custom policies of one phase, in the route's order. */
function customPolicies(b: StageBuild, phase: PolicyPhase): Stage[] | undefined {
  const stages: Stage[] = [];
  for (const name of b.route.policies) {
    const policy = b.policies.get(name);
    if (policy !== undefined && policy.phase === phase) stages.push(policy.stage);
  }
  return stages.length === 0 ? undefined : stages;
}

/** HMAC signatures and idempotency fingerprints hash the exact body bytes: those routes buffer it. */
export function needsRawBody(route: RouteConfig): boolean {
  if (route.gone) return false;
  const signed = route.auth !== 'none' && route.auth.hmac !== 'off';
  return signed || route.idempotency !== undefined;
}

/** The self-service endpoint as a route (SPEC §6): JWT users only, no upstream. */
export function selfServiceRoute(selfService: NonNullable<Config['selfService']>): RouteConfig {
  return {
    id: 'self-service',
    path: selfService.path,
    auth: { methods: ['jwt'], scopes: [], hmac: 'off' },
    rateLimits: [],
    policies: [],
    upstreamErrors: 'rewrite',
    websocket: undefined,
  };
}

/** The stages of one route, in pipeline order. */
export function buildRouteStages(b: StageBuild): Stage[] {
  const stages: Stage[] = [];
  for (const entry of PIPELINE) {
    const built = entry.build(b);
    if (built === undefined) continue;
    if (Array.isArray(built)) stages.push(...(built as readonly Stage[]));
    else stages.push(built as Stage);
  }
  return stages;
}
