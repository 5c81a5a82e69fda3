export { headerTransforms } from './middleware.js';
export { createHeadersStage, compileHeaderTransforms } from './headers.js';
export {
  headersSchema,
  protectedReason,
  PROTECTED_REQUEST_HEADERS,
  PROTECTED_RESPONSE_HEADERS,
  type HeadersConfig,
  type HeadersOptions,
  type HeaderTransformOptions,
} from './schema.js';
