/**
 * Tollgate as a library (SPEC §8, §12): the gateway's pieces as Express 5 middleware,
 * `createGateway(config)` which assembles them from a config object, and the policy API —
 * `definePolicy`, `Stage`, `RequestContext`, `fakeContext` — the built-in policies are written with.
 */

// The gateway
export {
  createGateway,
  Gateway,
  ConfigError,
  type GatewayOptions,
  type MiddlewareFactory,
  type ReloadStatus,
} from './gateway/create-gateway.js';
export { GatewayProcess, type StartOptions } from './main.js';
export { createHttpServer, expressConstructors } from './gateway/server.js';

// The policy API (core/)
export {
  RequestContext,
  contextOf,
  finalStatus,
  type CloseHook,
  type Identity,
  type KeyCredential,
  type Plan,
  type QuotaPeriod,
  type RateLimitBy,
  type RateLimitRule,
  type RequestTrace,
  type UpstreamSink,
  type UpstreamTrace,
} from './core/context.js';
export { runStages, type Stage } from './core/stage.js';
export { toMiddleware, ensureContext, requestId, type MiddlewareOptions } from './core/middleware.js';
export { requestIdFrom, traceparentFrom } from './core/request-id.js';
export {
  fakeContext,
  type FakeContext,
  type FakeRequestOptions,
  type FakeResponse,
} from './core/fake-context.js';
export { systemClock, ManualClock, type Clock } from './core/clock.js';
export {
  definePolicy,
  isPolicy,
  policy,
  policyStage,
  type Policy,
  type PolicyDefinition,
  type PolicyHandler,
  type PolicyIdentity,
  type PolicyPhase,
  type PolicyRequest,
  type PolicyMiddlewareOptions,
  type OptionsSchema,
  type OptionsIssue,
} from './policies/custom/index.js';

// Built-in policies as Express middleware
export { proxy, type ProxyOptions, type ProxyMiddleware } from './policies/proxy/middleware.js';
export type { UpstreamOptions } from './policies/proxy/schema.js';
export {
  authenticate,
  createKeyService,
  type KeyServiceOptions,
  type AuthenticateOptions,
  type AuthOptions,
  type ApiKeysOptions,
  type JwtIssuerOptions,
  type RouteAuthOptions,
} from './policies/authenticate/index.js';
export {
  signature,
  sign,
  signingString,
  MemoryReplayStore,
  RedisReplayStore,
  type SignatureOptions,
  type HmacOptions,
  type ReplayStore,
} from './policies/signature/index.js';
export {
  rateLimit,
  MemoryCounters,
  RedisCounters,
  ResilientCounters,
  type RateLimitOptions,
  type RateLimitRuleOptions,
  type CounterStore,
  type CounterSpec,
  type ConsumeResult,
} from './policies/rate-limit/index.js';
export { quota, type QuotaOptions, type QuotaBy } from './policies/quota/index.js';
export {
  concurrency,
  MemoryConcurrency,
  RedisConcurrency,
  ResilientConcurrency,
  type ConcurrencyOptions,
  type ConcurrencyStore,
} from './policies/concurrency/index.js';
export {
  idempotency,
  MemoryIdempotencyStore,
  RedisIdempotencyStore,
  type IdempotencyMiddlewareOptions,
  type IdempotencyStore,
} from './policies/idempotency/index.js';
export { mock, type MockOptions } from './policies/mock/index.js';
export { fault, type FaultOptions } from './policies/fault/index.js';
export { gone, type GoneOptions } from './policies/gone/index.js';
export { bodyLimit, type BodyLimitOptions } from './policies/body-limit/index.js';
export {
  headerTransforms,
  type HeadersOptions,
  type HeaderTransformOptions,
} from './policies/headers/index.js';
export { cors, type CorsOptions } from './policies/cors/index.js';
export { ipRules, type IpRulesOptions } from './policies/ip-rules/index.js';

// Keys
export { KeyService, type CreateKeyInput, type CreatedKey, type KeyPatch } from './keys/service.js';
export { MemoryKeyStore } from './keys/memory-store.js';
export { RedisKeyStore } from './keys/redis-store.js';
export { SecretBox } from './keys/secret-box.js';
export { generateKey, parseKey, maskKey } from './keys/format.js';
export type { KeyRecord, KeyView, KeyStore } from './keys/record.js';

// Redis
export { RedisHandle, createRedis, type RedisOptions } from './shared/redis.js';

// Problems
export {
  problemDetails,
  notFound,
  ProblemWriter,
  toProblem,
  type InstanceOption,
  type ProblemDetailsOptions,
} from './problems/problem-details.js';
export { Problem, isProblem, type ProblemOptions } from './problems/problem.js';
export { catalog, problemSlugs, type ProblemSlug } from './problems/catalog.js';

// Config
export {
  configSchema,
  type Config,
  type ConfigInput,
  type RouteConfig,
  type PlanConfig,
} from './config/schema.js';
export { configJsonSchema } from './config/json-schema.js';
export { validateConfig, parseConfigText, loadConfigFile, type LoadResult } from './config/load.js';
export type { ConfigIssue } from './config/issues.js';
