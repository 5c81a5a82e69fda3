export { mock, type MockOptions } from './middleware.js';
export { createMockStage, type MockStageOptions } from './mock.js';
export { echoDocument, echoPlan, ECHO_REDACTED_HEADERS, ECHO_REDACTED_QUERY, REDACTED } from './echo.js';
export { mockSchema, type MockConfig } from './schema.js';
