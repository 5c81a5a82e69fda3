export { authenticate, type AuthenticateOptions } from './middleware.js';
export { createKeyService, type KeyServiceOptions } from './key-service.js';
export { createAuthenticateStage, type AuthenticateDeps } from './authenticate.js';
export { JwtVerifier, scopesOf } from './jwt.js';
export { RemoteJwks, JwksUnavailableError } from './jwks.js';
export {
  authSchema,
  apiKeysSchema,
  routeAuthSchema,
  jwtIssuerSchema,
  type AuthConfig,
  type JwtIssuerConfig,
  type RouteAuthConfig,
  type AuthOptions,
  type ApiKeysOptions,
  type JwtIssuerOptions,
  type RouteAuthOptions,
} from './schema.js';
