import { afterEach, describe, expect, it } from 'vitest';
import http from 'node:http';
import { Redis } from 'ioredis';
import { startGateway } from '../helpers/gateway.js';
import { request, waitFor } from '../helpers/http.js';
import { startUpstream } from '../helpers/upstream.js';
import { startPrivateRedis } from '../helpers/redis.js';
import { expectProblem } from '../helpers/problem.js';
import { createLogger } from '../../src/observability/logger.js';

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

describe('Redis going away under traffic', () => {
  it('rate limits keep serving from memory within the command timeout, quota fails closed, and both recover without a restart', async () => {
    const redis = await startPrivateRedis();
    cleanup.push(() => redis.stop(true));
    const up = await startUpstream();
    cleanup.push(() => up.close());
    const lines: string[] = [];
    const logger = createLogger({
      level: 'info',
      format: 'json',
      destination: { write: (s: string) => void lines.push(s) },
    });
    const gw = await startGateway(
      {
        admin: { host: '127.0.0.1', port: 0, tokens: ['outage-admin-token-123'] },
        redis: { url: redis.url, keyPrefix: 'outage:', commandTimeoutMs: 200 },
        plans: { metered: { quota: { limit: 1_000_000, period: 'month' } } },
        routes: [
          {
            id: 'limited',
            path: '/limited',
            auth: 'none',
            upstream: { targets: [up.url] },
            rateLimits: [{ name: 'burst', by: 'ip', limit: 1_000_000, windowSec: 60 }],
          },
          {
            id: 'metered',
            path: '/metered',
            auth: { methods: ['apiKey'] },
            upstream: { targets: [up.url] },
            quota: { cost: 1 },
          },
        ],
      },
      { logger },
    );
    cleanup.push(() => gw.close());
    const { key } = await gw.gateway.services.keys.create({ name: 'k', plan: 'metered' });
    const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
    cleanup.push(() => Promise.resolve(agent.destroy()));
    const timed = async (path: string, headers: Record<string, string> = {}) => {
      const t0 = performance.now();
      const res = await request(`${gw.url}${path}`, { headers, agent, timeoutMs: 5000 });
      return { res, ms: performance.now() - t0 };
    };

    expect((await timed('/limited')).res.headers.ratelimit).toBeDefined();
    expect((await timed('/metered', { 'x-api-key': key })).res.status).toBe(200);

    // Frozen: the socket stays open, nothing answers.
    redis.freeze();
    // Each is answered while Redis stays frozen, so none waited for it past redis.commandTimeoutMs
    // (the client's 5 s timeout catches a hang). How fast is for the benchmarks: a bound in ms here
    // is load-dependent.
    for (let i = 0; i < 20; i++) expect((await timed('/limited')).res.status).toBe(200);
    const metered = await timed('/metered', { 'x-api-key': key });
    expectProblem(metered.res, 'service-unavailable');
    expect(metered.res.headers['retry-after']).toBe('1');
    const metrics = (await request(`${gw.adminUrl}/metrics`)).text;
    expect(metrics).toMatch(/tollgate_rate_limit_fallback_active 1/);

    redis.thaw();
    await waitFor(
      async () => (await timed('/metered', { 'x-api-key': key })).res.status === 200,
      10_000,
      100,
    );

    // Killed and restarted: the same, and the gateway reconnects by itself.
    await redis.stop(true);
    await waitFor(async () => (await timed('/metered', { 'x-api-key': key })).res.status === 503, 5000, 50);
    expect((await timed('/limited')).res.status).toBe(200);
    await redis.start();
    // The private Redis keeps nothing on disk: the restarted one has no keys, so make a new one.
    await waitFor(() => gw.gateway.services.redis!.ready, 15_000, 100);
    const fresh = await gw.gateway.services.keys.create({ name: 'k2', plan: 'metered' });
    await waitFor(
      async () => (await timed('/metered', { 'x-api-key': fresh.key })).res.status === 200,
      5000,
      100,
    );
    // Counters are in Redis again.
    const admin = new Redis(redis.url);
    cleanup.push(() => Promise.resolve(admin.disconnect()));
    const before = Number(/cmdstat_evalsha:calls=(\d+)/.exec(await admin.info('commandstats'))?.[1] ?? 0);
    await timed('/limited');
    const after = Number(/cmdstat_evalsha:calls=(\d+)/.exec(await admin.info('commandstats'))?.[1] ?? 0);
    expect(after).toBeGreaterThan(before);
    // One log line per outage, not one per request.
    expect(lines.filter((l) => l.includes('redis unavailable')).length).toBeLessThanOrEqual(2);
  });

  it('with redis.onError: open, quota is not enforced while Redis is away', async () => {
    const redis = await startPrivateRedis();
    cleanup.push(() => redis.stop(true));
    const up = await startUpstream();
    cleanup.push(() => up.close());
    const gw = await startGateway({
      redis: { url: redis.url, keyPrefix: 'open:', commandTimeoutMs: 200, onError: 'open' },
      plans: { metered: { quota: { limit: 1, period: 'month' } } },
      routes: [
        {
          id: 'metered',
          path: '/metered',
          auth: { methods: ['apiKey'] },
          upstream: { targets: [up.url] },
          quota: { cost: 1 },
        },
      ],
    });
    cleanup.push(() => gw.close());
    const { key } = await gw.gateway.services.keys.create({ name: 'k', plan: 'metered' });
    expect((await request(`${gw.url}/metered`, { headers: { 'x-api-key': key } })).status).toBe(200);
    await redis.stop(true);
    await waitFor(() => !gw.gateway.services.redis!.ready, 5000);
    expect((await request(`${gw.url}/metered`, { headers: { 'x-api-key': key } })).status).toBe(200);
  });

  it('the admin key and audit API answer 503 problems, within bounded time, while Redis is frozen or dead', async () => {
    const redis = await startPrivateRedis();
    cleanup.push(() => redis.stop(true));
    const TOKEN = 'outage-admin-token-456';
    const gw = await startGateway({
      admin: { host: '127.0.0.1', port: 0, tokens: [TOKEN] },
      redis: { url: redis.url, keyPrefix: 'admin-outage:', commandTimeoutMs: 200, connectTimeoutMs: 500 },
      routes: [{ id: 'demo', path: '/demo', mock: { body: { ok: true } } }],
    });
    cleanup.push(() => gw.close());
    const admin = (method: string, path: string, body?: unknown) =>
      request(`${gw.adminUrl}${path}`, {
        method,
        timeoutMs: 5000,
        headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    const created = await admin('POST', '/keys', { name: 'k' });
    expect(created.status).toBe(201);
    const id = created.json().id as string;

    for (const fault of ['frozen', 'dead'] as const) {
      if (fault === 'frozen') redis.freeze();
      else {
        redis.thaw();
        await redis.stop(true);
      }
      for (const [method, path, body] of [
        ['POST', '/keys', { name: 'k2' }],
        ['GET', '/keys', undefined],
        ['GET', `/keys/${id}`, undefined],
        ['PATCH', `/keys/${id}`, { name: 'renamed' }],
        ['DELETE', `/keys/${id}`, undefined],
        ['GET', '/requests/not-in-this-process', undefined],
      ] as const) {
        // Answered while Redis stays frozen or dead: bounded by the command and connect timeouts
        // (the client's 5 s timeout catches a hang), without a bound in ms that load could break.
        const res = await admin(method, path, body);
        expect({ fault, method, path, status: res.status }).toEqual({ fault, method, path, status: 503 });
        expectProblem(res, 'service-unavailable');
      }
    }
  });
});
