export { createMockStage } from './mock.js';
export { mockSchema, type MockConfig } from './schema.js';
