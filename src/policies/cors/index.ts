export { cors, type CorsOptions } from './middleware.js';
export { createCorsStage, ALWAYS_EXPOSED, DEFAULT_METHODS, type CorsStageOptions } from './cors.js';
export { corsSchema, routeCorsSchema, originProblem, type CorsConfig } from './schema.js';
