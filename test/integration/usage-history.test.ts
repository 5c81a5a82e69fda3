import { randomBytes } from 'node:crypto';
import http, { type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { Webhook } from 'standardwebhooks';
import { startGateway, type RunningGateway } from '../helpers/gateway.js';
import { request, waitFor } from '../helpers/http.js';
import { expectProblem } from '../helpers/problem.js';
import { sharedRedisUrl, startPrivateRedis, startRedisCluster, uniquePrefix } from '../helpers/redis.js';
import { OpenApiValidator } from '../helpers/openapi.js';
import { startUpstream } from '../helpers/upstream.js';
import { validateConfig } from '../../src/config/load.js';
import type { ConfigInput } from '../../src/config/schema.js';
import { ManualClock } from '../../src/core/clock.js';
import { RedisUsageStore } from '../../src/usage/redis-store.js';
import { RedisHandle } from '../../src/shared/redis.js';
import { redisSchema } from '../../src/shared/redis-schema.js';
import { silentLogger } from '../../src/observability/logger.js';

/*
 * SPEC §11 usage history through real sockets: requests by status class, meter sums and refusals
 * per key and tenant, hour and day buckets, on the memory store and on the real Redis across two
 * instances (exact once flushed), the bad inputs of the usage API, and a metered quota's
 * threshold events raised at settlement.
 */

const ADMIN = 'admin-token-usage-0123456789';
const HOUR = 3_600_000;
const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

/** Answers `?s=<status>` (default 200) and reports `?t=<tokens>` in `x-usage-tokens`. */
async function meterUpstream() {
  const up = await startUpstream((req, res: ServerResponse) => {
    const q = new URL(req.url ?? '/', 'http://x').searchParams;
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (q.has('t')) headers['x-usage-tokens'] = q.get('t')!;
    res.writeHead(Number(q.get('s') ?? 200), headers);
    res.end('{}');
  });
  cleanup.push(() => up.close());
  return up;
}

function config(upstreamUrl: string, extra: Partial<ConfigInput> = {}): ConfigInput {
  return {
    admin: { tokens: [ADMIN] },
    plans: {
      // 4 requests per hour; a quota of 6 per day.
      basic: {
        quota: { limit: 6, period: 'day' },
        rateLimits: [{ name: 'hourly', by: 'key', limit: 4, windowSec: 3600 }],
      },
      free: {},
    },
    routes: [
      {
        id: 'ai',
        path: '/ai',
        auth: { methods: ['apiKey'] },
        upstream: { targets: [upstreamUrl] },
        meters: {
          tokens: { responseHeader: 'x-usage-tokens' },
          images: { responseHeader: 'x-usage-images' },
        },
        quota: { cost: 1 },
      },
    ],
    ...extra,
  };
}

async function gateway(cfg: ConfigInput, clock: ManualClock): Promise<RunningGateway> {
  const g = await startGateway(cfg, { clock });
  cleanup.push(() => g.close());
  return g;
}

const admin = (g: RunningGateway, path: string, method = 'GET', body?: unknown) =>
  request(`${g.adminUrl}${path}`, {
    method,
    headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });

const zero = { total: 0, '1xx': 0, '2xx': 0, '3xx': 0, '4xx': 0, '5xx': 0 };

const stores: Array<[string, () => Partial<ConfigInput>]> = [
  ['memory', () => ({})],
  ['redis', () => ({ redis: { url: sharedRedisUrl, keyPrefix: uniquePrefix('usage-history') } })],
];

describe.each(stores)('usage history (%s)', (_name, store) => {
  it('counts requests by status class, meters and refusals per key and tenant, by hour and by day', async () => {
    const up = await meterUpstream();
    const clock = new ManualClock(Date.UTC(2030, 2, 10, 9, 15));
    const g = await gateway(config(up.url, store()), clock);
    const openapi = new OpenApiValidator((await admin(g, '/openapi.json')).json());
    const key = (await admin(g, '/keys', 'POST', { name: 'k', plan: 'basic', tenantId: 'acme' })).json();
    const other = (await admin(g, '/keys', 'POST', { name: 'o', tenantId: 'acme' })).json();
    const call = (k: { key: string }, q: string) =>
      request(`${g.url}/ai?${q}`, { headers: { 'x-api-key': k.key } });
    // 09:xx: 200 (10 tokens), 200 (20), 404, 500 — then a 429 (the hourly limit of 4 is used up).
    expect((await call(key, 't=10')).status).toBe(200);
    expect((await call(key, 't=20')).status).toBe(200);
    expect((await call(key, 's=404&t=5')).status).toBe(404);
    // A 5xx is refunded to the quota, counted here all the same.
    expect((await call(key, 's=500')).status).toBe(500);
    expectProblem(await call(key, 't=99'), 'rate-limit-exceeded');
    // The other key of the tenant: no plan, no limits.
    expect((await call(other, 't=1')).status).toBe(200);
    // 11:xx: two more, then the day's quota of 6 is used up (3 kept at 09:xx + 2 + … refused).
    clock.advance(2 * HOUR);
    expect((await call(key, 't=100')).status).toBe(200);
    expect((await call(key, 't=1')).status).toBe(200);
    expect((await call(key, 't=1')).status).toBe(200);
    expectProblem(await call(key, ''), 'quota-exceeded');

    const from = '2030-03-10T09:00:00Z';
    const to = '2030-03-10T12:00:00Z';
    const hourly = await admin(g, `/keys/${key.id}/usage?from=${from}&to=${to}`);
    expect(hourly.status).toBe(200);
    openapi.check('GET', `/keys/${key.id}/usage`, hourly);
    const h = hourly.json();
    expect(h).toMatchObject({
      kind: 'key',
      id: key.id,
      granularity: 'hour',
      from: '2030-03-10T09:00:00.000Z',
      to: '2030-03-10T12:00:00.000Z',
      retentionDays: 35,
    });
    expect(h.buckets.map((b: any) => b.start)).toEqual([
      '2030-03-10T09:00:00.000Z',
      '2030-03-10T10:00:00.000Z',
      '2030-03-10T11:00:00.000Z',
    ]);
    expect(h.buckets[0]).toEqual({
      start: '2030-03-10T09:00:00.000Z',
      requests: { total: 5, '1xx': 0, '2xx': 2, '3xx': 0, '4xx': 2, '5xx': 1 },
      meters: { tokens: 35 },
      refusals: { rateLimit: 1, quota: 0 },
    });
    expect(h.buckets[1]).toEqual({
      start: '2030-03-10T10:00:00.000Z',
      requests: zero,
      meters: {},
      refusals: { rateLimit: 0, quota: 0 },
    });
    expect(h.buckets[2]).toEqual({
      start: '2030-03-10T11:00:00.000Z',
      requests: { total: 4, '1xx': 0, '2xx': 3, '3xx': 0, '4xx': 1, '5xx': 0 },
      meters: { tokens: 102 },
      refusals: { rateLimit: 0, quota: 1 },
    });
    expect(h.totals).toEqual({
      requests: { total: 9, '1xx': 0, '2xx': 5, '3xx': 0, '4xx': 3, '5xx': 1 },
      meters: { tokens: 137 },
      refusals: { rateLimit: 1, quota: 1 },
    });

    // A day is the sum of its hours.
    const daily = await admin(g, `/keys/${key.id}/usage?from=2030-03-09&to=2030-03-11&granularity=day`);
    openapi.check('GET', `/keys/${key.id}/usage`, daily);
    const d = daily.json();
    expect(d.buckets.map((b: any) => b.start)).toEqual([
      '2030-03-09T00:00:00.000Z',
      '2030-03-10T00:00:00.000Z',
    ]);
    expect(d.buckets[0].requests).toEqual(zero);
    const { start: _start, ...day } = d.buckets[1];
    expect(day).toEqual(h.totals);
    expect(d.totals).toEqual(h.totals);

    // The tenant: both of its keys.
    const tenant = await admin(g, `/tenants/acme/usage?from=${from}&to=${to}`);
    openapi.check('GET', '/tenants/acme/usage', tenant);
    expect(tenant.json()).toMatchObject({ kind: 'tenant', id: 'acme' });
    expect(tenant.json().totals).toEqual({
      requests: { total: 10, '1xx': 0, '2xx': 6, '3xx': 0, '4xx': 3, '5xx': 1 },
      meters: { tokens: 138 },
      refusals: { rateLimit: 1, quota: 1 },
    });
    // Default range: the last 24 hours, by hour (a partly passed hour included).
    const recent = (await admin(g, `/keys/${other.id}/usage`)).json();
    expect(recent.buckets).toHaveLength(25);
    expect(recent.totals.requests['2xx']).toBe(1);
    expect(recent.totals.meters).toEqual({ tokens: 1 });
  });
});

describe('usage history across two instances (Redis)', () => {
  it('is exact once both flushed; writes are batched (one script call per flush) with the expiry set once per day hash', async () => {
    const redis = await startPrivateRedis();
    cleanup.push(() => redis.stop());
    const up = await meterUpstream();
    const clock = new ManualClock(Date.UTC(2030, 4, 1, 13, 30));
    // A flush interval longer than the test: only the explicit flushes write.
    const cfg = config(up.url, {
      redis: { url: redis.url, keyPrefix: 'tg:' },
      usage: { flushIntervalMs: 60_000 },
    });
    const a = await gateway(cfg, clock);
    const b = await gateway(cfg, clock);
    const key = (await admin(a, '/keys', 'POST', { name: 'shared', tenantId: 'globex' })).json();
    const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
    cleanup.push(() => Promise.resolve(agent.destroy()));
    const { Redis } = await import('ioredis');
    const direct = new Redis(redis.url);
    cleanup.push(() => Promise.resolve(direct.disconnect()));
    // Warm both (key cache, scripts), then count from zero.
    await request(`${a.url}/ai`, { headers: { 'x-api-key': key.key }, agent });
    await request(`${b.url}/ai`, { headers: { 'x-api-key': key.key }, agent });
    const storeOf = (g: RunningGateway) => g.gateway.services.usage.store as RedisUsageStore;
    await Promise.all([storeOf(a).flush(), storeOf(b).flush()]);
    await direct.config('RESETSTAT');
    const sentBefore = storeOf(a).commands + storeOf(b).commands;
    const usageNow = async () => {
      const keys = (await direct.keys('tg:usage:*')).sort();
      return Promise.all(keys.map(async (k) => [k, await direct.hgetall(k)]));
    };
    const usageBefore = await usageNow();
    const n = 200;
    const replies = await Promise.all(
      Array.from({ length: n }, (_, i) =>
        request(`${(i % 2 ? a : b).url}/ai?t=${i % 5}${i % 10 === 0 ? '&s=503' : ''}`, {
          headers: { 'x-api-key': key.key },
          agent,
        }),
      ),
    );
    expect(replies.filter((r) => r.status === 503)).toHaveLength(20);
    // Pending until flushed: nothing written on the request path.
    const calls = async (cmd: string) =>
      Number(new RegExp(`cmdstat_${cmd}:calls=(\\d+)`).exec(await direct.info('commandstats'))?.[1] ?? 0);
    // (Not by commandstats: the audit flush, every 100 ms, counts its bytes with HINCRBY.)
    expect(await usageNow()).toEqual(usageBefore);
    expect(storeOf(a).pending + storeOf(b).pending).toBeGreaterThan(0);
    expect(storeOf(a).commands + storeOf(b).commands).toBe(sentBefore);
    // Meter settlements and audit records (scripts of their own) written first, then only the
    // usage flush counted.
    await Promise.all(
      [a, b].flatMap((g) => [g.gateway.services.counters.flush(), g.gateway.services.audit.flush()]),
    );
    await direct.config('RESETSTAT');
    await Promise.all([storeOf(a).flush(), storeOf(b).flush()]);
    // Per instance one script call; inside it per shard hash (the key's and the tenant's, the
    // same one or two) one HMGET and one HSET, whatever fields changed. The PEXPIREs went with the
    // warm-up's flush (when the hash was made): 6 or 10 commands for 200 requests.
    const day = Math.floor(clock.now() / 86_400_000);
    const hashes = new Set([storeOf(a).dayKey('k', key.id, day), storeOf(a).dayKey('t', 'globex', day)]);
    expect(await calls('evalsha')).toBe(2);
    expect(await calls('hmget')).toBe(2 * hashes.size);
    expect(await calls('hset')).toBe(2 * hashes.size);
    expect(await calls('pexpire')).toBe(0);
    expect(await calls('hincrby')).toBe(0);
    expect(await calls('multi')).toBe(0);
    expect(storeOf(a).commands + storeOf(b).commands - sentBefore).toBe(2 * (1 + 2 * hashes.size));
    // The keys: shard hashes of the day, shared by subjects, tagged by the shard.
    const keys = (await direct.keys('tg:usage:*')).sort();
    expect(keys).toEqual([...hashes].sort());
    for (const k of keys) expect(k).toMatch(new RegExp(`^tg:usage:\\{u\\d+-\\d+\\}:${day}$`));
    const ttl = await direct.pttl(keys[0]!);
    expect(ttl).toBeGreaterThan(35 * 86_400_000);
    expect(ttl).toBeLessThanOrEqual(36 * 86_400_000);

    const tokens = Array.from({ length: n }, (_, i) => (i % 10 === 0 ? 0 : i % 5)).reduce((x, y) => x + y, 0);
    for (const g of [a, b]) {
      const u = (
        await admin(g, `/keys/${key.id}/usage?from=2030-05-01T13:00:00Z&to=2030-05-01T14:00:00Z`)
      ).json();
      expect(u.buckets).toHaveLength(1);
      expect(u.totals.requests).toEqual({
        total: n + 2,
        '1xx': 0,
        '2xx': n - 20 + 2,
        '3xx': 0,
        '4xx': 0,
        '5xx': 20,
      });
      expect(u.totals.meters).toEqual({ tokens });
      const t = (
        await admin(g, `/tenants/globex/usage?from=2030-05-01T13:00:00Z&to=2030-05-01T14:00:00Z`)
      ).json();
      expect(t.totals).toEqual(u.totals);
    }
  });

  it('writes on its own within the flush interval, and what is pending is written at shutdown', async () => {
    const up = await meterUpstream();
    const clock = new ManualClock(Date.now());
    const redis = { url: sharedRedisUrl, keyPrefix: uniquePrefix('usage-flush') };
    const a = await startGateway(config(up.url, { redis, usage: { flushIntervalMs: 50 } }), { clock });
    let aOpen = true;
    cleanup.push(() => (aOpen ? a.close() : Promise.resolve()));
    const b = await gateway(config(up.url, { redis, usage: { flushIntervalMs: 60_000 } }), clock);
    const key = (await admin(b, '/keys', 'POST', { name: 'k' })).json();
    const since = new Date(clock.now() - HOUR).toISOString();
    const total = async () =>
      (await admin(b, `/keys/${key.id}/usage?from=${since}`)).json().totals.requests.total as number;
    for (let i = 0; i < 3; i++)
      expect((await request(`${a.url}/ai`, { headers: { 'x-api-key': key.key } })).status).toBe(200);
    // b reads what a wrote on its own timer (bounded wait).
    let seen = 0;
    await waitFor(
      async () => (seen = await total()) === 3,
      5000,
      20,
      () => `seen ${seen}`,
    );
    // a's flush interval is now long: what it counts is pending until it closes.
    a.gateway.reload(config(up.url, { redis, usage: { flushIntervalMs: 60_000 } }));
    await new Promise((r) => setTimeout(r, 120)); // let a timer armed under the old interval pass
    for (let i = 0; i < 2; i++)
      expect((await request(`${a.url}/ai`, { headers: { 'x-api-key': key.key } })).status).toBe(200);
    aOpen = false;
    await a.close();
    expect(await total()).toBe(5);
  });
});

describe('usage API bad input', () => {
  it('400 validation-failed naming the parameter; 404 for an unknown key or tenant', async () => {
    const up = await meterUpstream();
    const clock = new ManualClock(Date.UTC(2030, 6, 15, 12, 0));
    const g = await gateway(config(up.url, { usage: { retentionDays: 40 } }), clock);
    const openapi = new OpenApiValidator((await admin(g, '/openapi.json')).json());
    const key = (await admin(g, '/keys', 'POST', { name: 'k', tenantId: 'initech' })).json();
    const bad: Array<[string, string]> = [
      ['from=yesterday', '/query/from'],
      ['from=2030-07-15T25:00:00Z', '/query/from'],
      ['from=2030-02-30', '/query/from'],
      ['from=1752000000000', '/query/from'],
      ['to=2030-07-15T10:00', '/query/to'],
      [`to=${'9'.repeat(100)}`, '/query/to'],
      ['granularity=week', '/query/granularity'],
      ['granularity=', '/query/granularity'],
      ['from=2030-07-15T10:00:00Z&from=2030-07-15T11:00:00Z', '/query/from'],
      ['from=2030-07-15T11:00:00Z&to=2030-07-15T10:00:00Z', '/query/from'],
      // Retention: 40 days back from 2030-07-15T12:00Z.
      ['from=2030-06-05T11:59:59Z', '/query/from'],
      ['from=1970-01-01T00:00:00Z&to=2030-07-15T10:00:00Z', '/query/from'],
      ['to=2030-07-16T12:00:01Z', '/query/to'],
      ['to=9999-12-31T00:00:00Z', '/query/to'],
      ['limit=5', '/query/limit'],
      ['__proto__=x', '/query/__proto__'],
    ];
    for (const [query, pointer] of bad)
      for (const path of [`/keys/${key.id}/usage`, '/tenants/initech/usage']) {
        const res = await admin(g, `${path}?${query}`);
        const problem = expectProblem(res, 'validation-failed');
        expect(
          problem.errors.map((e: any) => e.pointer),
          `${path}?${query}`,
        ).toContain(pointer);
        openapi.check('GET', path, res);
      }
    // Just inside the retention, and a day ahead, are fine; so is the default range of a
    // retention shorter than it.
    const short = await gateway(config(up.url, { usage: { retentionDays: 7 } }), clock);
    const shortKey = (await admin(short, '/keys', 'POST', { name: 's' })).json();
    const shortDays = await admin(short, `/keys/${shortKey.id}/usage?granularity=day`);
    expect(shortDays.status).toBe(200);
    expect(shortDays.json().from).toBe('2030-07-08T00:00:00.000Z');
    // Just inside the retention, and a day ahead, are fine.
    expect((await admin(g, `/keys/${key.id}/usage?from=2030-06-05T12:00:00Z`)).status).toBe(200);
    const ahead = await admin(g, `/keys/${key.id}/usage?from=2030-07-15&to=2030-07-16T12:00:00Z`);
    expect(ahead.status).toBe(200);
    expect(ahead.json().buckets).toHaveLength(36);

    for (const path of ['/keys/key_nope/usage', '/tenants/nobody/usage', `/keys/${'x'.repeat(300)}/usage`]) {
      const res = await admin(g, path);
      expectProblem(res, 'not-found');
      openapi.check('GET', '/keys/{id}/usage', res);
    }
    const longTenant = await admin(g, `/tenants/${'t'.repeat(201)}/usage`);
    expect(expectProblem(longTenant, 'validation-failed').errors[0].pointer).toBe('/path/id');
    // A tenant known by its key, with no usage yet: all zeros, not 404.
    const empty = await admin(g, '/tenants/initech/usage');
    expect(empty.status).toBe(200);
    expect(empty.json().totals.requests.total).toBe(0);
    // Without a token: 401, as every admin call.
    expect((await request(`${g.adminUrl}/keys/${key.id}/usage`)).status).toBe(401);
  });

  it('validates usage.retentionDays and usage.flushIntervalMs', () => {
    const paths = (usage: unknown) => {
      const r = validateConfig({ usage }, {});
      return r.ok ? [] : r.issues.map((i) => i.path);
    };
    expect(paths({})).toEqual([]);
    expect(paths({ retentionDays: 90, flushIntervalMs: 250 })).toEqual([]);
    expect(paths({ retentionDays: 0 })).toEqual(['usage.retentionDays']);
    expect(paths({ retentionDays: 401 })).toEqual(['usage.retentionDays']);
    expect(paths({ retentionDays: 3.5 })).toEqual(['usage.retentionDays']);
    expect(paths({ retentionDays: 'many' })).toEqual(['usage.retentionDays']);
    expect(paths({ flushIntervalMs: 10 })).toEqual(['usage.flushIntervalMs']);
    expect(paths({ flushIntervalMs: 600_000 })).toEqual(['usage.flushIntervalMs']);
    expect(paths({ keep: true })).toEqual(['usage.keep']);
    const ok = validateConfig({}, {});
    expect(ok.ok && ok.config.usage).toEqual({ retentionDays: 35, flushIntervalMs: 1000 });
  });
});

/** A receiver verifying every delivery with the standardwebhooks package. */
async function startReceiver(secret: string) {
  const verifier = new Webhook(secret);
  const received: Array<{ type: string; data: Record<string, any> }> = [];
  const sockets = new Set<Socket>();
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      received.push(
        verifier.verify(Buffer.concat(chunks).toString('utf8'), req.headers as Record<string, string>) as any,
      );
      res.end('ok');
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanup.push(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  );
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks`, received };
}

describe.each(stores)('metered quota events at settlement (%s)', (name, store) => {
  it('quota.threshold and quota.exhausted once per key, period and threshold', async () => {
    const secret = `whsec_${randomBytes(32).toString('base64')}`;
    const rx = await startReceiver(secret);
    const up = await meterUpstream();
    const clock = new ManualClock(Date.now());
    const cfg = config(up.url, {
      ...store(),
      plans: { tokens: { quota: { limit: 100, period: 'month', meter: 'tokens' } } },
      webhooks: [
        {
          url: rx.url,
          secret,
          events: ['quota.threshold', 'quota.exhausted'],
          thresholds: [0.5, 0.8, 1],
          retry: { initialDelayMs: 20, maxDelayMs: 100 },
        },
      ],
    });
    const fast = { clock, webhooks: { pollMs: 20 } };
    const a = await startGateway(cfg, fast);
    cleanup.push(() => a.close());
    // On Redis a second instance shares the counter: the events are still raised once.
    const b = name === 'redis' ? await startGateway(cfg, fast) : a;
    if (b !== a) cleanup.push(() => b.close());
    const key = (await admin(a, '/keys', 'POST', { name: 'm', plan: 'tokens' })).json();
    const call = (g: RunningGateway, t: number) =>
      request(`${g.url}/ai?t=${t}`, { headers: { 'x-api-key': key.key } });
    const settle = () => Promise.all([a, b].map((g) => g.gateway.services.counters.flush()));
    // 30 + 30 (crosses 0.5), then two of 15 at once on both instances (one crosses 0.8 at 75 or 90).
    expect((await call(a, 30)).status).toBe(200);
    await settle();
    expect((await call(b, 30)).status).toBe(200);
    await settle();
    const both = await Promise.all([call(a, 15), call(b, 15)]);
    expect(both.map((r) => r.status)).toEqual([200, 200]);
    await settle();
    expect((await call(a, 20)).status).toBe(200); // 110: crosses 1 (exhausted)
    await settle();
    expectProblem(await call(b, 1), 'quota-exceeded'); // at the limit: refused, no second event
    await waitFor(() => rx.received.length >= 4, 5000);
    await Promise.all([a, b].map((g) => g.gateway.services.webhooks.tick()));
    const events = rx.received.map((e) => `${e.type}:${e.data.threshold ?? ''}`).sort();
    expect(events).toEqual([
      'quota.exhausted:',
      'quota.threshold:0.5',
      'quota.threshold:0.8',
      'quota.threshold:1',
    ]);
    const half = rx.received.find((e) => e.data.threshold === 0.5)!.data;
    expect(half).toMatchObject({ keyId: key.id, limit: 100, used: 60, period: 'month' });
    expect(rx.received.find((e) => e.type === 'quota.exhausted')!.data).toMatchObject({ used: 110 });
  });
});

describe('usage on Redis while Redis is away', () => {
  it('keeps pending buckets through a failed flush and writes them once Redis is back', async () => {
    const redis = await startPrivateRedis();
    cleanup.push(() => redis.stop());
    const handle = new RedisHandle(redisSchema.parse({ url: redis.url, keyPrefix: 'tg:' }), silentLogger());
    cleanup.push(() => handle.close());
    await handle.whenReady(5000);
    const now = Date.UTC(2030, 8, 1, 8, 0);
    const errors: unknown[] = [];
    const store = new RedisUsageStore({
      redis: handle,
      retentionDays: () => 35,
      now: () => now,
      flushIntervalMs: () => 60_000,
      onError: (err) => errors.push(err),
    });
    const hour = Math.floor(now / HOUR);
    store.bucket('k', 'key_a', hour)!.status[2]! += 3;
    await redis.stop();
    await waitFor(() => !handle.ready, 5000);
    await store.flush();
    expect(errors.length).toBeGreaterThan(0);
    expect(store.stats()).toEqual({ pending: 1, dropped: 0 });
    // Counted meanwhile into the same pending bucket.
    store.bucket('k', 'key_a', hour)!.rateLimit += 1;
    await redis.start();
    await handle.whenReady(10_000);
    await store.flush();
    expect(store.stats().pending).toBe(0);
    const read = await store.read('k', 'key_a', hour, hour + 1);
    expect(read.get(hour)).toMatchObject({ status: [0, 0, 3, 0, 0, 0], rateLimit: 1, quota: 0 });
    await store.close();
  });
});

describe('usage on a real three-node Redis Cluster', () => {
  it('spreads subjects over shard slots, keeps one subject in one, is exact after a flush, and reads the layout before', async () => {
    const cluster = await startRedisCluster();
    cleanup.push(() => cluster.stop());
    const up = await meterUpstream();
    const clock = new ManualClock(Date.UTC(2030, 9, 1, 16, 5));
    const g = await gateway(
      config(up.url, {
        redis: { cluster: cluster.urls, keyPrefix: 'tg:', commandTimeoutMs: 2000 },
        usage: { flushIntervalMs: 60_000 },
      }),
      clock,
    );
    await waitFor(() => g.gateway.services.redis!.ready, 10_000);
    const keys = [];
    for (let i = 0; i < 12; i++)
      keys.push((await admin(g, '/keys', 'POST', { name: `c${i}`, tenantId: `tenant-${i % 3}` })).json());
    await Promise.all(
      keys.flatMap((k, i) =>
        Array.from({ length: i + 1 }, () => request(`${g.url}/ai?t=2`, { headers: { 'x-api-key': k.key } })),
      ),
    );
    await g.gateway.services.usage.store.flush();
    const { Redis, Cluster } = await import('ioredis');
    const node = new Redis(cluster.urls[0]!);
    cleanup.push(() => Promise.resolve(node.disconnect()));
    const day = Math.floor(clock.now() / 86_400_000);
    const store = g.gateway.services.usage.store as RedisUsageStore;
    // A day the layout before wrote for key 0 (its own hash, tagged by the subject: another slot).
    const old = new Cluster(
      cluster.urls.map((u) => ({ host: '127.0.0.1', port: Number(new URL(u).port) })),
      {
        keyPrefix: 'tg:',
      },
    );
    cleanup.push(() => Promise.resolve(old.disconnect()));
    await old.hset(`usage:{k:${keys[0].id}}:${day}`, { '16:2xx': 5, '16:m:tokens': 1 });
    const slots = new Set<number>();
    for (const [i, k] of keys.entries()) {
      const dayKey = store.dayKey('k', k.id, day);
      expect(dayKey).toMatch(/^tg:usage:\{u\d+-\d+\}:/);
      expect(await old.exists(dayKey.slice(3))).toBe(1);
      slots.add(Number(await node.cluster('KEYSLOT', dayKey)));
      // One subject's days share its slot.
      expect(await node.cluster('KEYSLOT', store.dayKey('k', k.id, day + 1))).toBe(
        await node.cluster('KEYSLOT', dayKey),
      );
      const u = (
        await admin(g, `/keys/${k.id}/usage?from=2030-10-01T16:00:00Z&to=2030-10-01T17:00:00Z`)
      ).json();
      expect(u.totals.requests['2xx']).toBe(i + 1 + (i === 0 ? 5 : 0));
      expect(u.totals.meters).toEqual({ tokens: 2 * (i + 1) + (i === 0 ? 1 : 0) });
    }
    expect(slots.size).toBeGreaterThan(1);
    const t0 = (await admin(g, '/tenants/tenant-0/usage?from=2030-10-01T16:00:00Z')).json();
    // tenant-0: keys 0, 3, 6, 9 with 1 + 4 + 7 + 10 requests.
    expect(t0.totals.requests['2xx']).toBe(22);
  });
});
