export {
  requestId,
  requestIdFrom,
  traceparentFrom,
  newTraceparent,
  ensureContext,
} from '../../core/request-id.js';
