import { afterEach, describe, expect, it } from 'vitest';
import { createHmac } from 'node:crypto';
import { SignJWT, base64url } from 'jose';
import { startGateway, type RunningGateway } from '../helpers/gateway.js';
import { request, waitFor } from '../helpers/http.js';
import { startUpstream, type Upstream } from '../helpers/upstream.js';
import { expectProblem } from '../helpers/problem.js';
import { signingKey, startJwksServer, token } from '../helpers/jwks.js';
import {
  keyInvalidationChannel,
  sharedRedisUrl,
  uniquePrefix,
  waitForSubscribers,
} from '../helpers/redis.js';
import { sign } from '../../src/policies/signature/signature.js';
import { ManualClock } from '../../src/core/clock.js';

const SECRET_KEY = 'auth-test-secret-key-0123456789abcdef';
const ADMIN = 'auth-test-admin-token-123';
const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

async function setup(
  extra: Record<string, unknown> = {},
  routeAuth: unknown = { methods: ['apiKey', 'jwt'] },
  clock?: ManualClock,
): Promise<{ gw: RunningGateway; up: Upstream }> {
  const up = await startUpstream();
  cleanup.push(() => up.close());
  const gw = await startGateway(
    {
      admin: { host: '127.0.0.1', port: 0, tokens: [ADMIN] },
      plans: { free: { apiAccess: true }, starter: { apiAccess: false } },
      routes: [
        { id: 'orders', path: '/v1/orders', auth: routeAuth, upstream: { targets: [up.url] } },
        {
          id: 'scoped',
          path: '/v1/admin',
          auth: { methods: ['apiKey', 'jwt'], scopes: ['orders:write', 'orders:admin'] },
          upstream: { targets: [up.url] },
        },
        { id: 'public', path: '/public', auth: 'none', upstream: { targets: [up.url] } },
      ],
      ...extra,
    } as any,
    { env: { TOLLGATE_SECRET_KEY: SECRET_KEY }, ...(clock ? { clock } : {}) },
  );
  cleanup.push(() => gw.close());
  return { gw, up };
}

describe('API keys', () => {
  it('accepts a key from X-API-Key or Authorization: Bearer and sends the identity upstream, not the key', async () => {
    const { gw, up } = await setup();
    const { key, record } = await gw.gateway.services.keys.create({
      name: 'ci',
      ownerId: 'owner-1',
      tenantId: 'acme',
      scopes: ['orders:read'],
      plan: 'free',
    });
    expect((await request(`${gw.url}/v1/orders`, { headers: { 'x-api-key': key } })).status).toBe(200);
    expect(
      (await request(`${gw.url}/v1/orders`, { headers: { authorization: `Bearer ${key}` } })).status,
    ).toBe(200);
    // Any spelling authentication accepts is also recognised as a key and kept from the upstream.
    for (const spelling of [`Bearer  ${key}`, `bearer ${key}  `, `BEARER ${key}`])
      expect((await request(`${gw.url}/v1/orders`, { headers: { authorization: spelling } })).status).toBe(
        200,
      );
    expect(up.calls).toHaveLength(5);
    for (const call of up.calls) {
      expect(call.headers['x-consumer-id']).toBe('owner-1');
      expect(call.headers['x-tenant-id']).toBe('acme');
      expect(call.headers['x-credential-id']).toBe(record.id);
      expect(call.headers['x-auth-method']).toBe('api-key');
      expect(call.headers['x-scopes']).toBe('orders:read');
      expect(call.headers['x-api-key']).toBeUndefined();
      expect(call.headers.authorization).toBeUndefined();
    }
  });

  it('never lets a spoofed identity header through, on authenticated and public routes', async () => {
    const { gw, up } = await setup();
    const { key } = await gw.gateway.services.keys.create({ name: 'k', ownerId: 'real-owner' });
    const spoof = {
      'x-consumer-id': 'admin',
      'x-tenant-id': 'other',
      'x-credential-id': 'forged',
      'x-auth-method': 'jwt',
      'x-scopes': 'everything',
    };
    await request(`${gw.url}/v1/orders`, { headers: { 'x-api-key': key, ...spoof } });
    await request(`${gw.url}/public`, { headers: spoof });
    expect(up.calls[0]!.headers['x-consumer-id']).toBe('real-owner');
    expect(up.calls[0]!.headers['x-scopes']).toBe('');
    expect(up.calls[0]!.headers['x-tenant-id']).toBeUndefined();
    for (const name of Object.keys(spoof)) expect(up.calls[1]!.headers[name]).toBeUndefined();
  });

  it('401 missing-credentials with WWW-Authenticate when nothing is presented', async () => {
    const { gw, up } = await setup();
    const res = await request(`${gw.url}/v1/orders`);
    expectProblem(res, 'missing-credentials');
    expect(res.headers['www-authenticate']).toBe('Bearer realm="tollgate"');
    expect(up.calls).toHaveLength(0);
  });

  it('one body for unknown, revoked, disabled and made-up keys', async () => {
    const { gw } = await setup();
    const keys = gw.gateway.services.keys;
    const revoked = await keys.create({ name: 'r' });
    await keys.revoke(revoked.record.id);
    const disabled = await keys.create({ name: 'd', enabled: false });
    // The last character changed (a key that already ended in "x" stayed valid: a 1-in-62 flake).
    const real = (await keys.create({ name: 'm' })).key;
    const mistyped = real.slice(0, -1) + (real.endsWith('x') ? 'y' : 'x');
    const bodies = [];
    for (const key of [revoked.key, disabled.key, mistyped, 'tg_live_madeup']) {
      const res = await request(`${gw.url}/v1/orders`, { headers: { 'x-api-key': key } });
      const body = expectProblem(res, 'invalid-credentials');
      expect(res.headers['www-authenticate']).toContain('error="invalid_token"');
      bodies.push(body.detail);
    }
    expect(new Set(bodies).size).toBe(1);
  });

  it('401 expired-credentials past expiresAt; 403 forbidden for a plan without API access', async () => {
    const { gw } = await setup();
    const keys = gw.gateway.services.keys;
    const expired = await keys.create({ name: 'e', expiresAt: new Date(Date.now() - 1000).toISOString() });
    expectProblem(
      await request(`${gw.url}/v1/orders`, { headers: { 'x-api-key': expired.key } }),
      'expired-credentials',
    );
    const starter = await keys.create({ name: 's', plan: 'starter' });
    expectProblem(
      await request(`${gw.url}/v1/orders`, { headers: { 'x-api-key': starter.key } }),
      'forbidden',
    );
  });

  it('401 invalid-credentials for two different credentials or a repeated credential header', async () => {
    const { gw } = await setup();
    const keys = gw.gateway.services.keys;
    const a = await keys.create({ name: 'a' });
    const b = await keys.create({ name: 'b' });
    expectProblem(
      await request(`${gw.url}/v1/orders`, {
        headers: { 'x-api-key': a.key, authorization: `Bearer ${b.key}` },
      }),
      'invalid-credentials',
    );
    expectProblem(
      await request(`${gw.url}/v1/orders`, {
        headers: { 'x-api-key': a.key, authorization: 'Bearer eyJ.e30.x' },
      }),
      'invalid-credentials',
    );
    // The same key in both places is one credential.
    expect(
      (
        await request(`${gw.url}/v1/orders`, {
          headers: { 'x-api-key': a.key, authorization: `Bearer ${a.key}` },
        })
      ).status,
    ).toBe(200);
    expectProblem(
      await request(`${gw.url}/v1/orders`, { headers: { 'x-api-key': [a.key, b.key] } }),
      'invalid-credentials',
    );
    expectProblem(
      await request(`${gw.url}/v1/orders`, {
        headers: { authorization: [`Bearer ${a.key}`, `Bearer ${b.key}`] } as any,
      }),
      'invalid-credentials',
    );
    expectProblem(
      await request(`${gw.url}/v1/orders`, { headers: { authorization: 'Basic dXNlcjpwYXNz' } }),
      'invalid-credentials',
    );
  });

  it('403 insufficient-scope with required_scope when a scope is missing', async () => {
    const { gw } = await setup();
    const keys = gw.gateway.services.keys;
    const some = await keys.create({ name: 's', scopes: ['orders:write'] });
    const res = await request(`${gw.url}/v1/admin`, { headers: { 'x-api-key': some.key } });
    const body = expectProblem(res, 'insufficient-scope');
    expect(body.required_scope).toBe('orders:admin');
    expect(res.headers['www-authenticate']).toContain('error="insufficient_scope"');
    const all = await keys.create({ name: 'a', scopes: ['orders:write', 'orders:admin'] });
    expect((await request(`${gw.url}/v1/admin`, { headers: { 'x-api-key': all.key } })).status).toBe(200);
  });

  it('a route that accepts only JWTs refuses an API key with 403 forbidden naming what it takes (SPEC §9)', async () => {
    const { gw } = await setup(
      { auth: { jwt: [{ issuer: 'x', secret: 'x'.repeat(32) }] } },
      { methods: ['jwt'] },
    );
    const { key } = await gw.gateway.services.keys.create({ name: 'k' });
    const body = expectProblem(
      await request(`${gw.url}/v1/orders`, { headers: { 'x-api-key': key } }),
      'forbidden',
    );
    expect(body.detail).toBe('This route accepts Bearer JWTs only: it cannot be used with an API key.');
  });

  it('on Redis, a key revoked through one gateway is refused at once by the other', async () => {
    const redis = { url: sharedRedisUrl, keyPrefix: uniquePrefix('auth-two'), commandTimeoutMs: 1000 };
    const { gw: a } = await setup({ redis });
    const { gw: b } = await setup({ redis });
    await waitForSubscribers(redis.url, keyInvalidationChannel(redis.keyPrefix), 2);
    const { key, record } = await a.gateway.services.keys.create({ name: 'shared' });
    expect((await request(`${b.url}/v1/orders`, { headers: { 'x-api-key': key } })).status).toBe(200);
    await a.gateway.services.keys.revoke(record.id);
    await waitFor(
      async () => (await request(`${b.url}/v1/orders`, { headers: { 'x-api-key': key } })).status === 401,
      2000,
      10,
    );
  });
});

describe('JWT', () => {
  async function jwtSetup(
    issuer: Record<string, unknown>,
    routeAuth: unknown = { methods: ['jwt'] },
    clock?: ManualClock,
  ) {
    return setup(
      {
        auth: {
          jwt: [{ issuer: 'https://idp.test/', audience: 'api://orders', clockToleranceSec: 5, ...issuer }],
        },
      },
      routeAuth,
      clock,
    );
  }

  it('accepts a valid RS256 token from a real JWKS and sends sub, tenant and scopes upstream', async () => {
    const k1 = await signingKey('k1');
    const jwks = await startJwksServer([k1]);
    cleanup.push(() => jwks.close());
    const { gw, up } = await jwtSetup({ jwksUri: jwks.url, tenantClaim: 'org' });
    const t = await token(k1, { sub: 'alice', claims: { scope: 'orders:read orders:write', org: 'acme' } });
    const res = await request(`${gw.url}/v1/orders`, { headers: { authorization: `Bearer ${t}` } });
    expect(res.status).toBe(200);
    expect(up.calls[0]!.headers).toMatchObject({
      'x-consumer-id': 'alice',
      'x-tenant-id': 'acme',
      'x-auth-method': 'jwt',
      'x-scopes': 'orders:read orders:write',
    });
    expect(up.calls[0]!.headers['x-credential-id']).toMatch(/^jwt_[0-9a-f]{20}$/);
    // A JWT is forwarded (the upstream may want it); an API key is not.
    expect(up.calls[0]!.headers.authorization).toBe(`Bearer ${t}`);
    const scp = await token(k1, { claims: { scp: ['a', 'b'] } });
    await request(`${gw.url}/v1/orders`, { headers: { authorization: `Bearer ${scp}` } });
    expect(up.calls[1]!.headers['x-scopes']).toBe('a b');
  });

  it('refuses expired, not-yet-valid, wrong-audience, wrong-issuer and exp-less tokens', async () => {
    const k1 = await signingKey('k1');
    const jwks = await startJwksServer([k1]);
    cleanup.push(() => jwks.close());
    const { gw } = await jwtSetup({ jwksUri: jwks.url });
    const call = async (t: string) =>
      request(`${gw.url}/v1/orders`, { headers: { authorization: `Bearer ${t}` } });
    expectProblem(await call(await token(k1, { expSec: -60 })), 'expired-credentials');
    expectProblem(await call(await token(k1, { nbfSec: 120 })), 'invalid-credentials');
    expectProblem(await call(await token(k1, { aud: 'api://other' })), 'invalid-credentials');
    expectProblem(await call(await token(k1, { iss: 'https://evil.test/' })), 'invalid-credentials');
    expectProblem(await call(await token(k1, { expSec: null })), 'invalid-credentials');
    // Within the clock tolerance it passes.
    expect((await call(await token(k1, { expSec: -2 }))).status).toBe(200);
    expectProblem(await call('not.a.jwt'), 'invalid-credentials');
  });

  it('refuses alg none and an HS token against an RS issuer (key confusion)', async () => {
    const k1 = await signingKey('k1');
    const jwks = await startJwksServer([k1]);
    cleanup.push(() => jwks.close());
    const { gw } = await jwtSetup({ jwksUri: jwks.url });
    const now = Math.floor(Date.now() / 1000);
    const payload = { iss: 'https://idp.test/', aud: 'api://orders', sub: 'x', exp: now + 300 };
    const none = `${base64url.encode(JSON.stringify({ alg: 'none', kid: 'k1' }))}.${base64url.encode(JSON.stringify(payload))}.`;
    expectProblem(
      await request(`${gw.url}/v1/orders`, { headers: { authorization: `Bearer ${none}` } }),
      'invalid-credentials',
    );
    // HS256 signed with the public key's JSON as the shared secret: the classic confusion attack.
    const hs = await new SignJWT(payload)
      .setProtectedHeader({ alg: 'HS256', kid: 'k1' })
      .sign(new TextEncoder().encode(JSON.stringify(k1.jwk)));
    expectProblem(
      await request(`${gw.url}/v1/orders`, { headers: { authorization: `Bearer ${hs}` } }),
      'invalid-credentials',
    );
  });

  it('refetches the JWKS on an unknown kid (a rotation), rate-limited against made-up kids', async () => {
    const k1 = await signingKey('k1');
    const jwks = await startJwksServer([k1]);
    cleanup.push(() => jwks.close());
    // The cooldown runs on the gateway's clock: on the real one, ten requests that took over a
    // second on a busy machine were allowed a second refetch.
    const clock = new ManualClock(Date.now());
    const { gw } = await jwtSetup({ jwksUri: jwks.url, jwksCooldownSec: 1 }, undefined, clock);
    await waitFor(() => jwks.fetches >= 1, 10_000);
    expect(
      (await request(`${gw.url}/v1/orders`, { headers: { authorization: `Bearer ${await token(k1)}` } }))
        .status,
    ).toBe(200);
    const k2 = await signingKey('k2');
    jwks.keys = [k1, k2];
    clock.advance(1100); // past the cooldown since the first fetch
    expect(
      (await request(`${gw.url}/v1/orders`, { headers: { authorization: `Bearer ${await token(k2)}` } }))
        .status,
    ).toBe(200);
    const fetchesAfterRotation = jwks.fetches;
    const forged = await signingKey('made-up');
    for (let i = 0; i < 10; i++)
      expectProblem(
        await request(`${gw.url}/v1/orders`, { headers: { authorization: `Bearer ${await token(forged)}` } }),
        'invalid-credentials',
      );
    expect(jwks.fetches - fetchesAfterRotation).toBeLessThanOrEqual(1);
  });

  it('keeps verifying with cached keys while the JWKS endpoint is down; 503 when it has none', async () => {
    const k1 = await signingKey('k1');
    const jwks = await startJwksServer([k1]);
    cleanup.push(() => jwks.close());
    const { gw } = await jwtSetup({ jwksUri: jwks.url });
    await waitFor(() => jwks.fetches >= 1, 10_000);
    jwks.down = true;
    expect(
      (
        await request(`${gw.url}/v1/orders`, {
          headers: { authorization: `Bearer ${await token(k1, { sub: 'fresh' })}` },
        })
      ).status,
    ).toBe(200);

    const cold = await startJwksServer([k1]);
    cleanup.push(() => cold.close());
    cold.down = true;
    const { gw: gw2 } = await jwtSetup({ jwksUri: cold.url });
    const res = await request(`${gw2.url}/v1/orders`, {
      headers: { authorization: `Bearer ${await token(k1)}` },
    });
    expectProblem(res, 'service-unavailable');
    expect(res.headers['retry-after']).toBeDefined();
    const ready = await request(`${gw2.adminUrl}/readyz`);
    expect(ready.json().checks.jwks.status).toBe('down');
  });

  it('verifies HS256 with a shared secret and RS256 with a PEM public key', async () => {
    const secret = 'a-shared-hs256-secret-of-32-chars-or-more';
    const { gw } = await jwtSetup({ secret });
    const now = Math.floor(Date.now() / 1000);
    const hs = await new SignJWT({ sub: 'svc' })
      .setProtectedHeader({ alg: 'HS256' })
      .setIssuer('https://idp.test/')
      .setAudience('api://orders')
      .setExpirationTime(now + 60)
      .sign(new TextEncoder().encode(secret));
    expect(
      (await request(`${gw.url}/v1/orders`, { headers: { authorization: `Bearer ${hs}` } })).status,
    ).toBe(200);
    const { generateKeyPairSync } = await import('node:crypto');
    const pair = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const { gw: pem } = await jwtSetup({
      publicKey: pair.publicKey.export({ type: 'spki', format: 'pem' }).toString(),
      algorithms: ['RS256'],
    });
    const rs = await new SignJWT({ sub: 'svc' })
      .setProtectedHeader({ alg: 'RS256' })
      .setIssuer('https://idp.test/')
      .setAudience('api://orders')
      .setExpirationTime(now + 60)
      .sign(pair.privateKey);
    expect(
      (await request(`${pem.url}/v1/orders`, { headers: { authorization: `Bearer ${rs}` } })).status,
    ).toBe(200);
  });
});

describe('HMAC request signing', () => {
  const signedRoute = (hmac: 'optional' | 'required') => ({ methods: ['apiKey'], hmac });

  it('checks the SPEC §5 test vector', () => {
    const signature = sign(
      'whsec_test_vector_0123456789abcdef',
      '1700000000',
      'POST',
      '/v1/orders?expand=items',
      '{"sku":"A1","qty":2}',
    );
    expect(signature).toBe('v1=b7806ac6420ecf74a0194abe739b7b6e4c4d3ae912073a494221917c1fadbc3f');
    // The same computation spelled out with node:crypto, from the SPEC's words.
    const bodyHash = '1112f8eff10e2f0e91b61792e783a01ecfe877e42146a848c2a976040fb503d4';
    const expected = createHmac('sha256', 'whsec_test_vector_0123456789abcdef')
      .update(`1700000000\nPOST\n/v1/orders?expand=items\n${bodyHash}`)
      .digest('hex');
    expect(signature).toBe(`v1=${expected}`);
  });

  async function signed(hmac: 'optional' | 'required', extra: Record<string, unknown> = {}) {
    const { gw, up } = await setup(extra, signedRoute(hmac));
    const created = await gw.gateway.services.keys.create({ name: 'signer', hmac: true });
    const send = (opts: { body?: string; ts?: string; sig?: string; path?: string }) => {
      const path = opts.path ?? '/v1/orders?expand=items';
      const body = opts.body ?? '{"sku":"A1","qty":2}';
      const ts = opts.ts ?? String(Math.floor(Date.now() / 1000));
      const sig = opts.sig ?? sign(created.signingSecret!, ts, 'POST', path, body);
      return request(`${gw.url}${path}`, {
        method: 'POST',
        body,
        headers: {
          'x-api-key': created.key,
          'x-timestamp': ts,
          'x-signature': sig,
          'content-type': 'application/json',
        },
      });
    };
    return { gw, up, created, send };
  }

  it('accepts a correctly signed request and sends the same body bytes upstream, without the signature', async () => {
    const { up, send, gw, created } = await signed('required');
    const res = await send({});
    expect(res.status).toBe(200);
    // Hex is hex in either case (SPEC §5 says only "hex") — and a replay in the other case is a replay.
    const ts = String(Math.floor(Date.now() / 1000) - 1);
    const body = '{"sku":"A1","qty":2}';
    const lower = sign(created.signingSecret!, ts, 'POST', '/v1/orders?expand=items', body);
    const upper = `v1=${lower.slice(3).toUpperCase()}`;
    expect((await send({ ts, sig: upper })).status).toBe(200);
    expectProblem(await send({ ts, sig: lower }), 'replayed-request');
    expect(up.calls[0]!.body.toString()).toBe('{"sku":"A1","qty":2}');
    expect(up.calls[0]!.headers['x-signature']).toBeUndefined();
    // The audit record keeps what the signature covered (for the playground), never the secret.
    let record: any;
    await waitFor(async () => {
      const r = await request(`${gw.adminUrl}/requests/${String(res.headers['x-request-id'])}`, {
        headers: { authorization: `Bearer ${ADMIN}` },
      });
      record = r.status === 200 ? r.json() : undefined;
      return record !== undefined;
    }, 2000);
    expect(record.signature).toEqual({
      timestamp: expect.stringMatching(/^\d+$/),
      body_sha256: '1112f8eff10e2f0e91b61792e783a01ecfe877e42146a848c2a976040fb503d4',
      result: 'valid',
    });
    expect(record.auth_method).toBe('api-key');
  });

  it('refuses a tampered body, a wrong or malformed signature, and a missing one when required', async () => {
    const { send, created, gw } = await signed('required');
    const ts = String(Math.floor(Date.now() / 1000));
    const good = sign(created.signingSecret!, ts, 'POST', '/v1/orders?expand=items', '{"sku":"A1","qty":2}');
    expectProblem(await send({ ts, sig: good, body: '{"sku":"A1","qty":3}' }), 'invalid-signature');
    expectProblem(await send({ sig: 'v1=' + '0'.repeat(64) }), 'invalid-signature');
    expectProblem(await send({ sig: 'sha256=abc' }), 'invalid-signature');
    const unsigned = await request(`${gw.url}/v1/orders`, {
      method: 'POST',
      body: '{}',
      headers: { 'x-api-key': created.key },
    });
    expectProblem(unsigned, 'invalid-signature');
  });

  it('refuses skewed, missing and non-numeric timestamps with server_time', async () => {
    const { send } = await signed('required');
    const old = String(Math.floor(Date.now() / 1000) - 301);
    const body = expectProblem(await send({ ts: old }), 'timestamp-skew');
    expect(Math.abs(body.server_time - Date.now() / 1000)).toBeLessThan(5);
    expectProblem(await send({ ts: String(Math.floor(Date.now() / 1000) + 400) }), 'timestamp-skew');
    expectProblem(await send({ ts: '17e8' }), 'timestamp-skew');
    expectProblem(await send({ ts: '' }), 'timestamp-skew');
  });

  it('accepts a signature once inside the window (replay protection), also across two instances on Redis', async () => {
    const { send } = await signed('required');
    const ts = String(Math.floor(Date.now() / 1000));
    const first = await send({ ts });
    expect(first.status).toBe(200);
    expectProblem(await send({ ts }), 'replayed-request');

    const redis = { url: sharedRedisUrl, keyPrefix: uniquePrefix('replay'), commandTimeoutMs: 1000 };
    const a = await signed('required', { redis });
    const { gw: b } = await setup({ redis }, signedRoute('required'));
    const ts2 = String(Math.floor(Date.now() / 1000));
    const body = '{"x":1}';
    const sig = sign(a.created.signingSecret!, ts2, 'POST', '/v1/orders', body);
    const headers = { 'x-api-key': a.created.key, 'x-timestamp': ts2, 'x-signature': sig };
    expect((await request(`${a.gw.url}/v1/orders`, { method: 'POST', body, headers })).status).toBe(200);
    expectProblem(await request(`${b.url}/v1/orders`, { method: 'POST', body, headers }), 'replayed-request');
  });

  it('optional: unsigned requests pass, a bad signature does not', async () => {
    const { send, gw, created } = await signed('optional');
    expect(
      (
        await request(`${gw.url}/v1/orders`, {
          method: 'POST',
          body: '{}',
          headers: { 'x-api-key': created.key },
        })
      ).status,
    ).toBe(200);
    expectProblem(await send({ sig: 'v1=' + 'f'.repeat(64) }), 'invalid-signature');
  });
});
