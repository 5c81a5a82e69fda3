import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, type RunningGateway } from '../helpers/gateway.js';
import { request, waitFor, type Reply } from '../helpers/http.js';
import { startUpstream, type Upstream } from '../helpers/upstream.js';
import { expectProblem } from '../helpers/problem.js';
import { OpenApiValidator } from '../helpers/openapi.js';
import { roomInWindow } from '../helpers/ratelimit.js';
import {
  keyInvalidationChannel,
  sharedRedisUrl,
  uniquePrefix,
  waitForSubscribers,
} from '../helpers/redis.js';
import { validateConfig } from '../../src/config/load.js';
import { signingKey, startJwksServer, token, type JwksServer, type SigningKey } from '../helpers/jwks.js';

/*
 * Issue 18, items 4–7 through real sockets (and real Redis where it says so): per-key overrides of
 * plan limits, tenant plans (`PUT/GET /tenants/{id}`, followed at once on a second instance),
 * `environment: test` keys, verify with `ratelimits` and `charge` on the gateway's own counters,
 * and the self-service rules (`requiredScopes`, `requiredClaims`, `planFrom: tenant`).
 */

const TOKEN = 'plans-verify-test-token-0123';
const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

let signer: SigningKey;
let jwks: JwksServer;
let up: Upstream;
beforeAll(async () => {
  signer = await signingKey('k1');
  jwks = await startJwksServer([signer]);
  up = await startUpstream();
});
afterAll(async () => {
  await jwks.close();
  await up.close();
});

interface Harness {
  gw: RunningGateway;
  openapi: OpenApiValidator;
  admin(method: string, path: string, body?: unknown): Promise<Reply>;
  proxied(key: string): Promise<Reply>;
}

async function harness(store: Record<string, unknown>, selfService: Record<string, unknown> = {}) {
  // Each test fills hourly windows and expects the next request refused: not across an hour's end.
  await roomInWindow(3600, 10_000);
  const gw = await startGateway(
    {
      ...store,
      admin: { host: '127.0.0.1', port: 0, tokens: [TOKEN] },
      auth: {
        jwt: [
          {
            issuer: 'https://idp.test/',
            audience: 'api://orders',
            jwksUri: jwks.url,
            tenantClaim: 'org_id',
          },
        ],
      },
      plans: {
        free: { rateLimits: [{ name: 'per-key', by: 'key', limit: 2, windowSec: 3600 }] },
        pro: { rateLimits: [{ name: 'per-key', by: 'key', limit: 100, windowSec: 3600 }] },
        metered: {
          quota: { limit: 3, period: 'month' },
          rateLimits: [
            { name: 'per-key', by: 'key', limit: 5, windowSec: 3600 },
            { name: 'per-ip', by: 'ip', limit: 50, windowSec: 3600 },
          ],
        },
        blocked: { apiAccess: false },
        llm: {
          rateLimits: [
            { name: 'tokens', by: 'key', limit: 10, windowSec: 3600, meter: 'tokens' },
            { name: 'trial', by: 'key', limit: 1, windowSec: 3600, mode: 'shadow' },
          ],
        },
      },
      selfService: { path: '/v1/keys', maxKeysPerUser: 10, ...selfService },
      routes: [
        {
          id: 'orders',
          path: '/v1/orders',
          auth: { methods: ['apiKey'] },
          quota: { cost: 1 },
          upstream: { targets: [up.url] },
        },
        {
          id: 'complete',
          path: '/v1/complete',
          auth: { methods: ['apiKey'] },
          meters: { tokens: { responseHeader: 'x-usage-tokens' } },
          upstream: { targets: [up.url] },
        },
      ],
    } as any,
    { env: { TOLLGATE_SECRET_KEY: 'plans-verify-secret-key-0123456789abcd' } },
  );
  cleanup.push(() => gw.close());
  const doc = (
    await request(`${gw.adminUrl}/openapi.json`, { headers: { authorization: `Bearer ${TOKEN}` } })
  ).json();
  const openapi = new OpenApiValidator(doc);
  const h: Harness = {
    gw,
    openapi,
    async admin(method, path, body) {
      const res = await request(`${gw.adminUrl}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${TOKEN}`,
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
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
    () => ({ redis: { url: sharedRedisUrl, keyPrefix: uniquePrefix('plans'), commandTimeoutMs: 1000 } }),
  ],
];

describe.each(stores)('per-key overrides, tenant plans and environments (%s store)', (_name, store) => {
  it("a key's own limit named like its plan's replaces it: raised and lowered through POST and PATCH", async () => {
    const h = await harness(store());
    const raised = (
      await h.admin('POST', '/keys', {
        name: 'raised',
        plan: 'free',
        rateLimits: [{ name: 'per-key', by: 'key', limit: 4, windowSec: 3600 }],
      })
    ).json();
    expect(raised.rateLimits).toEqual([{ name: 'per-key', by: 'key', limit: 4, windowSec: 3600, cost: 1 }]);
    for (let i = 0; i < 4; i++) {
      const res = await h.proxied(raised.key);
      expect(res.status).toBe(200);
      expect(res.headers['ratelimit-policy']).toBe('"per-key";q=4;w=3600');
    }
    expectProblem(await h.proxied(raised.key), 'rate-limit-exceeded');

    const plain = (await h.admin('POST', '/keys', { name: 'plain', plan: 'free' })).json();
    expect((await h.proxied(plain.key)).headers['ratelimit-policy']).toBe('"per-key";q=2;w=3600');
    const patched = await h.admin('PATCH', `/keys/${plain.id}`, {
      rateLimits: [{ name: 'per-key', by: 'key', limit: 1, windowSec: 3600 }],
    });
    expect(patched.json().rateLimits[0].limit).toBe(1);
    expect((await h.admin('GET', `/keys/${plain.id}`)).json().rateLimits[0].limit).toBe(1);
    // Lowered to 1: the request already made in this window used it up (another counter, the key's own).
    const lowered = await h.proxied(plain.key);
    expect(lowered.headers['ratelimit-policy']).toBe('"per-key";q=1;w=3600');
    expect(lowered.status).toBe(200);
    expectProblem(await h.proxied(plain.key), 'rate-limit-exceeded');
    // Bad overrides: validation-failed with paths.
    const bad = await h.admin('PATCH', `/keys/${plain.id}`, {
      rateLimits: [{ name: 'per-key', by: 'key', limit: 0, windowSec: 3600 }],
    });
    expect(expectProblem(bad, 'validation-failed').errors[0].pointer).toBe('/rateLimits/0/limit');
  });

  it('PUT /tenants/{id} moves every key of the tenant without a plan of its own, at once; GET shows it', async () => {
    const h = await harness(store());
    const follower = (await h.admin('POST', '/keys', { name: 'f', tenantId: 'acme' })).json();
    const own = (await h.admin('POST', '/keys', { name: 'o', tenantId: 'acme', plan: 'pro' })).json();
    expect((await h.proxied(follower.key)).headers['ratelimit-policy']).toBeUndefined();
    expect((await h.admin('GET', '/tenants/acme')).json()).toEqual({
      id: 'acme',
      plan: null,
      updatedAt: null,
    });
    expectProblem(await h.admin('GET', '/tenants/nobody'), 'not-found');

    const put = await h.admin('PUT', '/tenants/acme', { plan: 'free' });
    expect(put.status).toBe(200);
    expect(put.json()).toMatchObject({ id: 'acme', plan: 'free' });
    expect((await h.admin('GET', '/tenants/acme')).json()).toEqual(put.json());
    expect((await h.proxied(follower.key)).headers['ratelimit-policy']).toBe('"per-key";q=2;w=3600');
    expect((await h.proxied(own.key)).headers['ratelimit-policy']).toBe('"per-key";q=100;w=3600');
    const verified = (await h.admin('POST', '/keys/verify', { key: follower.key })).json();
    expect(verified).toMatchObject({ valid: true, plan: 'free' });

    await h.admin('PUT', '/tenants/acme', { plan: 'blocked' });
    expectProblem(await h.proxied(follower.key), 'forbidden');
    expect((await h.proxied(own.key)).status).toBe(200);
    expect((await h.admin('POST', '/keys/verify', { key: follower.key })).json().code).toBe('FORBIDDEN');

    await h.admin('PUT', '/tenants/acme', { plan: null });
    expect((await h.proxied(follower.key)).status).toBe(200);
  });

  it('refuses an unknown plan, a malformed body and an over-long tenant id (400 with paths)', async () => {
    const h = await harness(store());
    const unknown = await h.admin('PUT', '/tenants/acme', { plan: 'gold' });
    expect(expectProblem(unknown, 'validation-failed').errors).toEqual([
      { pointer: '/plan', message: 'is not a plan in the config' },
    ]);
    for (const plan of ['__proto__', 'constructor', 'toString'])
      expectProblem(await h.admin('PUT', '/tenants/acme', { plan }), 'validation-failed');
    const extra = await h.admin('PUT', '/tenants/acme', { plan: 'free', keys: [] });
    expect(expectProblem(extra, 'validation-failed').errors).toEqual([
      { pointer: '/keys', message: 'is not a known field' },
    ]);
    expectProblem(await h.admin('PUT', '/tenants/acme', {}), 'validation-failed');
    const long = await h.admin('PUT', `/tenants/${'t'.repeat(201)}`, { plan: 'free' });
    expect(expectProblem(long, 'validation-failed').errors[0].pointer).toBe('/path/id');
    expectProblem(await h.admin('GET', `/tenants/${'t'.repeat(201)}`), 'validation-failed');
    // Nothing was stored by the refused calls.
    expectProblem(await h.admin('GET', '/tenants/acme'), 'not-found');
  });

  it('makes test keys (<prefix>_test_…) and shows their environment; old live keys still parse', async () => {
    const h = await harness(store());
    const created = (await h.admin('POST', '/keys', { name: 't', environment: 'test' })).json();
    expect(created.key).toMatch(/^tg_test_[0-9A-Za-z]{36}$/);
    expect(created.environment).toBe('test');
    expect(created.maskedKey).toBe(`tg_test_…${created.key.slice(-4)}`);
    expect((await h.proxied(created.key)).status).toBe(200);
    const live = (await h.admin('POST', '/keys', { name: 'l' })).json();
    expect(live.environment).toBe('live');
    expect((await h.proxied(live.key)).status).toBe(200);
    const verified = (await h.admin('POST', '/keys/verify', { key: created.key })).json();
    expect(verified).toMatchObject({ valid: true, name: 't', enabled: true, environment: 'test' });
    const bad = await h.admin('POST', '/keys', { name: 'x', environment: 'staging' });
    expect(expectProblem(bad, 'validation-failed').errors[0].pointer).toBe('/environment');
  });
});

describe('POST /keys/verify with ratelimits and charge shares the gateway’s counters (real Redis)', () => {
  it('checks without counting, counts with charge, and proxied requests and verifications draw on one budget', async () => {
    const store = {
      redis: { url: sharedRedisUrl, keyPrefix: uniquePrefix('verify'), commandTimeoutMs: 1000 },
    };
    const h = await harness(store);
    const k = (await h.admin('POST', '/keys', { name: 'v', plan: 'free', remaining: 10 })).json();
    const verify = (body: Record<string, unknown>) =>
      h.admin('POST', '/keys/verify', { key: k.key, ...body });

    const peek = (await verify({ ratelimits: [{ name: 'per-key' }] })).json();
    expect(peek).toMatchObject({ valid: true, code: 'VALID', name: 'v', enabled: true, environment: 'live' });
    expect(peek.ratelimits).toEqual([{ name: 'per-key', limit: 2, remaining: 2, reset: expect.any(Number) }]);
    expect(peek.ratelimits[0].reset).toBeGreaterThan(Date.now());
    expect(peek.remaining).toBe(10);

    const charged = (await verify({ ratelimits: [{ name: 'per-key' }], charge: true })).json();
    expect(charged).toMatchObject({ valid: true, remaining: 9 });
    expect(charged.ratelimits[0].remaining).toBe(1);

    // The proxied request takes the last unit the verification left…
    const proxied = await h.proxied(k.key);
    expect(proxied.status).toBe(200);
    expect(proxied.headers.ratelimit).toMatch(/^"per-key";r=0;/);
    // …so the next verification (and request) is refused, and charges nothing.
    const refused = (await verify({ ratelimits: [{ name: 'per-key' }], charge: true })).json();
    expect(refused).toMatchObject({ valid: false, code: 'RATE_LIMITED', remaining: 8 });
    expect(refused.ratelimits[0].remaining).toBe(0);
    expectProblem(await h.proxied(k.key), 'rate-limit-exceeded');
    expect((await verify({})).json().code).toBe('RATE_LIMITED');
    // A check with cost 0 still answers the state.
    expect((await verify({ ratelimits: [{ name: 'per-key', cost: 0 }] })).json().code).toBe('VALID');
  });

  it('checks a metered limit as the stage does (at or over its limit), charges its units only when named, and a shadow limit never refuses', async () => {
    const store = {
      redis: { url: sharedRedisUrl, keyPrefix: uniquePrefix('verify'), commandTimeoutMs: 1000 },
    };
    const h = await harness(store);
    const k = (await h.admin('POST', '/keys', { name: 'llm', plan: 'llm' })).json();
    const verify = (body: Record<string, unknown>) =>
      h.admin('POST', '/keys/verify', { key: k.key, ...body });
    const both = [{ name: 'tokens' }, { name: 'trial' }];
    // Charging without a cost counts no tokens (their number is the meter's), one unit of `trial`.
    for (let i = 0; i < 3; i++) {
      const charged = (await verify({ ratelimits: both, charge: true })).json();
      expect(charged).toMatchObject({ valid: true, code: 'VALID' });
      expect(charged.ratelimits[0]).toMatchObject({ name: 'tokens', limit: 10, remaining: 10 });
    }
    // `trial` (shadow) is over its limit of 1 and refuses nothing, checked or charged.
    expect((await verify({ ratelimits: both })).json().code).toBe('VALID');
    expect((await verify({})).json().code).toBe('VALID');
    // Named costs are tokens: 9, then the 10th brings it to its limit, where a check refuses.
    expect((await verify({ ratelimits: [{ name: 'tokens', cost: 9 }], charge: true })).json().code).toBe(
      'VALID',
    );
    const at = (await verify({ ratelimits: [{ name: 'tokens', cost: 1 }], charge: true })).json();
    expect(at).toMatchObject({ valid: true, code: 'VALID' });
    expect(at.ratelimits[0].remaining).toBe(0);
    const full = (await verify({ ratelimits: [{ name: 'tokens' }] })).json();
    expect(full).toMatchObject({ valid: false, code: 'RATE_LIMITED' });
    expect((await verify({ ratelimits: both, charge: true })).json().code).toBe('RATE_LIMITED');
  });

  it('charges quota and remaining uses as a request would, with costs; refuses unknown and per-IP limit names', async () => {
    const store = {
      redis: { url: sharedRedisUrl, keyPrefix: uniquePrefix('verify'), commandTimeoutMs: 1000 },
    };
    const h = await harness(store);
    const k = (await h.admin('POST', '/keys', { name: 'm', plan: 'metered', remaining: 2 })).json();
    const verify = (body: Record<string, unknown>) =>
      h.admin('POST', '/keys/verify', { key: k.key, ...body });
    const heavy = (await verify({ ratelimits: [{ name: 'per-key', cost: 4 }], charge: true })).json();
    expect(heavy).toMatchObject({ valid: true, remaining: 1 });
    expect(heavy.ratelimits).toEqual([
      { name: 'per-key', limit: 5, remaining: 1, reset: expect.any(Number) },
    ]);
    expect((await h.proxied(k.key)).status).toBe(200); // remaining 0 now, quota 2 of 3
    const spent = (await verify({ charge: true })).json();
    expect(spent).toMatchObject({ valid: false, code: 'USAGE_EXCEEDED', remaining: 0 });

    const unknown = await verify({ ratelimits: [{ name: 'per-key' }, { name: 'nope' }, { name: 'per-ip' }] });
    expect(expectProblem(unknown, 'validation-failed').errors).toEqual([
      { pointer: '/ratelimits/1/name', message: 'is not a rate limit of this key or its plan' },
      {
        pointer: '/ratelimits/2/name',
        message: 'counts by ip, which a verification has no request to read from',
      },
    ]);
    for (const ratelimits of [
      [{ name: 'per-key', cost: -1 }],
      [{ name: 'per-key', cost: 1.5 }],
      [{ name: 'per-key' }, { name: 'per-key' }],
      [{ name: '' }],
      [{ name: 'per-key', extra: 1 }],
    ])
      expect(expectProblem(await verify({ ratelimits }), 'validation-failed').errors[0].pointer).toMatch(
        /^\/ratelimits\/\d/,
      );
    expect(expectProblem(await verify({ charge: 'yes' }), 'validation-failed').errors[0].pointer).toBe(
      '/charge',
    );
    const missing = (
      await h.admin('POST', '/keys/verify', {
        key: 'tg_live_nope',
        ratelimits: [{ name: 'x' }],
        charge: true,
      })
    ).json();
    expect(missing).toMatchObject({ valid: false, code: 'NOT_FOUND', name: null, environment: null });
  });
});

describe('tenant plans across gateway instances (real Redis)', () => {
  it('a tenant plan change through one instance is applied at once by another that had the key cached', async () => {
    const prefix = uniquePrefix('tenant-shared');
    const store = { redis: { url: sharedRedisUrl, keyPrefix: prefix, commandTimeoutMs: 1000 } };
    const a = await harness(store);
    const b = await harness(store);
    await waitForSubscribers(sharedRedisUrl, keyInvalidationChannel(prefix), 2);
    const k = (await a.admin('POST', '/keys', { name: 'shared', tenantId: 'globex' })).json();
    await a.admin('PUT', '/tenants/globex', { plan: 'pro' });
    // Cached on b now (key record and tenant plan), for the default cache TTL.
    expect((await b.proxied(k.key)).headers['ratelimit-policy']).toBe('"per-key";q=100;w=3600');
    await a.admin('PUT', '/tenants/globex', { plan: 'blocked' });
    await waitFor(async () => (await b.proxied(k.key)).status === 403, 2000, 10);
    await a.admin('PUT', '/tenants/globex', { plan: 'free' });
    await waitFor(
      async () => (await b.proxied(k.key)).headers['ratelimit-policy'] === '"per-key";q=2;w=3600',
      2000,
      10,
    );
    expect((await b.admin('GET', '/tenants/globex')).json().plan).toBe('free');
  });
});

describe('self-service rules: requiredScopes, requiredClaims, planFrom: tenant, environment', () => {
  const post = (h: Harness, jwt: string, body: unknown) =>
    request(`${h.gw.url}/v1/keys`, {
      method: 'POST',
      headers: { authorization: `Bearer ${jwt}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });

  it('lets only org admins with the keys:create scope mint keys (403 forbidden otherwise)', async () => {
    const h = await harness(
      {},
      { requiredScopes: ['keys:create'], requiredClaims: { org_role: ['admin', 'owner'] } },
    );
    const admin = await token(signer, { sub: 'ann', claims: { scope: 'keys:create', org_role: 'admin' } });
    const listed = await token(signer, {
      sub: 'ola',
      claims: { scope: 'keys:create', org_role: ['member', 'owner'] },
    });
    const member = await token(signer, { sub: 'bob', claims: { scope: 'keys:create', org_role: 'member' } });
    const noClaim = await token(signer, { sub: 'cy', claims: { scope: 'keys:create' } });
    const wrongType = await token(signer, {
      sub: 'di',
      claims: { scope: 'keys:create', org_role: { admin: true } },
    });
    const noScope = await token(signer, { sub: 'ed', claims: { org_role: 'admin' } });
    expect((await post(h, admin, { name: 'a' })).status).toBe(201);
    expect((await post(h, listed, { name: 'a' })).status).toBe(201);
    for (const jwt of [member, noClaim, wrongType]) {
      const refused = expectProblem(await post(h, jwt, { name: 'a' }), 'forbidden');
      expect(refused.required_claim).toBe('org_role');
    }
    expect(expectProblem(await post(h, noScope, { name: 'a' }), 'forbidden').detail).toContain('keys:create');
    // Listing and revoking one's own keys is not limited by the rules.
    const listedKeys = await request(`${h.gw.url}/v1/keys`, {
      headers: { authorization: `Bearer ${member}` },
    });
    expect(listedKeys.status).toBe(200);
  });

  it("planFrom: tenant makes keys follow their tenant's plan; test keys on request", async () => {
    const h = await harness({}, { planFrom: 'tenant', plan: 'free' });
    await h.admin('PUT', '/tenants/org-1', { plan: 'pro' });
    const inOrg = await token(signer, { sub: 'fay', claims: { org_id: 'org-1' } });
    const noPlanOrg = await token(signer, { sub: 'gus', claims: { org_id: 'org-2' } });
    const created = await post(h, inOrg, { name: 'k', environment: 'test' });
    expect(created.status).toBe(201);
    h.openapi.check('POST', '/v1/keys', created);
    const key = created.json();
    expect(key).toMatchObject({ plan: null, tenantId: 'org-1', environment: 'test' });
    expect(key.key).toMatch(/^tg_test_/);
    expect((await h.proxied(key.key)).headers['ratelimit-policy']).toBe('"per-key";q=100;w=3600');
    await h.admin('PUT', '/tenants/org-1', { plan: 'free' });
    expect((await h.proxied(key.key)).headers['ratelimit-policy']).toBe('"per-key";q=2;w=3600');
    // A tenant without a plan: the configured plan.
    expect((await post(h, noPlanOrg, { name: 'k' })).json()).toMatchObject({
      plan: 'free',
      tenantId: 'org-2',
    });
    expect(
      expectProblem(await post(h, inOrg, { name: 'k', environment: 'prod' }), 'validation-failed').errors[0]
        .pointer,
    ).toBe('/environment');
  });
});

describe('selfService rules in the config: validated with paths; a bad reload keeps the old rules', () => {
  it('refuses bad planFrom, requiredScopes and requiredClaims with their paths, and keeps the config in force', async () => {
    const h = await harness({}, { requiredScopes: ['keys:create'] });
    const base = {
      auth: { jwt: [{ issuer: 'https://idp.test/', audience: 'api://orders', jwksUri: jwks.url }] },
      routes: [],
    };
    const bad: Array<[Record<string, unknown>, string]> = [
      [{ planFrom: 'owner' }, 'selfService.planFrom'],
      [{ requiredScopes: [''] }, 'selfService.requiredScopes[0]'],
      [{ requiredClaims: { org_role: [] } }, 'selfService.requiredClaims.org_role'],
      [{ requiredClaims: { org_role: 'admin' } }, 'selfService.requiredClaims.org_role'],
    ];
    for (const [rules, path] of bad) {
      const result = validateConfig({ ...base, selfService: { path: '/v1/keys', ...rules } });
      expect(result.ok, JSON.stringify(rules)).toBe(false);
      if (!result.ok) expect(result.issues.map((i) => i.path).join(' ')).toContain(path);
      expect(h.gw.gateway.reload({ ...base, selfService: { path: '/v1/keys', ...rules } } as any).ok).toBe(
        false,
      );
    }
    // Still the old rules: a token without keys:create is refused.
    const jwt = await token(signer, { sub: 'zed' });
    const res = await request(`${h.gw.url}/v1/keys`, {
      method: 'POST',
      headers: { authorization: `Bearer ${jwt}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'x' }),
    });
    expectProblem(res, 'forbidden');
  });
});
