/**
 * Tollgate as a library (SPEC §8): the gateway's pieces as Express 5 middleware, and
 * `createGateway(config)` which assembles them from a config object.
 */
export {
  createGateway,
  Gateway,
  ConfigError,
  type GatewayOptions,
  type ReloadStatus,
} from './gateway/create-gateway.js';
export { GatewayProcess, type StartOptions } from './main.js';
export { createHttpServer, expressConstructors } from './gateway/server.js';
export { RequestContext, contextOf, type Identity, type CloseHook } from './core/context.js';
export type { Stage } from './core/stage.js';

export { requestIdFrom, traceparentFrom } from './core/request-id.js';
export { requestId, toMiddleware, ensureContext } from './core/middleware.js';
export { proxy, type ProxyOptions } from './policies/proxy/middleware.js';
export { authenticate, type AuthenticateOptions } from './policies/authenticate/index.js';
export { signature, sign, signingString, type SignatureOptions } from './policies/signature/index.js';
export { rateLimit, type RateLimitOptions } from './policies/rate-limit/index.js';
export { quota, type QuotaOptions } from './policies/quota/index.js';
export {
  MemoryCounters,
  RedisCounters,
  ResilientCounters,
  type CounterStore,
} from './policies/rate-limit/index.js';
export {
  idempotency,
  MemoryIdempotencyStore,
  RedisIdempotencyStore,
  type IdempotencyMiddlewareOptions,
  type IdempotencyStore,
} from './policies/idempotency/index.js';
export { KeyService, type CreateKeyInput, type CreatedKey, type KeyPatch } from './keys/service.js';
export { MemoryKeyStore } from './keys/memory-store.js';
export { RedisKeyStore } from './keys/redis-store.js';
export { SecretBox } from './keys/secret-box.js';
export { generateKey, parseKey, maskKey } from './keys/format.js';
export type { KeyRecord, KeyView, KeyStore } from './keys/record.js';
export {
  problemDetails,
  ProblemWriter,
  toProblem,
  type ProblemDetailsOptions,
} from './problems/problem-details.js';
export { Problem, isProblem, type ProblemOptions } from './problems/problem.js';
export { catalog, problemSlugs, type ProblemSlug } from './problems/catalog.js';

export {
  configSchema,
  type Config,
  type ConfigInput,
  type RouteConfig,
  type PlanConfig,
} from './config/schema.js';
export { validateConfig, parseConfigText, loadConfigFile, type LoadResult } from './config/load.js';
export type { ConfigIssue } from './config/issues.js';
export { systemClock, ManualClock, type Clock } from './core/clock.js';
