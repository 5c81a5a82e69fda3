export { createConcurrencyStage, CONCURRENCY_POLICY, type ConcurrencyStageOptions } from './concurrency.js';
export { concurrency, type ConcurrencyOptions } from './middleware.js';
export { concurrencySchema, type ConcurrencyConfig } from './schema.js';
export {
  MemoryConcurrency,
  RedisConcurrency,
  ResilientConcurrency,
  type ConcurrencyStore,
  type Slot,
} from './store.js';
