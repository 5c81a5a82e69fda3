import { afterEach, describe, expect, it } from 'vitest';
import http from 'node:http';
import { startGateway, type RunningGateway } from '../helpers/gateway.js';
import { request } from '../helpers/http.js';
import { startUpstream, type Upstream } from '../helpers/upstream.js';
import { expectProblem } from '../helpers/problem.js';
import { parsePolicies } from '../helpers/ratelimit.js';
import { sharedRedisUrl, uniquePrefix } from '../helpers/redis.js';
import { ManualClock } from '../../src/core/clock.js';

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

async function upstream(status = 200): Promise<Upstream> {
  const up = await startUpstream((_req, res) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end('{}');
  });
  cleanup.push(() => up.close());
  return up;
}

async function gateway(config: Record<string, unknown>, clock?: ManualClock): Promise<RunningGateway> {
  const gw = await startGateway(config, clock ? { clock } : {});
  cleanup.push(() => gw.close());
  return gw;
}

const stores: Array<[string, () => Record<string, unknown>]> = [
  ['memory', () => ({})],
  [
    'redis',
    () => ({ redis: { url: sharedRedisUrl, keyPrefix: uniquePrefix('rl'), commandTimeoutMs: 1000 } }),
  ],
];

describe.each(stores)('rate limits (%s)', (_name, storeConfig) => {
  it('sends RateLimit-Policy and RateLimit on every response, 429 with Retry-After correct to the second', async () => {
    const clock = new ManualClock(Date.UTC(2030, 0, 1, 0, 0, 3, 300)); // 3.3 s into a 10 s window
    const up = await upstream();
    const gw = await gateway(
      {
        ...storeConfig(),
        routes: [
          {
            id: 'r',
            path: '/r',
            auth: 'none',
            upstream: { targets: [up.url] },
            rateLimits: [
              { name: 'burst', by: 'ip', limit: 3, windowSec: 10 },
              { name: 'hourly', by: 'ip', limit: 100, windowSec: 3600 },
            ],
          },
        ],
      },
      clock,
    );
    const seen: Array<{ status: number; policy: any; limit: any }> = [];
    for (let i = 0; i < 4; i++) {
      const res = await request(`${gw.url}/r`);
      seen.push({
        status: res.status,
        policy: parsePolicies(res.headers['ratelimit-policy']),
        limit: parsePolicies(res.headers.ratelimit)[0],
      });
      if (res.status === 429) {
        const body = expectProblem(res, 'rate-limit-exceeded');
        expect(body.policy).toBe('burst');
        expect(res.headers['retry-after']).toBe('7'); // 10 − 3.3 = 6.7 s, rounded up
      }
    }
    expect(seen.map((s) => s.status)).toEqual([200, 200, 200, 429]);
    for (const s of seen)
      expect(s.policy).toEqual([
        { name: 'burst', q: 3, w: 10 },
        { name: 'hourly', q: 100, w: 3600 },
      ]);
    expect(seen.map((s) => s.limit)).toEqual([
      { name: 'burst', r: 2, t: 7 },
      { name: 'burst', r: 1, t: 7 },
      { name: 'burst', r: 0, t: 7 },
      { name: 'burst', r: 0, t: 7 },
    ]);
    expect(up.calls).toHaveLength(3);
    // The next window starts fresh.
    clock.advance(7000);
    expect((await request(`${gw.url}/r`)).status).toBe(200);
  });

  it('a request refused by one limit consumes none of the others', async () => {
    const clock = new ManualClock(Date.UTC(2030, 0, 1));
    const up = await upstream();
    const gw = await gateway(
      {
        ...storeConfig(),
        routes: [
          {
            id: 'r',
            path: '/r',
            auth: 'none',
            upstream: { targets: [up.url] },
            rateLimits: [
              { name: 'wide', by: 'global', limit: 10, windowSec: 60 },
              { name: 'narrow', by: 'ip', limit: 1, windowSec: 60 },
            ],
          },
        ],
      },
      clock,
    );
    expect((await request(`${gw.url}/r`)).status).toBe(200);
    for (let i = 0; i < 5; i++) expect((await request(`${gw.url}/r`)).status).toBe(429);
    // Drop "narrow" (counters survive a reload): "wide" was charged once, not six times.
    const reloaded = gw.gateway.reload({
      ...storeConfig(),
      routes: [
        {
          id: 'r',
          path: '/r',
          auth: 'none',
          upstream: { targets: [up.url] },
          rateLimits: [{ name: 'wide', by: 'global', limit: 10, windowSec: 60 }],
        },
      ],
    });
    expect(reloaded.ok).toBe(true);
    const next = await request(`${gw.url}/r`);
    expect(next.status).toBe(200);
    expect(parsePolicies(next.headers.ratelimit)[0]).toEqual({ name: 'wide', r: 8, t: 60 });
  });

  it('names the limit that blocks longest in Retry-After, so waiting it out is enough', async () => {
    const clock = new ManualClock(Date.UTC(2030, 0, 1, 0, 0, 0, 100));
    const up = await upstream();
    const gw = await gateway(
      {
        ...storeConfig(),
        routes: [
          {
            id: 'r',
            path: '/r',
            auth: 'none',
            upstream: { targets: [up.url] },
            rateLimits: [
              { name: 'burst', by: 'ip', limit: 2, windowSec: 1 },
              { name: 'slow', by: 'ip', limit: 2, windowSec: 60 },
            ],
          },
        ],
      },
      clock,
    );
    const first = await request(`${gw.url}/r`);
    // Nearest exhaustion: both have 1 left; "slow" resets later, so it is the one shown.
    expect(parsePolicies(first.headers.ratelimit)[0]).toEqual({ name: 'slow', r: 1, t: 60 });
    expect((await request(`${gw.url}/r`)).status).toBe(200);
    // Both are used up; "burst" frees a slot in 1 s but "slow" still refuses then: 60 s it is.
    const refused = await request(`${gw.url}/r`);
    expect(expectProblem(refused, 'rate-limit-exceeded').policy).toBe('slow');
    expect(refused.headers['retry-after']).toBe('60');
    expect(parsePolicies(refused.headers.ratelimit)[0]).toEqual({ name: 'slow', r: 0, t: 60 });
    clock.advance(1000);
    expect(expectProblem(await request(`${gw.url}/r`), 'rate-limit-exceeded').policy).toBe('slow');
    clock.advance(59_000);
    expect((await request(`${gw.url}/r`)).status).toBe(200);
  });

  it('counts by key: each credential has its own budget; plan and key limits apply on top of the route', async () => {
    const clock = new ManualClock(Date.UTC(2030, 0, 1));
    const up = await upstream();
    const gw = await gateway(
      {
        ...storeConfig(),
        plans: { free: { rateLimits: [{ name: 'plan', by: 'key', limit: 3, windowSec: 60 }] } },
        routes: [
          {
            id: 'r',
            path: '/r',
            auth: { methods: ['apiKey'] },
            upstream: { targets: [up.url] },
            rateLimits: [{ name: 'route', by: 'key', limit: 5, windowSec: 60 }],
          },
        ],
      },
      clock,
    );
    const keys = gw.gateway.services.keys;
    const a = await keys.create({ name: 'a', plan: 'free' });
    const b = await keys.create({ name: 'b', plan: 'free' });
    const own = await keys.create({
      name: 'own',
      rateLimits: [{ name: 'mine', by: 'key', limit: 1, windowSec: 60, cost: 1 }],
    });
    const call = (key: string) => request(`${gw.url}/r`, { headers: { 'x-api-key': key } });
    const statuses = async (key: string, n: number) => {
      const out = [];
      for (let i = 0; i < n; i++) out.push((await call(key)).status);
      return out;
    };
    expect(await statuses(a.key, 4)).toEqual([200, 200, 200, 429]);
    expect(await statuses(b.key, 4)).toEqual([200, 200, 200, 429]);
    const ownFirst = await call(own.key);
    expect(parsePolicies(ownFirst.headers['ratelimit-policy']).map((p) => p.name)).toEqual(['route', 'mine']);
    const ownSecond = await call(own.key);
    expect(expectProblem(ownSecond, 'rate-limit-exceeded').policy).toBe('mine');
  });
});

describe('rate limits across instances', () => {
  it('two gateways sharing Redis never let more than the limit through', async () => {
    const clock = new ManualClock(Date.UTC(2030, 0, 1));
    const up = await upstream();
    const config = {
      redis: { url: sharedRedisUrl, keyPrefix: uniquePrefix('exact'), commandTimeoutMs: 2000 },
      routes: [
        {
          id: 'r',
          path: '/r',
          auth: 'none',
          upstream: { targets: [up.url] },
          rateLimits: [{ name: 'global', by: 'global', limit: 50, windowSec: 60 }],
        },
      ],
    };
    const a = await gateway(config, clock);
    const b = await gateway(config, clock);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 50 });
    cleanup.push(() => Promise.resolve(agent.destroy()));
    const results = await Promise.all(
      Array.from({ length: 300 }, (_, i) => request(`${(i % 2 ? a : b).url}/r`, { agent })),
    );
    const statuses = results.map((r) => r.status);
    expect(statuses.filter((s) => s === 200)).toHaveLength(50);
    expect(statuses.filter((s) => s === 429)).toHaveLength(250);
    expect(up.calls).toHaveLength(50);
  });

  it('takes one script call per request for all of its limits, quota and remaining uses, and shares them under load', async () => {
    const { startPrivateRedis } = await import('../helpers/redis.js');
    const redis = await startPrivateRedis();
    cleanup.push(() => redis.stop(true));
    const up = await upstream();
    const gw = await gateway({
      redis: { url: redis.url, keyPrefix: 'cmd:' },
      // Usage history flushes in a script of its own (an HMGET per hash) every second by default:
      // on a loaded machine one landed between the counts and was taken for a counter call.
      usage: { flushIntervalMs: 60_000 },
      plans: {
        p: {
          quota: { limit: 1_000_000, period: 'month' },
          rateLimits: [{ name: 'plan', by: 'key', limit: 1_000_000, windowSec: 60 }],
        },
      },
      routes: [
        {
          id: 'r',
          path: '/r',
          auth: { methods: ['apiKey'] },
          upstream: { targets: [up.url] },
          rateLimits: [
            { name: 'burst', by: 'ip', limit: 1_000_000, windowSec: 1 },
            { name: 'hourly', by: 'key', limit: 1_000_000, windowSec: 3600 },
          ],
          quota: { cost: 1 },
        },
      ],
    });
    const { key } = await gw.gateway.services.keys.create({ name: 'k', plan: 'p', remaining: 1_000_000 });
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    cleanup.push(() => Promise.resolve(agent.destroy()));
    await request(`${gw.url}/r`, { headers: { 'x-api-key': key }, agent }); // warm: key cache, script load
    const { Redis } = await import('ioredis');
    const admin = new Redis(redis.url);
    cleanup.push(() => Promise.resolve(admin.disconnect()));
    await admin.config('RESETSTAT');
    const n = 100;
    for (let i = 0; i < n; i++)
      expect((await request(`${gw.url}/r`, { headers: { 'x-api-key': key }, agent })).status).toBe(200);
    const stats = await admin.info('commandstats');
    const calls = (cmd: string) => Number(new RegExp(`cmdstat_${cmd}:calls=(\\d+)`).exec(stats)?.[1] ?? 0);
    // Five counters per request (two route limits, the plan's, the quota, remaining uses): one
    // EVALSHA. (commandstats also counts what the script runs inside Redis: one HMGET and one HSET
    // per shared counter hash, an MGET and a SET for the remaining uses.)
    // The audit trail runs no script here: these requests' ids are minted by the gateway, which
    // need no id index (see RedisAuditStore); its flushes are an HSETNX, an HSET and an XADD.
    expect(calls('xadd')).toBeGreaterThan(0);
    expect(calls('evalsha') + calls('eval')).toBe(n);
    expect(calls('hmget')).toBe(4 * n);
    // Key records come from the in-process cache: no lookup per request (the one MGET per call
    // is the remaining uses' counter).
    expect(calls('mget')).toBe(n);
    expect(calls('get')).toBe(0);
    expect(calls('incrby')).toBe(0);
    // Concurrent requests share script calls: each counter is read and written once per call.
    await admin.config('RESETSTAT');
    const many = new http.Agent({ keepAlive: true, maxSockets: 25 });
    cleanup.push(() => Promise.resolve(many.destroy()));
    const replies = await Promise.all(
      Array.from({ length: 200 }, () =>
        request(`${gw.url}/r`, { headers: { 'x-api-key': key }, agent: many }),
      ),
    );
    expect(replies.map((r) => r.status).filter((s) => s !== 200)).toEqual([]);
    const after = await admin.info('commandstats');
    const count = (cmd: string) => Number(new RegExp(`cmdstat_${cmd}:calls=(\\d+)`).exec(after)?.[1] ?? 0);
    const scripts = count('evalsha') + count('eval');
    expect(scripts).toBeGreaterThan(0);
    expect(scripts).toBeLessThan(200);
    // Four shared hashes per call (five when a call straddles the burst limit's one-second windows).
    const hmget = count('hmget');
    expect(hmget).toBeGreaterThanOrEqual(4 * scripts);
    expect(hmget).toBeLessThanOrEqual(5 * scripts);
  });
});

describe.each(stores)('quotas (%s)', (_name, storeConfig) => {
  async function quotaGateway(
    period: 'day' | 'month' | 'lifetime',
    upstreamStatus = 200,
    quotaBy: 'credential' | 'tenant' = 'credential',
  ) {
    const clock = new ManualClock(Date.UTC(2030, 0, 31, 23, 59, 0));
    const up = await upstream(upstreamStatus);
    const gw = await gateway(
      {
        ...storeConfig(),
        plans: { metered: { quota: { limit: 4, period }, quotaBy } },
        routes: [
          {
            id: 'q',
            path: '/q',
            auth: { methods: ['apiKey'] },
            upstream: { targets: [up.url] },
            quota: { cost: 2 },
            upstreamErrors: 'passthrough',
          },
        ],
      },
      clock,
    );
    return { gw, clock, up };
  }

  it('charges the route cost and answers 402 with limit and resets_at; a new day starts over (UTC)', async () => {
    const { gw, clock } = await quotaGateway('day');
    const { key } = await gw.gateway.services.keys.create({ name: 'k', plan: 'metered' });
    const call = () => request(`${gw.url}/q`, { headers: { 'x-api-key': key } });
    expect((await call()).status).toBe(200);
    expect((await call()).status).toBe(200);
    const body = expectProblem(await call(), 'quota-exceeded');
    expect(body.limit).toBe(4);
    expect(body.resets_at).toBe('2030-02-01T00:00:00.000Z');
    clock.advance(60_000); // 2030-02-01T00:00
    expect((await call()).status).toBe(200);
  });

  it("on a mock route, charges the route's own answers only: not the gateway's 400s and 409s, not replays", async () => {
    const gw = await gateway({
      ...storeConfig(),
      admin: { host: '127.0.0.1', port: 0, tokens: ['quota-admin-token-123'] },
      plans: { metered: { quota: { limit: 3, period: 'day' } } },
      routes: [
        {
          id: 'm',
          path: '/m',
          auth: { methods: ['apiKey'] },
          methods: ['POST'],
          mock: { status: 201, body: { ok: true } },
          quota: { cost: 1 },
          idempotency: {},
        },
      ],
    });
    const { key, record } = await gw.gateway.services.keys.create({
      name: 'k',
      plan: 'metered',
      remaining: 10,
    });
    const post = (idem: string, body = '{}') =>
      request(`${gw.url}/m`, {
        method: 'POST',
        body,
        headers: { 'x-api-key': key, 'idempotency-key': idem, 'content-type': 'application/json' },
      });
    for (let i = 0; i < 3; i++) expectProblem(await post('bad key'), 'validation-failed');
    expect((await post('one')).status).toBe(201); // charged: 1
    expect((await post('one')).headers['idempotent-replayed']).toBe('true'); // a replay: free
    expectProblem(await post('one', '{"other":1}'), 'idempotency-conflict'); // free
    expect((await post('two')).status).toBe(201); // 2
    expect((await post('three')).status).toBe(201); // 3
    expectProblem(await post('four'), 'quota-exceeded');
    const view = await request(`${gw.adminUrl}/keys/${record.id}`, {
      headers: { authorization: 'Bearer quota-admin-token-123' },
    });
    expect(view.json().remaining).toBe(7);
  });

  it('months are calendar UTC months; lifetime never resets', async () => {
    const month = await quotaGateway('month');
    const k1 = await month.gw.gateway.services.keys.create({ name: 'm', plan: 'metered' });
    const m = () => request(`${month.gw.url}/q`, { headers: { 'x-api-key': k1.key } });
    await m();
    await m();
    const body = expectProblem(await m(), 'quota-exceeded');
    expect(body.resets_at).toBe('2030-02-01T00:00:00.000Z');
    month.clock.advance(61_000);
    expect((await m()).status).toBe(200);

    const life = await quotaGateway('lifetime');
    const k2 = await life.gw.gateway.services.keys.create({ name: 'l', plan: 'metered' });
    const l = () => request(`${life.gw.url}/q`, { headers: { 'x-api-key': k2.key } });
    await l();
    await l();
    life.clock.advance(400 * 86_400_000);
    const lifeBody = expectProblem(await l(), 'quota-exceeded');
    expect(lifeBody.resets_at).toBeNull();
  });

  it('does not charge when the upstream answers 500', async () => {
    const { gw } = await quotaGateway('day', 500);
    const { key } = await gw.gateway.services.keys.create({ name: 'k', plan: 'metered' });
    for (let i = 0; i < 5; i++)
      expect((await request(`${gw.url}/q`, { headers: { 'x-api-key': key } })).status).toBe(500);
  });

  it('charges a tenant’s quota across its keys with quotaBy: tenant', async () => {
    const { gw } = await quotaGateway('day', 200, 'tenant');
    const keys = gw.gateway.services.keys;
    const a = await keys.create({ name: 'a', plan: 'metered', tenantId: 'acme' });
    const b = await keys.create({ name: 'b', plan: 'metered', tenantId: 'acme' });
    expect((await request(`${gw.url}/q`, { headers: { 'x-api-key': a.key } })).status).toBe(200);
    expect((await request(`${gw.url}/q`, { headers: { 'x-api-key': b.key } })).status).toBe(200);
    expectProblem(await request(`${gw.url}/q`, { headers: { 'x-api-key': a.key } }), 'quota-exceeded');
  });

  it("counts a key's remaining uses down to 402", async () => {
    const up = await upstream();
    const gw = await gateway({
      ...storeConfig(),
      routes: [{ id: 'r', path: '/r', auth: { methods: ['apiKey'] }, upstream: { targets: [up.url] } }],
    });
    const { key } = await gw.gateway.services.keys.create({ name: 'k', remaining: 2 });
    expect((await request(`${gw.url}/r`, { headers: { 'x-api-key': key } })).status).toBe(200);
    expect((await request(`${gw.url}/r`, { headers: { 'x-api-key': key } })).status).toBe(200);
    const body = expectProblem(
      await request(`${gw.url}/r`, { headers: { 'x-api-key': key } }),
      'quota-exceeded',
    );
    expect(body.limit).toBe(2);
    expect(body.resets_at).toBeNull();
  });
});

describe('rate-limit headers and the upstream', () => {
  it("keeps the gateway's RateLimit headers when the upstream sends its own", async () => {
    const up = await startUpstream((_req, res) => {
      res.writeHead(200, { ratelimit: '"up";r=999;t=5', 'ratelimit-policy': '"up";q=1000;w=5' });
      res.end('{}');
    });
    cleanup.push(() => up.close());
    const gw = await gateway({
      routes: [
        {
          id: 'r',
          path: '/r',
          auth: 'none',
          upstream: { targets: [up.url] },
          rateLimits: [{ name: 'burst', by: 'ip', limit: 5, windowSec: 60 }],
        },
        { id: 'open', path: '/open', auth: 'none', upstream: { targets: [up.url] } },
      ],
    });
    const limited = await request(`${gw.url}/r`);
    expect(limited.headers['ratelimit-policy']).toBe('"burst";q=5;w=60');
    expect(parsePolicies(limited.headers.ratelimit)[0]).toMatchObject({ name: 'burst', r: 4 });
    // A route without limits passes the upstream's through untouched.
    expect((await request(`${gw.url}/open`)).headers.ratelimit).toBe('"up";r=999;t=5');
  });
});
