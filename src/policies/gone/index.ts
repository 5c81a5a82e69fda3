export { createGoneStage } from './gone.js';
export { goneSchema, type GoneConfig } from './schema.js';
