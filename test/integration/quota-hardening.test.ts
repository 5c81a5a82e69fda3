import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import http from 'node:http';
import { startGateway, type RunningGateway } from '../helpers/gateway.js';
import { request, waitFor, type Reply } from '../helpers/http.js';
import { startUpstream, type Upstream } from '../helpers/upstream.js';
import { expectProblem } from '../helpers/problem.js';
import { sharedRedisUrl, uniquePrefix } from '../helpers/redis.js';
import { deleteRedisKeys } from '../helpers/redis-cleanup.js';
import { signingKey, startJwksServer, token, type JwksServer, type SigningKey } from '../helpers/jwks.js';
import { quotaCounter } from '../../src/policies/quota/quota.js';
import type { KeyRecord } from '../../src/keys/record.js';

/*
 * Version 2 hardening of quota and `remaining`: what a hang-up costs, what a refusal costs, and
 * quota per owner for self-service keys.
 */

const ADMIN = 'quota-hardening-admin-token';
const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

let signer: SigningKey;
let jwks: JwksServer;
beforeAll(async () => {
  signer = await signingKey('quota-k1');
  jwks = await startJwksServer([signer]);
});
afterAll(() => jwks.close());

const stores: Array<[string, () => Record<string, unknown>]> = [
  ['memory', () => ({})],
  [
    'redis',
    () => {
      const keyPrefix = uniquePrefix('quota-hardening');
      cleanup.push(() => deleteRedisKeys(keyPrefix));
      return { redis: { url: sharedRedisUrl, keyPrefix, commandTimeoutMs: 1000 } };
    },
  ],
];

const DAY_QUOTA = { limit: 100, period: 'day' as const };

/** An upstream that answers `status` to each request once the test releases it (or at once after). */
async function heldUpstream(status: (n: number) => number) {
  const waiting: Array<() => void> = [];
  let holding = true;
  const up = await startUpstream((_req, res, _body) => {
    const n = up.calls.length;
    const answer = () => {
      res.writeHead(status(n), { 'content-type': 'text/plain' });
      res.end(`answer ${n}`);
    };
    if (holding) waiting.push(answer);
    else answer();
  });
  cleanup.push(() => up.close());
  return {
    up,
    release: () => {
      holding = false;
      for (const go of waiting.splice(0)) go();
    },
  };
}

async function meteredGateway(
  up: Upstream,
  store: Record<string, unknown>,
  route: Record<string, unknown> = {},
) {
  const { upstream, ...rest } = route as { upstream?: object };
  const gw = await startGateway({
    ...store,
    plans: { metered: { quota: DAY_QUOTA } },
    routes: [
      {
        id: 'charges',
        path: '/charges',
        auth: { methods: ['apiKey'] },
        quota: { cost: 2 },
        ...rest,
        upstream: { targets: [up.url], timeoutMs: 5000, ...upstream },
      } as never,
    ],
  });
  cleanup.push(() => gw.close());
  const created = await gw.gateway.services.keys.create({ name: 'payer', plan: 'metered', remaining: 10 });
  return { gw, key: created.key, record: created.record };
}

/** The key's uses left and the units of its plan quota used today (read from the real counters). */
async function usage(gw: RunningGateway, record: KeyRecord) {
  const remaining = await gw.gateway.services.management.remainingOf(record);
  const [quotaUsed] = await gw.gateway.services.counters.peek([
    quotaCounter(DAY_QUOTA, record.id, 'credential', 1, Date.now()),
  ]);
  return { remaining, quotaUsed: quotaUsed ?? 0 };
}

const openConnections = (gw: RunningGateway) =>
  new Promise<number>((resolve, reject) =>
    gw.server.getConnections((err, n) => (err ? reject(err) : resolve(n))),
  );

async function postAndHangUp(
  gw: RunningGateway,
  key: string,
  idempotencyKey: string | undefined,
  sent: () => boolean,
): Promise<void> {
  const req = http.request(`${gw.url}/charges`, {
    method: 'POST',
    agent: false,
    headers: {
      'x-api-key': key,
      'content-type': 'application/json',
      ...(idempotencyKey ? { 'idempotency-key': idempotencyKey } : {}),
    },
  });
  req.on('error', () => undefined);
  req.end('{"amount":100}');
  await waitFor(sent, 5000);
  const before = await openConnections(gw);
  req.destroy();
  await waitFor(async () => (await openConnections(gw)) < before, 5000);
}

const charge = (gw: RunningGateway, key: string, idempotencyKey?: string) =>
  request(`${gw.url}/charges`, {
    method: 'POST',
    body: '{"amount":100}',
    headers: {
      'x-api-key': key,
      'content-type': 'application/json',
      ...(idempotencyKey ? { 'idempotency-key': idempotencyKey } : {}),
    },
  });

describe.each(stores)('quota and remaining after a hang-up (%s counters)', (_name, store) => {
  it('a hang-up after the upstream got the request is charged (hanging up is not a free request)', async () => {
    const { up, release } = await heldUpstream(() => 200);
    const { gw, key, record } = await meteredGateway(up, store());
    await postAndHangUp(gw, key, undefined, () => up.calls.length === 1);
    release();
    expect((await charge(gw, key)).status).toBe(200); // a full request after it, for comparison
    expect(await usage(gw, record)).toEqual({ remaining: 8, quotaUsed: 4 });
    expect(up.calls).toHaveLength(2);
  });

  it('a hang-up before the request reached the upstream is refunded', async () => {
    const { up, release } = await heldUpstream(() => 200);
    const { gw, key, record } = await meteredGateway(up, store(), { upstream: { maxSockets: 1 } });
    const blocker = charge(gw, key);
    await waitFor(() => up.calls.length === 1, 5000);
    const pool = gw.gateway.services.upstreams.all()[0]!.targets[0]!.pool;
    await postAndHangUp(gw, key, undefined, () => pool.stats.pending === 1);
    release();
    expect((await blocker).status).toBe(200);
    expect(await usage(gw, record)).toEqual({ remaining: 9, quotaUsed: 2 });
    expect(up.calls).toHaveLength(1);
  });

  it('with idempotency the answer after the hang-up decides: charged once for a 201 (the replay is free)', async () => {
    const { up, release } = await heldUpstream(() => 201);
    const { gw, key, record } = await meteredGateway(up, store(), { idempotency: {} });
    await postAndHangUp(gw, key, 'pay-1', () => up.calls.length === 1);
    release();
    let retry: Reply = await charge(gw, key, 'pay-1');
    await waitFor(async () => (retry = await charge(gw, key, 'pay-1')).status === 201, 5000, 25);
    expect(retry.headers['idempotent-replayed']).toBe('true');
    expect(up.calls).toHaveLength(1);
    expect(await usage(gw, record)).toEqual({ remaining: 9, quotaUsed: 2 });
  });

  it('with idempotency a 5xx answered after the hang-up is refunded', async () => {
    const { up, release } = await heldUpstream(() => 503);
    const { gw, key, record } = await meteredGateway(up, store(), { idempotency: {} });
    await postAndHangUp(gw, key, 'pay-2', () => up.calls.length === 1);
    release();
    // The key is released once the 503 is read (not kept): then the refund has been made too.
    await waitFor(async () => (await charge(gw, key, 'pay-2')).status === 503, 5000, 25);
    // Only the retry's own 503 (refunded as well) has gone through since.
    expect(await usage(gw, record)).toEqual({ remaining: 10, quotaUsed: 0 });
  });

  it('refunds do not depend on the observers: a failing observer does not skip them', async () => {
    const up = await startUpstream((_req, res) => {
      res.writeHead(500);
      res.end('broken');
    });
    cleanup.push(() => up.close());
    const { gw, key, record } = await meteredGateway(up, store());
    gw.gateway.services.observers.unshift(() => {
      throw new Error('observer down');
    });
    expect((await charge(gw, key)).status).toBe(500);
    expect((await charge(gw, key)).status).toBe(500);
    expect(await usage(gw, record)).toEqual({ remaining: 10, quotaUsed: 0 });
  });
});

describe('remaining: every authenticated request the route answers is a use; refusals cost nothing', () => {
  it('counts on a route without a quota block, and charges nothing for 403, 429, idempotency 400/409, replays or upstream 5xx', async () => {
    const up = await startUpstream((req, res) => {
      const status = req.url?.includes('fail') ? 500 : req.url?.includes('missing') ? 404 : 200;
      res.writeHead(status, { 'content-type': 'text/plain' });
      res.end(`status ${status}`);
    });
    cleanup.push(() => up.close());
    const gw = await startGateway({
      routes: [
        {
          id: 'open',
          path: '/open',
          auth: { methods: ['apiKey'] },
          rateLimits: [{ name: 'burst', by: 'key', limit: 7, windowSec: 3600 }],
          idempotency: {},
          upstream: { targets: [up.url] },
        },
        {
          id: 'admin-only',
          path: '/admin-only',
          auth: { methods: ['apiKey'], scopes: ['admin'] },
          upstream: { targets: [up.url] },
        },
      ],
    });
    cleanup.push(() => gw.close());
    const { key, record } = await gw.gateway.services.keys.create({ name: 'counted', remaining: 10 });
    const call = (path: string, init: { method?: string; body?: string; idem?: string } = {}) =>
      request(`${gw.url}${path}`, {
        method: init.method ?? 'GET',
        body: init.body,
        headers: { 'x-api-key': key, ...(init.idem !== undefined ? { 'idempotency-key': init.idem } : {}) },
      });
    expect((await call('/open')).status).toBe(200); // a use
    expectProblem(await call('/admin-only'), 'insufficient-scope');
    expectProblem(
      await call('/open', { method: 'POST', body: '{}', idem: 'has space' }),
      'validation-failed',
    );
    expect((await call('/open', { method: 'POST', body: '{"a":1}', idem: 'k1' })).status).toBe(200); // a use
    expectProblem(
      await call('/open', { method: 'POST', body: '{"a":2}', idem: 'k1' }),
      'idempotency-conflict',
    );
    const replay = await call('/open', { method: 'POST', body: '{"a":1}', idem: 'k1' });
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect((await call('/open?fail')).status).toBe(500);
    expect((await call('/open?missing')).status).toBe(404); // the upstream answered: a use
    expectProblem(await call('/open'), 'rate-limit-exceeded'); // the 8th on a limit of 7
    expect(await gw.gateway.services.management.remainingOf(record)).toBe(7);
  });
});

describe('quota per owner: churning self-service keys cannot reset it', () => {
  async function selfServiceGateway(store: Record<string, unknown>) {
    const up = await startUpstream();
    cleanup.push(() => up.close());
    const gw = await startGateway({
      ...store,
      admin: { host: '127.0.0.1', port: 0, tokens: [ADMIN] },
      auth: { jwt: [{ issuer: 'https://idp.test/', audience: 'api://orders', jwksUri: jwks.url }] },
      plans: {
        free: { quota: { limit: 2, period: 'day' } },
        perKey: { quota: { limit: 2, period: 'day' }, quotaBy: 'credential' },
        shared: { quota: { limit: 2, period: 'day' }, quotaBy: 'owner' },
      },
      selfService: { path: '/v1/keys', plan: 'free', maxKeysPerUser: 5 },
      routes: [
        {
          id: 'orders',
          path: '/v1/orders',
          auth: { methods: ['apiKey'] },
          quota: { cost: 1 },
          upstream: { targets: [up.url] },
        },
      ],
    } as never);
    cleanup.push(() => gw.close());
    const asUser = async (sub: string, method: string, path: string, body?: unknown) =>
      request(`${gw.url}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${await token(signer, { sub })}`,
          'content-type': 'application/json',
        },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    const admin = (method: string, path: string, body?: unknown) =>
      request(`${gw.adminUrl}${path}`, {
        method,
        headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    const use = (key: string) => request(`${gw.url}/v1/orders`, { headers: { 'x-api-key': key } });
    return { gw, asUser, admin, use };
  }

  it.each(stores)(
    'revoking and re-creating a key does not reset the owner’s quota (%s)',
    async (_n, store) => {
      const { asUser, admin, use } = await selfServiceGateway(store());
      const first = (await asUser('alice', 'POST', '/v1/keys', { name: 'one' })).json();
      expect((await use(first.key)).status).toBe(200);
      expect((await use(first.key)).status).toBe(200);
      expectProblem(await use(first.key), 'quota-exceeded');
      expect((await asUser('alice', 'DELETE', `/v1/keys/${first.id}`)).status).toBe(204);
      const second = (await asUser('alice', 'POST', '/v1/keys', { name: 'two' })).json();
      expectProblem(await use(second.key), 'quota-exceeded');
      expect((await admin('POST', '/keys/verify', { key: second.key })).json().code).toBe('USAGE_EXCEEDED');
      // A rotated key is still alice's self-service key.
      const rotated = (await admin('POST', `/keys/${second.id}/rotate`, { gracePeriodSec: 0 })).json();
      expectProblem(await use(rotated.key), 'quota-exceeded');
      // Another owner has a quota of their own.
      const bobs = (await asUser('bob', 'POST', '/v1/keys', { name: 'bob' })).json();
      expect((await use(bobs.key)).status).toBe(200);
    },
  );

  it('the plan decides when it says: quotaBy credential counts per key, quotaBy owner shares admin-made keys too', async () => {
    const { admin, use } = await selfServiceGateway({});
    // Unset quotaBy: an admin-made key counts per credential, even with an owner.
    const a1 = (await admin('POST', '/keys', { name: 'a1', plan: 'free', ownerId: 'carol' })).json();
    const a2 = (await admin('POST', '/keys', { name: 'a2', plan: 'free', ownerId: 'carol' })).json();
    for (const k of [a1, a1, a2, a2]) expect((await use(k.key)).status).toBe(200);
    // quotaBy: owner — carol's keys share one quota.
    const s1 = (await admin('POST', '/keys', { name: 's1', plan: 'shared', ownerId: 'carol' })).json();
    const s2 = (await admin('POST', '/keys', { name: 's2', plan: 'shared', ownerId: 'carol' })).json();
    expect((await use(s1.key)).status).toBe(200);
    expect((await use(s2.key)).status).toBe(200);
    expectProblem(await use(s1.key), 'quota-exceeded');
    // An owner id that is some key's id is still a separate counter from that key's own.
    const p1 = (await admin('POST', '/keys', { name: 'p1', plan: 'perKey' })).json();
    const p2 = (await admin('POST', '/keys', { name: 'p2', plan: 'shared', ownerId: p1.id })).json();
    expect((await use(p1.key)).status).toBe(200);
    expect((await use(p1.key)).status).toBe(200);
    expect((await use(p2.key)).status).toBe(200);
  });

  it('nobody can mark a key as self-service, or unmark one, through an API body', async () => {
    const { asUser, admin } = await selfServiceGateway({});
    expectProblem(
      await asUser('alice', 'POST', '/v1/keys', { name: 'x', selfService: false }),
      'validation-failed',
    );
    expectProblem(await admin('POST', '/keys', { name: 'x', selfService: true }), 'validation-failed');
    const made = (await asUser('alice', 'POST', '/v1/keys', { name: 'y' })).json();
    expectProblem(await admin('PATCH', `/keys/${made.id}`, { selfService: false }), 'validation-failed');
    expect(made.selfService).toBeUndefined(); // internal: not shown either
  });
});
