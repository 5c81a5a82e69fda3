export { gone, type GoneOptions } from './middleware.js';
export { createGoneStage } from './gone.js';
export { goneSchema, type GoneConfig } from './schema.js';
