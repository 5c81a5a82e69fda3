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
import { createRateLimitStage, type RateLimitStageOptions } from '../policies/rate-limit/rate-limit.js';
import { createConcurrencyStage } from '../policies/concurrency/concurrency.js';
import { createIdempotencyStage } from '../policies/idempotency/idempotency.js';
import { createFaultStage } from '../policies/fault/fault.js';
import { createHeadersStage } from '../policies/headers/headers.js';
import type { CompiledPolicy } from '../policies/custom/custom.js';
import type { PolicyPhase } from '../policies/custom/define-policy.js';
import { createNoApiKeysStage, createSelfServiceStage } from '../key-management/self-service.js';
import { createIpRulesStage } from '../policies/ip-rules/ip-rules.js';
import { createCorsStage } from '../policies/cors/cors.js';
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
  /**
   * A front stage runs before the gateway's method check (405), and its top-level form also on
   * answers no route gets to (404): synchronous, and about the client, not the route's work.
   */
  readonly front?: true;
}

/** Self-service answers small JSON bodies: it never reads more than this. */
const SELF_SERVICE_BODY_BYTES = 65_536;

/**
 * THE order of the request pipeline. Route config switches stages on and off; it never reorders
 * them. Why this order:
 * - `ip-rules` (front) first of all: a client the rules refuse learns nothing else — not whether
 *   a route exists (404), its methods (405), its CORS policy, or that it is retired (410).
 * - `cors` (front) next, before the method check, body-limit and authentication: a preflight
 *   (`OPTIONS`, no credentials) is answered on any route, and the headers it sets on an allowed
 *   origin's request stay on every later answer, the gateway's own problems included.
 * - `gone` first of the route's stages: a retired route answers 410 whatever else it says.
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
 * - `fault` after authentication, limits and late policies, so a load test pays for all of them
 *   (an injected abort was counted by the rate limits; quota and `remaining` are refunded, as for
 *   any answer the route did not give), and before idempotency: an injected abort takes no key
 *   and is never stored as the key's answer, so the client's retry with that key runs for real.
 * - `idempotency` last before the answer: a replay or a conflict needs to know the caller (scope),
 *   the body (fingerprint) and must not bypass limits; the lock is held only while the answer runs.
 * - `headers` (the route's header transforms) right before the answer: a transform cannot hide
 *   a credential from authentication or change what limits and idempotency see; it shapes only
 *   what goes upstream and what comes back.
 * - the terminal stages (`mock`, `self-service`, `proxy`) last; exactly one of them (or `gone`)
 *   is on a route.
 */
export const PIPELINE: readonly PipelineEntry[] = [
  {
    name: 'ip-rules',
    front: true,
    // The top-level rules hold on every route; a route's own rules apply on top of them.
    build: (b) => createIpRulesStage(b.config.ipRules, b.route.ipRules),
  },
  {
    name: 'cors',
    front: true,
    build: (b) => corsStage(b.route.cors ?? b.config.cors, b.route.methods, b.securityHeaders),
  },
  { name: 'gone', build: (b) => (b.route.gone ? createGoneStage(b.route.gone) : undefined) },
  { name: 'websocket', build: (b) => (b.route.websocket ? createWebSocketStage() : undefined) },
  {
    name: 'body-limit',
    build: (b) => (b.route.gone ? undefined : createBodyLimitStage(routeBodyBytes(b))),
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
            events: b.config.webhooks.some((w) => w.events.includes('key.expired'))
              ? b.services.webhooks
              : undefined,
          }),
  },
  {
    name: 'read-body',
    build: (b) =>
      b.selfService
        ? createReadBodyStage(Math.min(b.config.limits.bodyBytes, SELF_SERVICE_BODY_BYTES))
        : needsRawBody(b.route)
          ? createReadBodyStage(routeBodyBytes(b))
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
            // A signed retry with an Idempotency-Key is settled by the idempotency stage (SPEC §10).
            idempotentMethods:
              b.route.idempotency === undefined ? undefined : new Set<string>(b.route.idempotency.methods),
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
            meters: b.route.meters,
            onMeterMissing: (meter) => b.services.metrics.meterMissing(b.route.id, meter),
            quotaEvents: quotaEvents(b),
            usage: b.services.usage,
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
    name: 'fault',
    build: (b) =>
      b.route.fault === undefined || b.route.gone
        ? undefined
        : createFaultStage({
            fault: b.route.fault,
            clock: b.services.clock,
            random: b.services.random,
            onInjected: (_ctx, kind) => b.services.metrics.faultInjected(b.route.id, kind),
          }),
  },
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
  { name: 'headers', build: (b) => (b.route.headers ? createHeadersStage(b.route.headers) : undefined) },
  {
    name: 'mock',
    build: (b) =>
      b.route.mock
        ? createMockStage(b.route.mock, b.securityHeaders, {
            clock: b.services.clock,
            random: b.services.random,
            bodyLimit: routeBodyBytes(b),
            apiKeyHeader: b.config.auth.apiKeys.header,
            apiKeyPrefix: b.config.auth.apiKeys.prefix,
          })
        : undefined,
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
          issuers: b.config.auth.jwt,
        }),
        writer: b.writer,
        clock: b.services.clock,
        bodyLimit: routeBodyBytes(b),
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

/** The CORS stage of a route's (or the top-level) settings; none for `off` or unset. */
function corsStage(
  cors: RouteConfig['cors'],
  routeMethods: readonly string[] | undefined,
  securityHeaders: ReadonlyArray<readonly [string, string]>,
): Stage | undefined {
  return cors === undefined || cors === 'off'
    ? undefined
    : createCorsStage(cors, { routeMethods, securityHeaders });
}

/**
 * The front stages of answers no route gets to (404 no route, a bad request target): the
 * top-level IP rules and CORS.
 */
export function buildTopLevelFront(
  config: Config,
  securityHeaders: ReadonlyArray<readonly [string, string]>,
): Stage[] {
  const stages: Stage[] = [];
  const ip = createIpRulesStage(config.ipRules);
  if (ip !== undefined) stages.push(ip);
  const cors = corsStage(config.cors, undefined, securityHeaders);
  if (cors !== undefined) stages.push(cors);
  return stages;
}

/** What quota events the config's webhooks take (fixed per config: a reload rebuilds the stages). */
function quotaEvents(b: StageBuild): RateLimitStageOptions['quotaEvents'] {
  const hooks = b.config.webhooks;
  const thresholds = [
    ...new Set(hooks.filter((w) => w.events.includes('quota.threshold')).flatMap((w) => w.thresholds)),
  ].sort((x, y) => x - y);
  const exhausted = hooks.some((w) => w.events.includes('quota.exhausted'));
  return thresholds.length === 0 && !exhausted
    ? undefined
    : { sink: b.services.webhooks, thresholds, exhausted };
}

/** The route's custom policies of one phase, in the route's order. */
function customPolicies(b: StageBuild, phase: PolicyPhase): Stage[] | undefined {
  const stages: Stage[] = [];
  for (const name of b.route.policies) {
    const policy = b.policies.get(name);
    if (policy !== undefined && policy.phase === phase) stages.push(policy.stage);
  }
  return stages.length === 0 ? undefined : stages;
}

/** The route's body limit: its own `limits.bodyBytes`, else the top-level one (SPEC §9). */
export function routeBodyBytes(b: StageBuild): number {
  return b.route.limits?.bodyBytes ?? b.config.limits.bodyBytes;
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

/** The stages of one route, in pipeline order: `front` ones (`front: true`), or the others. */
export function buildRouteStages(b: StageBuild, front = false): Stage[] {
  const stages: Stage[] = [];
  for (const entry of PIPELINE) {
    if ((entry.front === true) !== front) continue;
    const built = entry.build(b);
    if (built === undefined) continue;
    if (Array.isArray(built)) stages.push(...(built as readonly Stage[]));
    else stages.push(built as Stage);
  }
  return stages;
}
