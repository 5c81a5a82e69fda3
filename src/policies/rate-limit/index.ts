export { rateLimit, type RateLimitOptions, type RateLimitRuleOptions } from './middleware.js';
export { createRateLimitStage, rateCounter, type RateLimitStageOptions } from './rate-limit.js';
export {
  MemoryCounters,
  RedisCounters,
  hashTag,
  type CounterStore,
  type CounterSpec,
  type ConsumeResult,
} from './counters.js';
export { ResilientCounters } from './resilient-counters.js';
export { rateLimitSchema, rateLimitListSchema, type RateLimitConfig } from './schema.js';
