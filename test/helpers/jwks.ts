import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { SignJWT, exportJWK, generateKeyPair, type JWK, type JWTPayload, type CryptoKey } from 'jose';

export interface SigningKey {
  kid: string;
  privateKey: CryptoKey;
  jwk: JWK;
}

export async function signingKey(kid: string, alg = 'RS256'): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };
  return { kid, privateKey, jwk };
}

/** A real JWKS endpoint served over HTTP by the test; its key set can change and it can go down. */
export interface JwksServer {
  url: string;
  keys: SigningKey[];
  fetches: number;
  down: boolean;
  /** Each answer is held this long (a slow identity provider). */
  delayMs: number;
  /** Holds every answer until the returned function is called: a slow provider without a timer to race. */
  hold(): () => void;
  close(): Promise<void>;
}

export async function startJwksServer(keys: SigningKey[]): Promise<JwksServer> {
  const state: JwksServer = {
    url: '',
    keys,
    fetches: 0,
    down: false,
    delayMs: 0,
    hold: () => {
      const waiting: Array<() => void> = [];
      held = waiting;
      return () => {
        if (held === waiting) held = undefined;
        for (const go of waiting.splice(0)) go();
      };
    },
    close: () => Promise.resolve(),
  };
  let held: Array<() => void> | undefined;
  const server = http.createServer((req, res) => {
    state.fetches++;
    if (held) held.push(() => answer(res));
    else if (state.delayMs > 0) {
      const timer = setTimeout(() => answer(res), state.delayMs);
      res.on('close', () => clearTimeout(timer));
    } else answer(res);
  });
  const answer = (res: http.ServerResponse) => {
    if (state.down) {
      res.writeHead(503);
      res.end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ keys: state.keys.map((k) => k.jwk) }));
  };
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  state.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/.well-known/jwks.json`;
  state.close = () =>
    new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    });
  return state;
}

export interface TokenOptions {
  iss?: string;
  aud?: string;
  sub?: string;
  expSec?: number | null;
  nbfSec?: number;
  claims?: JWTPayload;
}

export function token(key: SigningKey, o: TokenOptions = {}, alg = 'RS256'): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const jwt = new SignJWT({ ...o.claims })
    .setProtectedHeader({ alg, kid: key.kid })
    .setIssuer(o.iss ?? 'https://idp.test/')
    .setAudience(o.aud ?? 'api://orders')
    .setIssuedAt(now);
  if (o.sub !== '') jwt.setSubject(o.sub ?? 'user-1'); // '' makes a token without `sub`
  if (o.expSec !== null) jwt.setExpirationTime(now + (o.expSec ?? 300));
  if (o.nbfSec !== undefined) jwt.setNotBefore(now + o.nbfSec);
  return jwt.sign(key.privateKey);
}
