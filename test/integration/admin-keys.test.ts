import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, type RunningGateway } from '../helpers/gateway.js';
import { request, type Reply } from '../helpers/http.js';
import { startUpstream, type Upstream } from '../helpers/upstream.js';
import { expectProblem } from '../helpers/problem.js';
import { OpenApiValidator } from '../helpers/openapi.js';
import {
  keyInvalidationChannel,
  sharedRedisUrl,
  uniquePrefix,
  waitForSubscribers,
} from '../helpers/redis.js';
import { signingKey, startJwksServer, token, type JwksServer, type SigningKey } from '../helpers/jwks.js';
import { ManualClock } from '../../src/core/clock.js';

const TOKEN = 'admin-keys-test-token-0123';
const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

let signer: SigningKey;
let jwks: JwksServer;
beforeAll(async () => {
  signer = await signingKey('k1');
  jwks = await startJwksServer([signer]);
});
afterAll(() => jwks.close());

interface Harness {
  gw: RunningGateway;
  up: Upstream;
  clock: ManualClock;
  openapi: OpenApiValidator;
  admin(method: string, path: string, body?: unknown, raw?: string): Promise<Reply>;
  proxied(key: string): Promise<Reply>;
}

async function harness(
  store: Record<string, unknown>,
  opts: { clock?: ManualClock; up?: Upstream } = {},
): Promise<Harness> {
  const clock = opts.clock ?? new ManualClock(Date.now());
  let up = opts.up;
  if (!up) {
    up = await startUpstream();
    const u = up;
    cleanup.push(() => u.close());
  }
  const gw = await startGateway(
    {
      ...store,
      admin: { host: '127.0.0.1', port: 0, tokens: [TOKEN] },
      auth: { jwt: [{ issuer: 'https://idp.test/', audience: 'api://orders', jwksUri: jwks.url }] },
      plans: {
        free: { rateLimits: [{ name: 'per-key', by: 'key', limit: 2, windowSec: 60 }] },
        blocked: { apiAccess: false },
      },
      selfService: {
        path: '/v1/keys',
        maxKeysPerUser: 2,
        scopes: ['orders:read', 'orders:write'],
        plan: 'free',
      },
      routes: [
        { id: 'orders', path: '/v1/orders', auth: { methods: ['apiKey'] }, upstream: { targets: [up.url] } },
      ],
    } as any,
    { clock, env: { TOLLGATE_SECRET_KEY: 'admin-keys-secret-key-0123456789abcdef' } },
  );
  cleanup.push(() => gw.close());
  const doc = (
    await request(`${gw.adminUrl}/openapi.json`, { headers: { authorization: `Bearer ${TOKEN}` } })
  ).json();
  const openapi = new OpenApiValidator(doc);
  const h: Harness = {
    gw,
    up,
    clock,
    openapi,
    async admin(method, path, body, raw) {
      const res = await request(`${gw.adminUrl}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${TOKEN}`,
          ...(body !== undefined || raw !== undefined ? { 'content-type': 'application/json' } : {}),
        },
        body: raw ?? (body === undefined ? undefined : JSON.stringify(body)),
      });
      openapi.check(method, path, res);
      return res;
    },
    proxied: (key) => request(`${gw.url}/v1/orders`, { headers: { 'x-api-key': key } }),
  };
  return h;
}

const stores: Array<[string, () => Record<string, unknown>]> = [
  ['memory', () => ({})],
  [
    'redis',
    () => ({ redis: { url: sharedRedisUrl, keyPrefix: uniquePrefix('admin-keys'), commandTimeoutMs: 1000 } }),
  ],
];

describe.each(stores)('admin key API (%s store)', (_name, store) => {
  it('creates a key (plaintext and signing secret once), then shows it only masked', async () => {
    const h = await harness(store());
    const created = await h.admin('POST', '/keys', {
      name: 'ci',
      ownerId: 'u1',
      tenantId: 't1',
      scopes: ['a'],
      plan: 'free',
      hmac: true,
      meta: { team: 'x' },
    });
    expect(created.status).toBe(201);
    const body = created.json();
    expect(body.key).toMatch(/^tg_live_/);
    expect(body.signingSecret).toMatch(/^whsec_/);
    expect(body.maskedKey).toBe(`tg_live_…${body.key.slice(-4)}`);
    const got = await h.admin('GET', `/keys/${body.id}`);
    expect(got.json()).toMatchObject({
      id: body.id,
      name: 'ci',
      ownerId: 'u1',
      tenantId: 't1',
      scopes: ['a'],
      plan: 'free',
      enabled: true,
      hmac: true,
      meta: { team: 'x' },
    });
    const listed = await h.admin('GET', '/keys');
    for (const text of [got.text, listed.text]) {
      expect(text).not.toContain(body.key);
      expect(text).not.toContain(body.signingSecret);
      expect(text).not.toContain('"hash"');
    }
    expect((await h.proxied(body.key)).status).toBe(200);
  });

  it('lists with owner and tenant filters and cursor pagination', async () => {
    const h = await harness(store());
    const ids = [];
    for (let i = 0; i < 5; i++) {
      h.clock.advance(1000);
      ids.push(
        (
          await h.admin('POST', '/keys', {
            name: `k${i}`,
            ownerId: i < 3 ? 'alice' : 'bob',
            tenantId: 'acme',
          })
        ).json().id,
      );
    }
    const page1 = (await h.admin('GET', '/keys?limit=2')).json();
    expect(page1.items.map((k: any) => k.id)).toEqual([ids[4], ids[3]]);
    const page2 = (await h.admin('GET', `/keys?limit=2&cursor=${page1.nextCursor}`)).json();
    expect(page2.items.map((k: any) => k.id)).toEqual([ids[2], ids[1]]);
    expect((await h.admin('GET', '/keys?ownerId=bob')).json().items.map((k: any) => k.id)).toEqual([
      ids[4],
      ids[3],
    ]);
    expect((await h.admin('GET', '/keys?tenantId=acme&limit=200')).json().items).toHaveLength(5);
    const bad = await h.admin('GET', '/keys?limit=0&sort=name');
    expect(expectProblem(bad, 'validation-failed').errors).toEqual(
      expect.arrayContaining([
        { pointer: '/query/limit', message: 'must be an integer from 1 to 200' },
        { pointer: '/query/sort', message: 'is not a known field' },
      ]),
    );
  });

  it('validates bodies: bad JSON, unknown fields, wrong types, unknown plans (JSON Pointers)', async () => {
    const h = await harness(store());
    const badJson = await h.admin('POST', '/keys', undefined, '{"name": ');
    expect(expectProblem(badJson, 'validation-failed').errors).toEqual([
      { pointer: '', message: 'is not valid JSON' },
    ]);
    const wrong = await h.admin('POST', '/keys', {
      name: '',
      scopes: 'a',
      remaining: -1,
      extra: true,
      expiresAt: 'tomorrow',
    });
    expect(expectProblem(wrong, 'validation-failed').errors).toEqual(
      expect.arrayContaining([
        { pointer: '/name', message: 'must not be empty' },
        { pointer: '/scopes', message: 'must be a list' },
        { pointer: '/extra', message: 'is not a known field' },
        { pointer: '/expiresAt', message: 'must be an ISO 8601 date-time' },
        { pointer: '/remaining', message: 'must be a non-negative integer' },
      ]),
    );
    expect(
      expectProblem(await h.admin('POST', '/keys', { name: 'x', plan: 'platinum' }), 'validation-failed')
        .errors,
    ).toEqual([{ pointer: '/plan', message: 'is not a plan in the config' }]);
    expectProblem(await h.admin('POST', '/keys'), 'validation-failed');
    // Bodies the parser refuses are the client's fault (400), never a 500.
    for (const headers of [
      { 'content-type': 'application/json; charset=klingon' },
      { 'content-type': 'application/json', 'content-encoding': 'xyz' },
    ]) {
      const refused = await request(`${h.gw.adminUrl}/keys`, {
        method: 'POST',
        headers: { authorization: `Bearer ${TOKEN}`, ...headers },
        body: '{"name":"x"}',
      });
      expectProblem(refused, 'validation-failed');
    }
    const badCursor = await h.admin('GET', '/keys?cursor=bm90LWEtY3Vyc29y');
    expect(expectProblem(badCursor, 'validation-failed').errors).toEqual([
      { pointer: '/query/cursor', message: 'is not a cursor this API gave out' },
    ]);
  });

  it('patches, revokes, and answers 404 for unknown ids', async () => {
    const h = await harness(store());
    const k = (await h.admin('POST', '/keys', { name: 'p', remaining: 5 })).json();
    const patched = await h.admin('PATCH', `/keys/${k.id}`, {
      name: 'renamed',
      scopes: ['x'],
      enabled: false,
      meta: { v: 2 },
      expiresAt: null,
    });
    expect(patched.json()).toMatchObject({ name: 'renamed', scopes: ['x'], enabled: false, meta: { v: 2 } });
    expectProblem(await h.proxied(k.key), 'invalid-credentials');
    await h.admin('PATCH', `/keys/${k.id}`, { enabled: true });
    expect((await h.proxied(k.key)).status).toBe(200);
    expect((await h.admin('GET', `/keys/${k.id}`)).json().remaining).toBe(4);
    // Setting remaining restarts the count.
    expect((await h.admin('PATCH', `/keys/${k.id}`, { remaining: 1 })).json().remaining).toBe(1);
    expect((await h.proxied(k.key)).status).toBe(200);
    expectProblem(await h.proxied(k.key), 'quota-exceeded');
    expect((await h.admin('DELETE', `/keys/${k.id}`)).status).toBe(204);
    expectProblem(await h.proxied(k.key), 'invalid-credentials');
    // Revoked keys: out of the listing, behind `state=revoked` (masked, with the time of revocation).
    expect((await h.admin('GET', '/keys')).json().items.map((v: { id: string }) => v.id)).not.toContain(k.id);
    const revoked = (await h.admin('GET', '/keys?state=revoked')).json();
    expect(revoked.nextCursor).toBeNull();
    expect(revoked.items[0]).toMatchObject({ id: k.id, name: 'renamed', maskedKey: k.maskedKey });
    expect(Date.parse(revoked.items[0].revokedAt)).not.toBeNaN();
    expect(JSON.stringify(revoked)).not.toContain(k.key);
    expect(expectProblem(await h.admin('GET', '/keys?state=deleted'), 'validation-failed').errors).toEqual([
      { pointer: '/query/state', message: 'must be one of "active", "revoked"' },
    ]);
    for (const [m, p] of [
      ['GET', `/keys/${k.id}`],
      ['DELETE', `/keys/${k.id}`],
      ['PATCH', '/keys/key_nope'],
      ['POST', '/keys/key_nope/rotate'],
    ] as const)
      expectProblem(await h.admin(m, p, m === 'PATCH' ? { name: 'x' } : undefined), 'not-found');
  });

  it('rotates with a grace period during which both keys work', async () => {
    const h = await harness(store());
    const old = (await h.admin('POST', '/keys', { name: 'r', scopes: ['s'], hmac: true })).json();
    const rotated = await h.admin('POST', `/keys/${old.id}/rotate`, { gracePeriodSec: 60 });
    expect(rotated.status).toBe(201);
    const next = rotated.json();
    expect(next).toMatchObject({ name: 'r', scopes: ['s'], rotatedFrom: old.id, previous: { id: old.id } });
    expect(next.key).not.toBe(old.key);
    expect(rotated.headers['cache-control']).toBe('no-store'); // it carries a plaintext key
    expect(next.signingSecret).toMatch(/^whsec_/);
    expect((await h.proxied(old.key)).status).toBe(200);
    expect((await h.proxied(next.key)).status).toBe(200);
    h.clock.advance(61_000);
    expectProblem(await h.proxied(old.key), 'expired-credentials');
    expect((await h.proxied(next.key)).status).toBe(200);
    expectProblem(
      await h.admin('POST', `/keys/${old.id}/rotate`, { gracePeriodSec: -1 }),
      'validation-failed',
    );
    // One successor per key, and none for a dead key.
    expect(expectProblem(await h.admin('POST', `/keys/${old.id}/rotate`, {}), 'conflict').detail).toContain(
      next.id,
    );
    const dead = (
      await h.admin('POST', '/keys', { name: 'd', expiresAt: new Date(h.clock.now() + 1000).toISOString() })
    ).json();
    h.clock.advance(2000);
    expectProblem(await h.admin('POST', `/keys/${dead.id}/rotate`, {}), 'conflict');
  });

  it('shares remaining uses between the old and the new key while the grace period runs', async () => {
    const h = await harness(store());
    const old = (await h.admin('POST', '/keys', { name: 'metered', remaining: 3 })).json();
    expect((await h.proxied(old.key)).status).toBe(200); // 2 left
    const next = (await h.admin('POST', `/keys/${old.id}/rotate`, { gracePeriodSec: 60 })).json();
    expect(next.remaining).toBe(2);
    expect((await h.proxied(old.key)).status).toBe(200); // 1 left, for both
    expect((await h.proxied(next.key)).status).toBe(200); // 0 left
    expectProblem(await h.proxied(old.key), 'quota-exceeded');
    expectProblem(await h.proxied(next.key), 'quota-exceeded');
    expect((await h.admin('GET', `/keys/${old.id}`)).json().remaining).toBe(0);
    // A second rotation still draws on the same allowance; an admin reset refills it for the chain.
    const third = (await h.admin('POST', `/keys/${next.id}/rotate`, { gracePeriodSec: 60 })).json();
    expect(third.remaining).toBe(0);
    expectProblem(await h.proxied(third.key), 'quota-exceeded');
    expect((await h.admin('PATCH', `/keys/${third.id}`, { remaining: 1 })).json().remaining).toBe(1);
    expect((await h.proxied(next.key)).status).toBe(200);
    expectProblem(await h.proxied(third.key), 'quota-exceeded');
  });

  it('verifies keys with the SPEC codes, without charging them', async () => {
    const h = await harness(store());
    const verify = async (key: string, scopes?: string[]) =>
      (await h.admin('POST', '/keys/verify', { key, scopes })).json();
    const valid = (
      await h.admin('POST', '/keys', {
        name: 'v',
        ownerId: 'o',
        scopes: ['a', 'b'],
        plan: 'free',
        remaining: 3,
      })
    ).json();
    expect(await verify(valid.key)).toMatchObject({
      valid: true,
      code: 'VALID',
      keyId: valid.id,
      ownerId: 'o',
      scopes: ['a', 'b'],
      plan: 'free',
      remaining: 3,
    });
    expect((await verify(valid.key)).remaining).toBe(3);
    expect((await verify(valid.key, ['a', 'c'])).code).toBe('INSUFFICIENT_PERMISSIONS');
    expect(await verify('tg_live_notarealkey')).toMatchObject({
      valid: false,
      code: 'NOT_FOUND',
      keyId: null,
    });
    const disabled = (await h.admin('POST', '/keys', { name: 'd', enabled: false })).status;
    expect(disabled).toBe(400); // `enabled` is not a create field
    const toDisable = (await h.admin('POST', '/keys', { name: 'd' })).json();
    await h.admin('PATCH', `/keys/${toDisable.id}`, { enabled: false });
    expect((await verify(toDisable.key)).code).toBe('DISABLED');
    const expired = (
      await h.admin('POST', '/keys', { name: 'e', expiresAt: new Date(h.clock.now() - 1000).toISOString() })
    ).json();
    expect((await verify(expired.key)).code).toBe('EXPIRED');
    const blocked = (await h.admin('POST', '/keys', { name: 'b', plan: 'blocked' })).json();
    expect((await verify(blocked.key)).code).toBe('FORBIDDEN');
    const once = (await h.admin('POST', '/keys', { name: 'u', remaining: 1 })).json();
    await h.proxied(once.key);
    expect((await verify(once.key)).code).toBe('USAGE_EXCEEDED');
    await h.proxied(valid.key);
    await h.proxied(valid.key);
    expect((await verify(valid.key)).code).toBe('RATE_LIMITED');
    expectProblem(await h.admin('POST', '/keys/verify', { scopes: [] }), 'validation-failed');
  });
});

describe('full key lifecycle on Redis across two gateways', () => {
  it('create → use → rotate → old key during and after grace → revoke → 401, on either instance', async () => {
    const prefix = uniquePrefix('lifecycle');
    const clock = new ManualClock(Date.now());
    const up = await startUpstream();
    cleanup.push(() => up.close());
    const redis = { redis: { url: sharedRedisUrl, keyPrefix: prefix, commandTimeoutMs: 1000 } };
    const a = await harness(redis, { clock, up });
    const b = await harness(redis, { clock, up });
    await waitForSubscribers(sharedRedisUrl, keyInvalidationChannel(prefix), 2);
    const created = (await a.admin('POST', '/keys', { name: 'life', ownerId: 'owner' })).json();
    expect((await b.proxied(created.key)).status).toBe(200);
    const rotated = (await a.admin('POST', `/keys/${created.id}/rotate`, { gracePeriodSec: 30 })).json();
    expect((await b.proxied(created.key)).status).toBe(200);
    expect((await b.proxied(rotated.key)).status).toBe(200);
    clock.advance(31_000);
    expectProblem(await b.proxied(created.key), 'expired-credentials');
    expect((await a.proxied(rotated.key)).status).toBe(200);
    expect((await b.admin('DELETE', `/keys/${rotated.id}`)).status).toBe(204);
    expectProblem(await a.proxied(rotated.key), 'invalid-credentials');
    expectProblem(await b.proxied(rotated.key), 'invalid-credentials');
    // Every admin answer above matched the OpenAPI document.
    expect(a.openapi.checked + b.openapi.checked).toBe(3);
  });
});

describe.each(stores)('self-service cap under concurrency (%s store)', (name, store) => {
  it('creates exactly maxKeysPerUser keys when many creates race, across instances on Redis', async () => {
    const shared = store();
    const up = await startUpstream();
    cleanup.push(() => up.close());
    // On Redis, two gateways share the store: the cap must hold across instances, not only within one.
    const gateways =
      name === 'redis'
        ? [await harness(shared, { up }), await harness(shared, { up })]
        : [await harness(shared, { up })];
    const headers = {
      authorization: `Bearer ${await token(signer, { sub: `racer-${name}` })}`,
      'content-type': 'application/json',
    };
    const replies = await Promise.all(
      Array.from({ length: 8 }, (_, i) =>
        request(`${gateways[i % gateways.length]!.gw.url}/v1/keys`, {
          method: 'POST',
          headers,
          body: JSON.stringify({ name: `k${i}` }),
        }),
      ),
    );
    expect(replies.map((r) => r.status).sort()).toEqual([201, 201, 409, 409, 409, 409, 409, 409]);
    for (const r of replies.filter((x) => x.status === 409)) expectProblem(r, 'conflict');
    const listed = await request(`${gateways[0]!.gw.url}/v1/keys`, { headers });
    expect(listed.json().items).toHaveLength(2);
  });
});

describe('self-service keys', () => {
  it('lets a signed-in user create, list and revoke their own keys, and nobody else’s', async () => {
    const h = await harness({});
    const alice = {
      authorization: `Bearer ${await token(signer, { sub: 'alice', claims: { scope: 'x' } })}`,
    };
    const bob = { authorization: `Bearer ${await token(signer, { sub: 'bob' })}` };
    const call = async (method: string, path: string, headers: Record<string, string>, body?: unknown) => {
      const res = await request(`${h.gw.url}${path}`, {
        method,
        headers: { ...headers, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      h.openapi.check(method, path, res);
      return res;
    };
    const created = await call('POST', '/v1/keys', alice, { name: 'cli', scopes: ['orders:read'] });
    expect(created.status).toBe(201);
    const key = created.json();
    expect(key).toMatchObject({ ownerId: 'alice', plan: 'free', scopes: ['orders:read'] });
    expect(key.key).toMatch(/^tg_live_/);
    expect((await h.proxied(key.key)).status).toBe(200);
    const list = (await call('GET', '/v1/keys', alice)).json();
    expect(list.items.map((k: any) => k.id)).toEqual([key.id]);
    expect(JSON.stringify(list)).not.toContain(key.key);
    expect((await call('GET', '/v1/keys', bob)).json().items).toEqual([]);
    // Bob cannot see or revoke Alice's key: the same 404 as for an id that does not exist.
    const foreign = await call('DELETE', `/v1/keys/${key.id}`, bob);
    const unknown = await call('DELETE', '/v1/keys/key_doesnotexist', bob);
    expect(expectProblem(foreign, 'not-found').detail).toBe(`No key ${key.id}.`);
    expectProblem(unknown, 'not-found');
    expect((await call('DELETE', `/v1/keys/${key.id}`, alice)).status).toBe(204);
    expectProblem(await h.proxied(key.key), 'invalid-credentials');
  });

  it('refuses API keys (403), anonymous callers (401), over-cap creation (409) and scopes not on offer (400)', async () => {
    const h = await harness({});
    const alice = { authorization: `Bearer ${await token(signer, { sub: 'alice2' })}` };
    const post = (headers: Record<string, string>, body: unknown) =>
      request(`${h.gw.url}/v1/keys`, {
        method: 'POST',
        headers: { ...headers, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
    const apiKey = (await h.admin('POST', '/keys', { name: 'k' })).json().key;
    expect(expectProblem(await post({ 'x-api-key': apiKey }, { name: 'x' }), 'forbidden').detail).toBe(
      'API keys cannot manage keys.',
    );
    expectProblem(await post({ authorization: `Bearer ${apiKey}` }, { name: 'x' }), 'forbidden');
    expectProblem(await post({}, { name: 'x' }), 'missing-credentials');
    expect((await post(alice, { name: 'one' })).status).toBe(201);
    expect((await post(alice, { name: 'two' })).status).toBe(201);
    expect(expectProblem(await post(alice, { name: 'three' }), 'conflict').detail).toContain('2 active keys');
    const bad = await post(
      { authorization: `Bearer ${await token(signer, { sub: 'carol' })}` },
      { name: 'x', scopes: ['admin:everything'], plan: 'gold' },
    );
    expect(expectProblem(bad, 'validation-failed').errors).toEqual(
      expect.arrayContaining([{ pointer: '/plan', message: 'is not a known field' }]),
    );
    const scopes = await post(
      { authorization: `Bearer ${await token(signer, { sub: 'dave' })}` },
      { name: 'x', scopes: ['admin:everything'] },
    );
    expect(expectProblem(scopes, 'validation-failed').errors).toEqual([
      { pointer: '/scopes/0', message: '"admin:everything" is not a scope self-service keys may have' },
    ]);
    expectProblem(
      await request(`${h.gw.url}/v1/keys`, { method: 'PUT', headers: alice }),
      'method-not-allowed',
    );
  });
});

describe('self-service without a configured scope list', () => {
  it('gives a key only scopes the user’s own token has; needs a sub; a malformed id is 404', async () => {
    const gw = await startGateway({
      auth: { jwt: [{ issuer: 'https://idp.test/', audience: 'api://orders', jwksUri: jwks.url }] },
      selfService: { path: '/v1/keys' },
      routes: [{ id: 'demo', path: '/demo', mock: {} }],
    });
    cleanup.push(() => gw.close());
    const call = async (method: string, path: string, claims: Record<string, unknown>, body?: unknown) =>
      request(`${gw.url}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${await token(signer, claims)}`,
          'content-type': 'application/json',
        },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    const reader = { sub: 'reader-1', claims: { scope: 'orders:read' } };
    expect((await call('POST', '/v1/keys', reader, { name: 'k', scopes: ['orders:read'] })).status).toBe(201);
    const escalate = await call('POST', '/v1/keys', reader, { name: 'k', scopes: ['orders:write'] });
    expect(expectProblem(escalate, 'validation-failed').errors).toEqual([
      { pointer: '/scopes/0', message: '"orders:write" is not a scope self-service keys may have' },
    ]);
    // Without `sub`, two users could not be told apart: refused, by authentication (SPEC §9).
    expectProblem(await call('GET', '/v1/keys', { sub: '' }), 'invalid-credentials');
    expectProblem(await call('DELETE', '/v1/keys/%E0%A4%A', reader), 'not-found');
  });
});
