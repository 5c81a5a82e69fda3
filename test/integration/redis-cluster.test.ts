import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import http from 'node:http';
import { startGateway, type RunningGateway } from '../helpers/gateway.js';
import { request, waitFor } from '../helpers/http.js';
import { startUpstream, type Upstream } from '../helpers/upstream.js';
import {
  keyInvalidationChannel,
  startRedisCluster,
  waitForSubscribers,
  type PrivateCluster,
} from '../helpers/redis.js';
import { expectProblem } from '../helpers/problem.js';
import { ManualClock } from '../../src/core/clock.js';

describe('on a real three-node Redis Cluster', () => {
  let cluster: PrivateCluster;
  let up: Upstream;
  let a: RunningGateway;
  let b: RunningGateway;
  const clock = new ManualClock(Date.UTC(2030, 5, 1));
  const agent = new http.Agent({ keepAlive: true, maxSockets: 40 });

  beforeAll(async () => {
    cluster = await startRedisCluster();
    up = await startUpstream((_req, res) => {
      setTimeout(() => res.end('ok'), 20);
    });
    const config = {
      redis: { cluster: cluster.urls, keyPrefix: 'tg:', commandTimeoutMs: 2000 },
      plans: {
        metered: {
          quota: { limit: 5, period: 'day' },
          rateLimits: [{ name: 'per-key', by: 'key', limit: 1000, windowSec: 60 }],
        },
      },
      routes: [
        // A global limit and a per-key limit: counters in different slots, kept all-or-nothing.
        {
          id: 'limited',
          path: '/limited',
          auth: 'none',
          upstream: { targets: [up.url] },
          rateLimits: [
            { name: 'global', by: 'global', limit: 30, windowSec: 60 },
            { name: 'per-ip', by: 'ip', limit: 1000, windowSec: 60 },
          ],
        },
        {
          id: 'metered',
          path: '/metered',
          auth: { methods: ['apiKey'] },
          upstream: { targets: [up.url] },
          quota: { cost: 1 },
        },
        { id: 'pay', path: '/pay', auth: 'none', upstream: { targets: [up.url] }, idempotency: {} },
      ],
    } as any;
    a = await startGateway(config, { clock });
    b = await startGateway(config, { clock });
    await waitFor(() => a.gateway.services.redis!.ready && b.gateway.services.redis!.ready, 10_000);
  }, 60_000);

  afterAll(async () => {
    agent.destroy();
    await a?.close();
    await b?.close();
    await up?.close();
    await cluster?.stop();
  });

  it('rate limits stay exact across two gateways', async () => {
    const results = await Promise.all(
      Array.from({ length: 90 }, (_, i) => request(`${(i % 2 ? a : b).url}/limited`, { agent })),
    );
    expect(results.filter((r) => r.status === 200)).toHaveLength(30);
    expect(results.filter((r) => r.status === 429)).toHaveLength(60);
  });

  it('keys and quotas work across gateways', async () => {
    const { key, record } = await a.gateway.services.keys.create({ name: 'k', plan: 'metered' });
    const statuses = [];
    for (let i = 0; i < 6; i++)
      statuses.push(
        (await request(`${(i % 2 ? a : b).url}/metered`, { headers: { 'x-api-key': key }, agent })).status,
      );
    expect(statuses).toEqual([200, 200, 200, 200, 200, 402]);
    await waitForSubscribers(cluster.urls, keyInvalidationChannel('tg:'), 2);
    await b.gateway.services.keys.revoke(record.id);
    await waitFor(
      async () =>
        (await request(`${a.url}/metered`, { headers: { 'x-api-key': key }, agent })).status === 401,
      3000,
      20,
    );
  });

  it('idempotency reaches the upstream once', async () => {
    const before = up.calls.length;
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        request(`${(i % 2 ? a : b).url}/pay`, {
          method: 'POST',
          body: '{"amount":1}',
          headers: { 'idempotency-key': 'cluster-1' },
          agent,
        }),
      ),
    );
    expect(up.calls.length - before).toBe(1);
    expect(results.filter((r) => r.status === 200)).toHaveLength(1);
    for (const r of results.filter((x) => x.status !== 200))
      expect(expectProblem(r, 'idempotency-conflict').reason).toBe('in-flight');
    await waitFor(
      async () =>
        (
          await request(`${a.url}/pay`, {
            method: 'POST',
            body: '{"amount":1}',
            headers: { 'idempotency-key': 'cluster-1' },
            agent,
          })
        ).headers['idempotent-replayed'] === 'true',
      3000,
    );
  });

  it('keeps the audit trail in the cluster', async () => {
    const res = await request(`${a.url}/nowhere`, { agent });
    const id = String(res.headers['x-request-id']);
    await waitFor(async () => (await b.gateway.services.audit.get(id)) !== undefined, 3000, 50);
  });
});
