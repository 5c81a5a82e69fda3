export { requestId, requestIdFrom, traceparentFrom, newTraceparent, ensureContext } from './request-id.js';
