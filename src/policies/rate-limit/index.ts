export { rateLimit, quota, type RateLimitOptions, type QuotaOptions } from './middleware.js';
export { createLimitsStage, remainingCounter, type LimitsOptions } from './rate-limit.js';
export {
  MemoryCounters,
  RedisCounters,
  type CounterStore,
  type CounterSpec,
  type ConsumeResult,
} from './counters.js';
export { ResilientCounters } from './resilient-counters.js';
export { rateLimitSchema, rateLimitListSchema, type RateLimitConfig } from './schema.js';
