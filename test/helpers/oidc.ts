import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import Provider from 'oidc-provider';
import { exportJWK, generateKeyPair, type JWK } from 'jose';

/**
 * A real OpenID Connect provider (panva's `oidc-provider`) on a loopback port, issuing JWT access
 * tokens for the `client_credentials` grant. Its signing keys rotate the way a real deployment
 * rotates them (a new provider instance with a new key first and the old one kept for
 * verification), and it can be stopped (the port closes: connection refused) and started again.
 */
export interface OidcProvider {
  issuer: string;
  jwksUri: string;
  /** Requests the gateway (or anyone) made to the JWKS endpoint. */
  readonly jwksFetches: number;
  /** The kid new tokens are signed with. */
  currentKid: string;
  /** A fresh access token (a new `jti` each time, so the gateway's token cache never answers). */
  accessToken(): Promise<string>;
  /** A new signing key first; the previous one stays published for tokens already issued. */
  rotate(kid: string): Promise<void>;
  stop(): Promise<void>;
  start(): Promise<void>;
  close(): Promise<void>;
}

const CLIENT_ID = 'orders-service';
const CLIENT_SECRET = 'orders-service-secret-0123456789';

async function privateJwk(kid: string): Promise<JWK> {
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  return { ...(await exportJWK(privateKey)), kid, alg: 'RS256', use: 'sig' };
}

function provider(issuer: string, keys: JWK[], audience: string): Provider {
  return new Provider(issuer, {
    clients: [
      {
        client_id: CLIENT_ID,
        client_secret: CLIENT_SECRET,
        grant_types: ['client_credentials'],
        redirect_uris: [],
        response_types: [],
      },
    ],
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => audience,
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({
          scope: 'orders:read',
          audience,
          accessTokenFormat: 'jwt',
          accessTokenTTL: 300,
          jwt: { sign: { alg: 'RS256' } },
        }),
      },
    },
    ttl: { ClientCredentials: 300 },
    jwks: { keys },
  });
}

export async function startOidcProvider(
  options: { audience?: string; kid?: string } = {},
): Promise<OidcProvider> {
  const audience = options.audience ?? 'api://orders';
  const sockets = new Set<Socket>();
  let jwksFetches = 0;
  let handler: (req: http.IncomingMessage, res: http.ServerResponse) => void = () => undefined;
  const server = http.createServer((req, res) => {
    if (req.url?.startsWith('/jwks')) jwksFetches++;
    handler(req, res);
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  const issuer = `http://127.0.0.1:${port}`;
  let keys = [await privateJwk(options.kid ?? 'k1')];
  const mount = () => {
    handler = provider(issuer, keys, audience).callback();
  };
  mount();
  const discovery = (await (await fetch(`${issuer}/.well-known/openid-configuration`)).json()) as {
    jwks_uri: string;
    token_endpoint: string;
  };
  const stopServer = () =>
    new Promise<void>((r) => {
      if (!server.listening) return r();
      for (const s of sockets) s.destroy();
      server.close(() => r());
    });
  const state: OidcProvider = {
    issuer,
    jwksUri: discovery.jwks_uri,
    get jwksFetches() {
      return jwksFetches;
    },
    currentKid: keys[0]!.kid!,
    async accessToken() {
      const res = await fetch(discovery.token_endpoint, {
        method: 'POST',
        headers: {
          'content-type': 'application/x-www-form-urlencoded',
          authorization: `Basic ${Buffer.from(`${CLIENT_ID}:${CLIENT_SECRET}`).toString('base64')}`,
        },
        body: new URLSearchParams({
          grant_type: 'client_credentials',
          scope: 'orders:read',
          resource: audience,
        }),
      });
      const body = (await res.json()) as { access_token?: string };
      if (typeof body.access_token !== 'string') throw new Error(`no token: ${JSON.stringify(body)}`);
      return body.access_token;
    },
    async rotate(kid) {
      keys = [await privateJwk(kid), keys[0]!];
      state.currentKid = kid;
      mount();
    },
    stop: stopServer,
    start: () => new Promise<void>((r) => server.listen(port, '127.0.0.1', r)),
    close: stopServer,
  };
  return state;
}
