export { authenticate, type AuthenticateOptions } from './middleware.js';
export { createAuthenticateStage, type AuthenticateDeps } from './authenticate.js';
export { createSignatureStage, sign, signingString } from '../signature/signature.js';
export { JwtVerifier, scopesOf } from './jwt.js';
export { RemoteJwks, JwksUnavailableError } from './jwks.js';
export { MemoryReplayStore, RedisReplayStore, type ReplayStore } from '../signature/replay-store.js';
export {
  authSchema,
  routeAuthSchema,
  jwtIssuerSchema,
  type AuthConfig,
  type JwtIssuerConfig,
  type RouteAuthConfig,
} from './schema.js';
