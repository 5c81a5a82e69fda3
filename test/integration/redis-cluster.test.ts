import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import http from 'node:http';
import { startGateway, type RunningGateway } from '../helpers/gateway.js';
import { request, waitFor } from '../helpers/http.js';
import { startUpstream, type Upstream } from '../helpers/upstream.js';
import {
  keyInvalidationChannel,
  redisCli,
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
        spread: {
          quota: { limit: 1000, period: 'month' },
          rateLimits: [{ name: 'spread-key', by: 'key', limit: 3, windowSec: 60 }],
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
        {
          id: 'spread',
          path: '/spread',
          auth: { methods: ['apiKey'] },
          upstream: { targets: [up.url] },
          rateLimits: [{ name: 'hourly', by: 'key', limit: 1000, windowSec: 3600 }],
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

  it('spreads per-request writes over the masters: exact limits from two gateways, no hot slot', async () => {
    // 300 keys, each allowed 3 requests a minute; key records cached on both gateways first (one
    // request each, through each gateway: 2 of the 3), so that only request traffic is counted.
    const keys = await Promise.all(
      Array.from({ length: 300 }, (_, i) =>
        a.gateway.services.keys.create({ name: `s${i}`, plan: 'spread' }),
      ),
    );
    for (const gw of [a, b])
      for (let i = 0; i < keys.length; i += 50)
        await Promise.all(
          keys
            .slice(i, i + 50)
            .map(({ key }) => request(`${gw.url}/spread`, { headers: { 'x-api-key': key }, agent })),
        );
    await a.gateway.services.audit.flush();
    await b.gateway.services.audit.flush();
    const ports = cluster.urls.map((u) => Number(new URL(u).port));
    const commands = async (port: number) => {
      const out = await redisCli(port, ['info', 'commandstats']);
      let n = 0;
      for (const m of out.matchAll(/cmdstat_([\w|]+):calls=(\d+)/g))
        if (!/^(info|config|cluster|ping|command|client|subscribe|publish)/.test(m[1]!)) n += Number(m[2]);
      return n;
    };
    await Promise.all(ports.map((p) => redisCli(p, ['config', 'resetstat'])));
    // Then 3 more requests per key, half through each gateway, all at once: one more is let
    // through per key (3 a minute), exactly, whichever gateway counts it.
    const results = await Promise.all(
      keys.flatMap(({ key }, i) =>
        [0, 1, 2].map((j) =>
          request(`${((i + j) % 2 ? a : b).url}/spread`, { headers: { 'x-api-key': key }, agent }),
        ),
      ),
    );
    expect(results.filter((r) => r.status === 200)).toHaveLength(300);
    expect(results.filter((r) => r.status === 429)).toHaveLength(600);
    await a.gateway.services.audit.flush();
    await b.gateway.services.audit.flush();
    const perMaster = await Promise.all(ports.map(commands));
    const mean = perMaster.reduce((x, y) => x + y, 0) / perMaster.length;
    // Counters, quota and audit records all wrote to every master, and no master took more than
    // 25 % above or below the others' mean.
    for (const n of perMaster) {
      expect(n, `commands per master: ${perMaster.join(', ')}`).toBeGreaterThanOrEqual(0.75 * mean);
      expect(n, `commands per master: ${perMaster.join(', ')}`).toBeLessThanOrEqual(1.25 * mean);
    }
    // Listing still works across the shards: the newest records of one key, from both gateways.
    const listed = await b.gateway.services.audit.list({ credentialId: keys[0]!.record.id, limit: 10 });
    expect(listed).toHaveLength(5);
    expect(listed.filter((r) => r.status === 429)).toHaveLength(2);
  }, 120_000);
});
