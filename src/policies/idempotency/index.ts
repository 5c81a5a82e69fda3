export { idempotency, type IdempotencyMiddlewareOptions } from './middleware.js';
export { createIdempotencyStage, parseIdempotencyKey, type IdempotencyOptions } from './idempotency.js';
export {
  MemoryIdempotencyStore,
  RedisIdempotencyStore,
  type IdempotencyStore,
  type StoredResponse,
} from './store.js';
export { idempotencySchema, type IdempotencyConfig } from './schema.js';
