export { ProxyStage, createProxyStage, type ProxyStageOptions } from './proxy.js';
export { UpstreamPool, UpstreamRegistry, Target, type TargetHealth } from './upstream-pool.js';
export {
  requestHeaderPlan,
  upstreamRequestHeaders,
  downstreamHeaders,
  IDENTITY_HEADERS,
  UNTRUSTED_PEER_HEADERS,
  METHOD_OVERRIDE_HEADERS,
  identityHeaderValue,
  VIA,
} from './headers.js';
export { upstreamSchema, type UpstreamConfig } from './schema.js';
