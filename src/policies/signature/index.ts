export { signature, signatureStages, type SignatureOptions } from './middleware.js';
export { createSignatureStage, sign, signingString, type SignatureDeps } from './signature.js';
export { MemoryReplayStore, RedisReplayStore, type ReplayStore } from './replay-store.js';
export {
  hmacSchema,
  routeHmacSchema,
  replayCacheSchema,
  type HmacConfig,
  type HmacOptions,
} from './schema.js';
