export { bodyLimit, type BodyLimitOptions } from './middleware.js';
export { createBodyLimitStage } from './body-limit.js';
export { createReadBodyStage } from './read-body.js';
export { bodyBytesSchema, DEFAULT_BODY_BYTES, routeLimitsSchema, type RouteLimitsConfig } from './schema.js';
