export { mock, type MockOptions } from './middleware.js';
export { createMockStage } from './mock.js';
export { mockSchema, type MockConfig } from './schema.js';
