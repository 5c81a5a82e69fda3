import { afterAll, afterEach, describe, expect, it } from 'vitest';
import express from 'express';
import { Redis } from 'ioredis';
import { SignJWT, type JWTPayload } from 'jose';
import { startGateway, type RunningGateway } from '../helpers/gateway.js';
import { request, waitFor, type Reply } from '../helpers/http.js';
import { listenApp } from '../helpers/express.js';
import { startUpstream, type RecordedRequest, type Upstream } from '../helpers/upstream.js';
import { expectProblem } from '../helpers/problem.js';
import { sharedRedisUrl, uniquePrefix } from '../helpers/redis.js';
import { problemDetails, proxy, requestId } from '../../src/index.js';
import { validateConfig } from '../../src/config/load.js';
import { UNTRUSTED_PEER_HEADERS, METHOD_OVERRIDE_HEADERS } from '../../src/policies/proxy/headers.js';
import { MemoryKeyStore } from '../../src/keys/memory-store.js';
import { RedisKeyStore } from '../../src/keys/redis-store.js';
import { KeyService } from '../../src/keys/service.js';
import { SecretBox } from '../../src/keys/secret-box.js';
import type { KeyStore } from '../../src/keys/record.js';
import { ManualClock } from '../../src/core/clock.js';
import { RedisHandle } from '../../src/shared/redis.js';
import { silentLogger } from '../../src/observability/logger.js';

/*
 * Version 2 hardening, "Identity and credentials": what reaches an upstream about who is calling,
 * and that nobody can pass for somebody else — through real sockets, because the wire is the
 * behaviour.
 */

const ADMIN = 'identity-hardening-admin-token';
const ISS_A = 'https://a.idp.test/';
const ISS_B = 'https://b.idp.test/';
const ISS_M = 'https://machines.idp.test/';
const SECRETS: Record<string, string> = {
  [ISS_A]: 'identity-hardening-secret-a-0123456789',
  [ISS_B]: 'identity-hardening-secret-b-0123456789',
  [ISS_M]: 'identity-hardening-secret-m-0123456789',
};

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

/** An HS256 token of `iss`; `sub: undefined` leaves the claim out. */
function jwt(iss: string, payload: JWTPayload): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ aud: 'api://orders', iat: now, exp: now + 300, ...payload, iss })
    .setProtectedHeader({ alg: 'HS256' })
    .sign(new TextEncoder().encode(SECRETS[iss]));
}

const bearer = async (iss: string, payload: JWTPayload) => ({
  authorization: `Bearer ${await jwt(iss, payload)}`,
});

/** The name a CGI/WSGI/Rack upstream reads a header under (`X_Tenant_Id` and `X-Tenant-Id` alike). */
const cgi = (name: string) => `HTTP_${name.toUpperCase().replaceAll('-', '_')}`;

/** The upstream request as a CGI environment: every variable with each value it was given. */
function cgiView(call: RecordedRequest): Map<string, string[]> {
  const env = new Map<string, string[]>();
  for (let i = 0; i < call.rawHeaders.length; i += 2) {
    const name = cgi(call.rawHeaders[i]!);
    env.set(name, [...(env.get(name) ?? []), call.rawHeaders[i + 1]!]);
  }
  return env;
}

async function upstream(): Promise<Upstream> {
  const up = await startUpstream();
  cleanup.push(() => up.close());
  return up;
}

async function gateway(up: Upstream, extra: Record<string, unknown> = {}): Promise<RunningGateway> {
  const gw = await startGateway({
    admin: { host: '127.0.0.1', port: 0, tokens: [ADMIN] },
    auth: {
      jwt: [
        { issuer: ISS_A, audience: 'api://orders', secret: SECRETS[ISS_A], tenantClaim: 'org' },
        { issuer: ISS_B, audience: 'api://orders', secret: SECRETS[ISS_B] },
        { issuer: ISS_M, audience: 'api://orders', secret: SECRETS[ISS_M], subjectClaim: 'client_id' },
      ],
    },
    selfService: { path: '/v1/keys', maxKeysPerUser: 1 },
    routes: [
      {
        id: 'orders',
        path: '/v1/orders',
        auth: { methods: ['jwt', 'apiKey'] },
        idempotency: { methods: ['POST'] },
        upstream: { targets: [up.url] },
      },
      {
        id: 'create-only',
        path: '/v1/create',
        methods: ['POST'],
        auth: 'none',
        upstream: { targets: [up.url] },
      },
      { id: 'public', path: '/public', auth: 'none', upstream: { targets: [up.url] } },
    ],
    ...extra,
  } as any);
  cleanup.push(() => gw.close());
  return gw;
}

function admin(gw: RunningGateway, method: string, path: string, body?: unknown): Promise<Reply> {
  return request(`${gw.adminUrl}${path}`, {
    method,
    headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}

function selfService(
  gw: RunningGateway,
  method: string,
  path: string,
  headers: Record<string, string>,
  body?: unknown,
): Promise<Reply> {
  return request(`${gw.url}${path}`, {
    method,
    headers: { ...headers, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}

describe('identity headers in underscore spellings (CGI, WSGI, Rack)', () => {
  it('drops X_Tenant_Id, X_Scopes, X_Consumer_Id, X_Forwarded_For and every other spelling of a gateway-owned header, so an upstream reading HTTP_X_* sees only the gateway’s value', async () => {
    const up = await upstream();
    const gw = await gateway(up);
    const { key } = await gw.gateway.services.keys.create({
      name: 'k',
      ownerId: 'real-owner',
      tenantId: 'acme',
      scopes: ['orders:read'],
    });
    const spoof = {
      X_Tenant_Id: 'victim-tenant',
      X_Scopes: 'orders:admin',
      X_Consumer_Id: 'admin',
      X_Forwarded_For: '203.0.113.66',
      'X-Credential_Id': 'forged',
      x_auth_method: 'jwt',
      X_Consumer_Issuer: 'https://evil.test/',
      X_Request_Id: 'forged-id',
      X_Forwarded_Host: 'evil.test',
      X_Forwarded_Proto: 'https',
      X_Real_IP: '203.0.113.66',
      X_Forwarded_Port: '1',
      X_Original_URL: '/admin',
      X_HTTP_Method_Override: 'DELETE',
      X_Api_Key: key,
      X_Signature: 'v1=00',
      x_custom_thing: 'kept',
    };
    expect((await request(`${gw.url}/v1/orders`, { headers: { 'x-api-key': key, ...spoof } })).status).toBe(
      200,
    );
    expect((await request(`${gw.url}/public`, { headers: spoof })).status).toBe(200);
    const [authed, anonymous] = up.calls.map(cgiView);
    // Exactly the gateway's own value under each name an upstream reads.
    expect(authed!.get('HTTP_X_TENANT_ID')).toEqual(['acme']);
    expect(authed!.get('HTTP_X_SCOPES')).toEqual(['orders:read']);
    expect(authed!.get('HTTP_X_CONSUMER_ID')).toEqual(['real-owner']);
    expect(authed!.get('HTTP_X_AUTH_METHOD')).toEqual(['api-key']);
    expect(authed!.get('HTTP_X_FORWARDED_FOR')).toEqual(['127.0.0.1']);
    expect(authed!.get('HTTP_X_FORWARDED_HOST')).toEqual([`127.0.0.1:${gw.port}`]);
    expect(authed!.get('HTTP_X_FORWARDED_PROTO')).toEqual(['http']);
    expect(authed!.get('HTTP_X_REQUEST_ID')).toHaveLength(1);
    expect(authed!.get('HTTP_X_REQUEST_ID')).not.toEqual(['forged-id']);
    expect(authed!.get('HTTP_X_CREDENTIAL_ID')).toHaveLength(1);
    expect(authed!.get('HTTP_X_CREDENTIAL_ID')).not.toEqual(['forged']);
    for (const view of [authed!, anonymous!]) {
      for (const name of [
        'HTTP_X_CONSUMER_ISSUER',
        'HTTP_X_REAL_IP',
        'HTTP_X_FORWARDED_PORT',
        'HTTP_X_ORIGINAL_URL',
        'HTTP_X_HTTP_METHOD_OVERRIDE',
        'HTTP_X_API_KEY',
        'HTTP_X_SIGNATURE',
      ])
        expect(view.get(name), name).toBeUndefined();
      // A name the gateway does not own keeps its underscores and passes.
      expect(view.get('HTTP_X_CUSTOM_THING')).toEqual(['kept']);
    }
    for (const name of ['HTTP_X_TENANT_ID', 'HTTP_X_SCOPES', 'HTTP_X_CONSUMER_ID', 'HTTP_X_AUTH_METHOD'])
      expect(anonymous!.get(name), name).toBeUndefined();
    expect(anonymous!.get('HTTP_X_FORWARDED_FOR')).toEqual(['127.0.0.1']);
  });
});

describe('a JWT names its principal', () => {
  it('refuses a JWT without sub (401 invalid-credentials), so principals without one never share a credential id, limits or a stored idempotent response', async () => {
    const up = await upstream();
    const gw = await gateway(up);
    const post = async (headers: Record<string, string>) =>
      request(`${gw.url}/v1/orders`, {
        method: 'POST',
        headers: { ...headers, 'idempotency-key': 'same-key', 'content-type': 'application/json' },
        body: '{"order":1}',
      });
    // Principal A's token and principal B's token, neither with a `sub`.
    const a = await post(await bearer(ISS_A, { client_id: 'principal-a' }));
    const b = await post(await bearer(ISS_A, { client_id: 'principal-b' }));
    for (const res of [a, b]) {
      const body = expectProblem(res, 'invalid-credentials');
      expect(body.detail).toBe('The token names no subject (sub).');
      expect(res.headers['www-authenticate']).toContain('error="invalid_token"');
    }
    // An empty or non-text `sub` names nobody either.
    expectProblem(await post(await bearer(ISS_A, { sub: '' })), 'invalid-credentials');
    expectProblem(
      await post(await bearer(ISS_A, { sub: { id: 'x' } as unknown as string })),
      'invalid-credentials',
    );
    // Self-service too: authentication refuses it before key management sees it.
    expectProblem(
      await selfService(gw, 'GET', '/v1/keys', await bearer(ISS_B, { name: 'no sub' })),
      'invalid-credentials',
    );
    expect(up.calls).toHaveLength(0);
  });

  it('takes the principal from auth.jwt[].subjectClaim when the issuer names one: distinct callers stay distinct, a token without the claim is refused', async () => {
    const up = await upstream();
    const gw = await gateway(up);
    const post = async (headers: Record<string, string>) =>
      request(`${gw.url}/v1/orders`, {
        method: 'POST',
        headers: { ...headers, 'idempotency-key': 'same-key', 'content-type': 'application/json' },
        body: '{"order":1}',
      });
    const one = await post(await bearer(ISS_M, { client_id: 'svc-1' }));
    const two = await post(await bearer(ISS_M, { client_id: 'svc-2' }));
    expect([one.status, two.status]).toEqual([200, 200]);
    // svc-2 ran its own request: it did not get svc-1's stored response.
    expect(two.headers['idempotent-replayed']).toBeUndefined();
    expect(up.calls).toHaveLength(2);
    const [h1, h2] = up.calls.map((c) => c.headers);
    expect(h1!['x-consumer-id']).toBe('svc-1');
    expect(h2!['x-consumer-id']).toBe('svc-2');
    expect(h1!['x-credential-id']).not.toBe(h2!['x-credential-id']);
    // The same principal again is a replay, as it should be.
    const again = await post(await bearer(ISS_M, { client_id: 'svc-1' }));
    expect(again.headers['idempotent-replayed']).toBe('true');
    // That issuer's tokens are read by `client_id` only: a `sub` does not stand in for it.
    const noClaim = await post(await bearer(ISS_M, { sub: 'someone' }));
    expect(expectProblem(noClaim, 'invalid-credentials').detail).toBe(
      'The token names no subject (client_id).',
    );
    expect(up.calls).toHaveLength(2);
  });

  it('validates auth.jwt[].subjectClaim with its path and defaults it to sub', () => {
    const bad = validateConfig({
      auth: { jwt: [{ issuer: ISS_A, secret: SECRETS[ISS_A], subjectClaim: '' }] },
    });
    expect(bad.ok).toBe(false);
    if (!bad.ok) expect(bad.issues.map((i) => i.path)).toContain('auth.jwt[0].subjectClaim');
    const good = validateConfig({ auth: { jwt: [{ issuer: ISS_A, secret: SECRETS[ISS_A] }] } });
    expect(good.ok && good.config.auth.jwt[0]!.subjectClaim).toBe('sub');
  });
});

describe('the same sub at two issuers is two people', () => {
  it('keeps self-service ownership per issuer: issuer B’s alice neither lists, revokes nor fills the cap of issuer A’s alice', async () => {
    const up = await upstream();
    const gw = await gateway(up);
    const aliceA = await bearer(ISS_A, { sub: 'alice' });
    const aliceB = await bearer(ISS_B, { sub: 'alice' });
    const created = await selfService(gw, 'POST', '/v1/keys', aliceA, { name: 'a-key' });
    expect(created.status).toBe(201);
    const keyA = created.json();
    expect(keyA).toMatchObject({ ownerId: 'alice', ownerIssuer: ISS_A });

    expect((await selfService(gw, 'GET', '/v1/keys', aliceB)).json().items).toEqual([]);
    expectProblem(await selfService(gw, 'DELETE', `/v1/keys/${keyA.id}`, aliceB), 'not-found');
    // maxKeysPerUser is 1: A's alice holds one, B's alice still has her own allowance.
    const createdB = await selfService(gw, 'POST', '/v1/keys', aliceB, { name: 'b-key' });
    expect(createdB.status).toBe(201);
    const keyB = createdB.json();
    expectProblem(await selfService(gw, 'POST', '/v1/keys', aliceA, { name: 'second' }), 'conflict');
    expect((await selfService(gw, 'GET', '/v1/keys', aliceA)).json().items.map((k: any) => k.id)).toEqual([
      keyA.id,
    ]);

    // Each key still works and tells the upstream whose it is.
    expect((await request(`${gw.url}/v1/orders`, { headers: { 'x-api-key': keyA.key } })).status).toBe(200);
    expect((await request(`${gw.url}/v1/orders`, { headers: { 'x-api-key': keyB.key } })).status).toBe(200);
    expect(up.calls.map((c) => [c.headers['x-consumer-id'], c.headers['x-consumer-issuer']])).toEqual([
      ['alice', ISS_A],
      ['alice', ISS_B],
    ]);
    expect((await selfService(gw, 'DELETE', `/v1/keys/${keyA.id}`, aliceA)).status).toBe(204);
    expectProblem(
      await request(`${gw.url}/v1/orders`, { headers: { 'x-api-key': keyA.key } }),
      'invalid-credentials',
    );
    expect((await request(`${gw.url}/v1/orders`, { headers: { 'x-api-key': keyB.key } })).status).toBe(200);
  });

  it('sends X-Consumer-Issuer upstream on JWT requests with X-Consumer-Id still the sub, and removes every client copy', async () => {
    const up = await upstream();
    const gw = await gateway(up);
    const spoof = { 'x-consumer-issuer': ISS_B, X_Consumer_Issuer: ISS_B };
    for (const iss of [ISS_A, ISS_B]) {
      const res = await request(`${gw.url}/v1/orders`, {
        headers: { ...(await bearer(iss, { sub: 'alice' })), ...spoof },
      });
      expect(res.status).toBe(200);
    }
    const { key } = await gw.gateway.services.keys.create({ name: 'admin-made', ownerId: 'alice' });
    await request(`${gw.url}/v1/orders`, { headers: { 'x-api-key': key, ...spoof } });
    await request(`${gw.url}/public`, { headers: spoof });
    const views = up.calls.map(cgiView);
    expect(views.map((v) => v.get('HTTP_X_CONSUMER_ISSUER'))).toEqual([
      [ISS_A],
      [ISS_B],
      undefined,
      undefined,
    ]);
    expect(views.slice(0, 3).map((v) => v.get('HTTP_X_CONSUMER_ID'))).toEqual([
      ['alice'],
      ['alice'],
      ['alice'],
    ]);
    // The same sub at two issuers: two credentials, so two sets of limits and idempotency scopes.
    expect(up.calls[0]!.headers['x-credential-id']).not.toBe(up.calls[1]!.headers['x-credential-id']);
  });

  it('keeps keys without an owner issuer (made before version 2) working: their subject’s with one issuer, nobody’s in self-service with several until an admin sets ownerIssuer', async () => {
    const up = await upstream();
    // One issuer: nothing is ambiguous, the key is bob's as it always was.
    const single = await startGateway({
      admin: { host: '127.0.0.1', port: 0, tokens: [ADMIN] },
      auth: { jwt: [{ issuer: ISS_A, audience: 'api://orders', secret: SECRETS[ISS_A] }] },
      selfService: { path: '/v1/keys' },
      routes: [
        { id: 'orders', path: '/v1/orders', auth: { methods: ['apiKey'] }, upstream: { targets: [up.url] } },
      ],
    });
    cleanup.push(() => single.close());
    const legacy = (await admin(single, 'POST', '/keys', { name: 'old', ownerId: 'bob' })).json();
    expect(legacy.ownerIssuer).toBeNull();
    const bobA = await bearer(ISS_A, { sub: 'bob' });
    expect((await selfService(single, 'GET', '/v1/keys', bobA)).json().items.map((k: any) => k.id)).toEqual([
      legacy.id,
    ]);
    expect((await request(`${single.url}/v1/orders`, { headers: { 'x-api-key': legacy.key } })).status).toBe(
      200,
    );

    // Several issuers: which one's carol made it is unknown, so neither may manage it — it still works.
    const gw = await gateway(up);
    const old = (await admin(gw, 'POST', '/keys', { name: 'old', ownerId: 'carol' })).json();
    const carolA = await bearer(ISS_A, { sub: 'carol' });
    const carolB = await bearer(ISS_B, { sub: 'carol' });
    expect((await selfService(gw, 'GET', '/v1/keys', carolA)).json().items).toEqual([]);
    expect((await selfService(gw, 'GET', '/v1/keys', carolB)).json().items).toEqual([]);
    expectProblem(await selfService(gw, 'DELETE', `/v1/keys/${old.id}`, carolA), 'not-found');
    expect((await request(`${gw.url}/v1/orders`, { headers: { 'x-api-key': old.key } })).status).toBe(200);
    // The admin hands it to issuer B's carol.
    const patched = await admin(gw, 'PATCH', `/keys/${old.id}`, { ownerIssuer: ISS_B });
    expect(patched.json()).toMatchObject({ ownerId: 'carol', ownerIssuer: ISS_B });
    expect((await selfService(gw, 'GET', '/v1/keys', carolA)).json().items).toEqual([]);
    expect((await selfService(gw, 'GET', '/v1/keys', carolB)).json().items.map((k: any) => k.id)).toEqual([
      old.id,
    ]);
    expect((await selfService(gw, 'DELETE', `/v1/keys/${old.id}`, carolB)).status).toBe(204);
  });
});

const handles: RedisHandle[] = [];
const prefixes: string[] = [];
afterAll(async () => {
  // Delete what the Redis twin wrote, then close its connections.
  const redis = new Redis(sharedRedisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await redis.connect();
    for (const prefix of prefixes) {
      const keys = await redis.keys(`${prefix}*`);
      if (keys.length > 0) await redis.del(...keys);
    }
  } finally {
    redis.disconnect();
    await Promise.all(handles.map((h) => h.close()));
  }
});

const twins: Array<[string, (clock: ManualClock) => Promise<KeyStore>]> = [
  ['memory', () => Promise.resolve(new MemoryKeyStore())],
  [
    'redis',
    async (clock) => {
      const prefix = uniquePrefix('identity-owner');
      prefixes.push(prefix);
      const redis = new RedisHandle(
        {
          url: sharedRedisUrl,
          keyPrefix: prefix,
          commandTimeoutMs: 1000,
          connectTimeoutMs: 1000,
          onError: 'closed',
        },
        silentLogger(),
      );
      handles.push(redis);
      await waitFor(() => redis.ready, 5000);
      return new RedisKeyStore({ redis, clock, logger: silentLogger(), cacheTtlMs: 5000 });
    },
  ],
];

describe.each(twins)('key ownership by issuer in the %s key store', (_name, make) => {
  it('lists and counts one owner’s keys by owner issuer (null: keys without one), and rotation keeps the issuer', async () => {
    const clock = new ManualClock(Date.UTC(2030, 0, 1));
    const store = await make(clock);
    const keys = new KeyService({
      store,
      prefix: 'tg',
      box: new SecretBox('identity-owner-secret-0123456789ab'),
      clock,
    });
    const a = await keys.create({ name: 'a', ownerId: 'dave', ownerIssuer: ISS_A });
    const b = await keys.create({ name: 'b', ownerId: 'dave', ownerIssuer: ISS_B });
    const none = await keys.create({ name: 'none', ownerId: 'dave' });
    await keys.create({ name: 'other', ownerId: 'erin', ownerIssuer: ISS_A });
    const ids = async (ownerIssuers: Array<string | null>) =>
      (await keys.list({ ownerId: 'dave', ownerIssuers, limit: 50 })).items.map((r) => r.id).sort();
    expect(await ids([ISS_A])).toEqual([a.record.id]);
    expect(await ids([ISS_B, null])).toEqual([b.record.id, none.record.id].sort());
    expect(await ids([null])).toEqual([none.record.id]);
    expect((await keys.list({ ownerId: 'dave', limit: 50 })).items).toHaveLength(3);
    expect(await store.countActive('dave', clock.now(), [ISS_A])).toBe(1);
    expect(await store.countActive('dave', clock.now(), [ISS_A, null])).toBe(2);
    expect(await store.countActive('dave', clock.now())).toBe(3);
    const rotated = await keys.rotate(a.record.id, 60);
    expect(rotated!.created.record.ownerIssuer).toBe(ISS_A);
    expect(await ids([ISS_A])).toHaveLength(2);
    await store.close();
  });
});

describe('identity values outside visible ASCII', () => {
  const odd = [
    'aliće', // outside Latin-1: undici refuses it raw
    '日本語',
    'josé', // Latin-1: raw, it would reach the upstream as one ambiguous byte
    'evil\r\nX-Injected: 1',
    'tab\there',
    '100%',
    ' padded ',
    'plain user',
  ];

  it('percent-encodes a sub, tenant and scopes from a JWT so upstreams can decode them exactly, and the target stays healthy for everyone else', async () => {
    const up = await upstream();
    const gw = await gateway(up);
    for (const sub of odd) {
      const res = await request(`${gw.url}/v1/orders`, {
        headers: await bearer(ISS_A, { sub, org: `tenant ${sub}`, scope: 'orders:read ørders:wrïte' }),
      });
      expect(res.status, JSON.stringify(sub)).toBe(200);
    }
    expect(up.calls).toHaveLength(odd.length);
    up.calls.forEach((call, i) => {
      const h = call.headers;
      expect(decodeURIComponent(String(h['x-consumer-id']))).toBe(odd[i]);
      expect(decodeURIComponent(String(h['x-tenant-id']))).toBe(`tenant ${odd[i]}`);
      expect(String(h['x-scopes']).split(' ').map(decodeURIComponent)).toEqual([
        'orders:read',
        'ørders:wrïte',
      ]);
      expect(h['x-injected']).toBeUndefined();
      // What goes on the wire is visible ASCII only.
      for (const name of ['x-consumer-id', 'x-tenant-id', 'x-scopes'])
        expect(String(h[name])).toMatch(/^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$/);
    });
    expect(up.calls[2]!.headers['x-consumer-id']).toBe('jos%C3%A9');
    expect(up.calls[5]!.headers['x-consumer-id']).toBe('100%25');
    expect(up.calls[6]!.headers['x-consumer-id']).toBe('%20padded%20');
    // Values that were fine before are unchanged: inner spaces pass, decoding is a no-op.
    expect(up.calls[7]!.headers['x-consumer-id']).toBe('plain user');
    expect(up.calls[7]!.headers['x-tenant-id']).toBe('tenant plain user');

    const normal = await request(`${gw.url}/v1/orders`, {
      headers: await bearer(ISS_B, { sub: 'bystander' }),
    });
    expect(normal.status).toBe(200);
    expect(gw.gateway.services.upstreams.health().every((t) => t.healthy)).toBe(true);
  });

  it('percent-encodes an API key’s ownerId, tenantId and scopes the same way', async () => {
    const up = await upstream();
    const gw = await gateway(up);
    const { key } = await gw.gateway.services.keys.create({
      name: 'odd',
      ownerId: 'ownér-ĉ',
      tenantId: 'tenant\r\nX-Injected: 1',
      scopes: ['a b', 'ü'],
    });
    for (let i = 0; i < 4; i++)
      expect((await request(`${gw.url}/v1/orders`, { headers: { 'x-api-key': key } })).status).toBe(200);
    const h = up.calls[0]!.headers;
    expect(h['x-consumer-id']).toBe('own%C3%A9r-%C4%89');
    expect(h['x-tenant-id']).toBe('tenant%0D%0AX-Injected: 1');
    // A space inside one scope is encoded: it cannot split into two scopes upstream.
    expect(h['x-scopes']).toBe('a%20b %C3%BC');
    expect(h['x-injected']).toBeUndefined();
    expect(gw.gateway.services.upstreams.health().every((t) => t.healthy)).toBe(true);
  });

  it('refuses a token whose sub, tenant or scope is not valid Unicode (a lone surrogate) with 401 invalid-credentials', async () => {
    const up = await upstream();
    const gw = await gateway(up);
    for (const payload of [
      { sub: 'a\ud800' },
      { sub: 'ok', org: '\udc00tenant' },
      { sub: 'ok', scope: 'read \ud83d' },
    ]) {
      const res = await request(`${gw.url}/v1/orders`, { headers: await bearer(ISS_A, payload) });
      expectProblem(res, 'invalid-credentials');
    }
    expect(up.calls).toHaveLength(0);
  });

  it('answers an undici local argument error (UND_ERR_INVALID_ARG) as a 500 gateway error, not retried and not counted against the target', async () => {
    const up = await upstream();
    const app = express();
    app.use(requestId());
    // An Express policy may change what goes upstream (SPEC §12); here it writes a value undici refuses.
    app.use((req, _res, next) => {
      if (req.headers['x-make-bad'] !== undefined) req.headers['x-bad'] = 'aliće';
      next();
    });
    app.use(
      '/svc',
      proxy({ targets: [up.url], retries: 2, passiveHealth: { failures: 3, cooldownSec: 60 } }),
    );
    app.use(problemDetails());
    const base = await listenApp(app);
    for (let i = 0; i < 5; i++) {
      const res = await request(`${base}/svc/x`, { headers: { 'x-make-bad': '1' } });
      const body = expectProblem(res, 'internal-error');
      expect(body.detail).toBe('The gateway could not build the upstream request.');
    }
    expect(up.calls).toHaveLength(0);
    // Five local failures with a threshold of three: the target is still in rotation.
    expect((await request(`${base}/svc/x`)).status).toBe(200);
    expect(up.calls).toHaveLength(1);
  });
});

describe('Authorization beside an API key', () => {
  it('refuses a malformed Authorization beside an API key (Bearer<TAB>…, Basic …) with 401 invalid-credentials, and never forwards a non-key Authorization on an API-key request', async () => {
    const up = await upstream();
    const gw = await gateway(up);
    const keys = gw.gateway.services.keys;
    const { key } = await keys.create({ name: 'k', ownerId: 'owner' });
    const { key: other } = await keys.create({ name: 'other', ownerId: 'someone-else' });
    const token = await jwt(ISS_A, { sub: 'alice' });
    for (const authorization of [
      `Bearer\t${token}`,
      'Basic dXNlcjpwYXNz',
      `Bearer\t${key}`,
      `Bearer ${token}`,
      `Bearer ${other}`,
      'Bearer',
      'Digest username="x"',
    ]) {
      const res = await request(`${gw.url}/v1/orders`, { headers: { 'x-api-key': key, authorization } });
      expect(expectProblem(res, 'invalid-credentials').detail, authorization).toMatch(
        /^(The Authorization header must be "Bearer <token>"\.|The request carries two different credentials\.)$/,
      );
    }
    expect(up.calls).toHaveLength(0);
    // The same key twice is one credential; neither copy goes upstream.
    const same = await request(`${gw.url}/v1/orders`, {
      headers: { 'x-api-key': key, authorization: `Bearer ${key}` },
    });
    expect(same.status).toBe(200);
    expect(up.calls[0]!.headers.authorization).toBeUndefined();
    expect(up.calls[0]!.headers['x-api-key']).toBeUndefined();
  });

  it('never forwards an API key in any spelling of Authorization, even on a public route', async () => {
    const up = await upstream();
    const gw = await gateway(up);
    const { key } = await gw.gateway.services.keys.create({ name: 'k' });
    for (const authorization of [`Bearer\t${key}`, `bearer   ${key}`, `Bearer ${key}, Basic x`, key])
      await request(`${gw.url}/public`, { headers: { authorization } });
    for (const call of up.calls) expect(call.headers.authorization).toBeUndefined();
    // Other credentials on a public route are the upstream's business, and a JWT passes on JWT requests.
    await request(`${gw.url}/public`, { headers: { authorization: 'Basic dXNlcjpwYXNz' } });
    expect(up.calls.at(-1)!.headers.authorization).toBe('Basic dXNlcjpwYXNz');
    const token = await jwt(ISS_A, { sub: 'alice' });
    await request(`${gw.url}/v1/orders`, { headers: { authorization: `Bearer ${token}` } });
    expect(up.calls.at(-1)!.headers.authorization).toBe(`Bearer ${token}`);
  });
});

describe('proxy claims and method overrides from untrusted peers', () => {
  const claims = Object.fromEntries(UNTRUSTED_PEER_HEADERS.map((name) => [name, 'spoofed']));

  it('strips X-Forwarded-Port/-Prefix/-Scheme/-Ssl/-Server, X-Original-URL, X-Rewrite-URL, True-Client-IP, X-Client-IP, CF-Connecting-IP (and the rest of the list) from peers trustProxy does not trust', async () => {
    expect(UNTRUSTED_PEER_HEADERS).toEqual(
      expect.arrayContaining([
        'forwarded',
        'x-real-ip',
        'x-forwarded-port',
        'x-forwarded-prefix',
        'x-forwarded-scheme',
        'x-forwarded-ssl',
        'x-forwarded-server',
        'x-original-url',
        'x-rewrite-url',
        'true-client-ip',
        'x-client-ip',
        'cf-connecting-ip',
      ]),
    );
    const up = await upstream();
    const gw = await gateway(up); // trustProxy: false
    const underscored = Object.fromEntries(
      UNTRUSTED_PEER_HEADERS.map((n) => [n.replaceAll('-', '_'), 'spoofed']),
    );
    expect((await request(`${gw.url}/public`, { headers: { ...claims, ...underscored } })).status).toBe(200);
    const view = cgiView(up.calls[0]!);
    for (const name of UNTRUSTED_PEER_HEADERS) expect(view.get(cgi(name)), name).toBeUndefined();
  });

  it('passes the proxy claims from a trusted proxy, but drops X-HTTP-Method-Override from every peer so it cannot walk round a route’s methods', async () => {
    const up = await upstream();
    const gw = await gateway(up, { trustProxy: 'loopback' });
    const overrides = Object.fromEntries(METHOD_OVERRIDE_HEADERS.map((name) => [name, 'DELETE']));
    const res = await request(`${gw.url}/v1/create`, {
      method: 'POST',
      headers: { ...claims, ...overrides, X_HTTP_Method_Override: 'DELETE' },
      body: '',
    });
    expect(res.status).toBe(200);
    const call = up.calls[0]!;
    expect(call.method).toBe('POST');
    for (const name of UNTRUSTED_PEER_HEADERS) expect(call.headers[name], name).toBe('spoofed');
    const view = cgiView(call);
    for (const name of METHOD_OVERRIDE_HEADERS) expect(view.get(cgi(name)), name).toBeUndefined();
    // From an untrusted peer, the overrides are gone as well.
    const untrusted = await gateway(up);
    await request(`${untrusted.url}/v1/create`, { method: 'POST', headers: overrides, body: '' });
    for (const name of METHOD_OVERRIDE_HEADERS) expect(up.calls[1]!.headers[name], name).toBeUndefined();
    // The route's own method check still holds: DELETE itself is 405.
    expectProblem(await request(`${gw.url}/v1/create`, { method: 'DELETE' }), 'method-not-allowed');
  });
});
