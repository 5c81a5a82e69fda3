import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import http from 'node:http';
import { startGateway, type RunningGateway } from '../helpers/gateway.js';
import { request, waitFor, type Reply } from '../helpers/http.js';
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
  let gated: Upstream;
  let a: RunningGateway;
  let b: RunningGateway;
  const clock = new ManualClock(Date.UTC(2030, 5, 1));
  const agent = new http.Agent({ keepAlive: true, maxSockets: 40 });
  // The concurrency route's upstream holds every request until the test lets the waiting ones go
  // (`release()`), and counts what is in it per subject (`?s=`, max kept): a request leaves the
  // count before its answer is sent, so the count never exceeds the slots held.
  const held: Array<() => void> = [];
  const inUpstream = new Map<string, number>();
  const mostInUpstream = new Map<string, number>();
  const release = () => {
    for (const answer of held.splice(0)) answer();
  };

  beforeAll(async () => {
    cluster = await startRedisCluster();
    up = await startUpstream((_req, res) => {
      setTimeout(() => res.end('ok'), 20);
    });
    gated = await startUpstream((req, res) => {
      const s = new URL(req.url ?? '/', 'http://upstream').searchParams.get('s') ?? '';
      const n = (inUpstream.get(s) ?? 0) + 1;
      inUpstream.set(s, n);
      mostInUpstream.set(s, Math.max(mostInUpstream.get(s) ?? 0, n));
      held.push(() => {
        inUpstream.set(s, inUpstream.get(s)! - 1);
        res.end('ok');
      });
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
        // At most 3 requests in flight per API key, across both gateways; slots renewed every 1.33 s.
        {
          id: 'concurrent',
          path: '/concurrent',
          auth: { methods: ['apiKey'] },
          upstream: { targets: [gated.url], timeoutMs: 20_000 },
          concurrency: { limit: 3, by: 'key', leaseSec: 4 },
        },
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
    release();
    await up?.close();
    await gated?.close();
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

  it('concurrency limits stay exact across two gateways, per key, with keys on every master', async () => {
    const limit = 3; // the route's
    const perKey = 20;
    // Two keys per master: each key's slot set (`{key:<id>}` its hash tag) lives on the master
    // serving its slot, so each gateway batches several hash tags at once, on different masters.
    const ports = cluster.urls.map((u) => Number(new URL(u).port));
    const ranges = (await redisCli(ports[0]!, ['cluster', 'nodes']))
      .trim()
      .split('\n')
      .map((line) => line.split(' '))
      .filter((f) => f[2]!.includes('master'))
      .flatMap((f) =>
        f.slice(8).map((r) => {
          const [lo, hi = lo] = r.split('-').map(Number);
          return { port: Number(f[1]!.split('@')[0]!.split(':')[1]), lo: lo!, hi: hi! };
        }),
      );
    const masterOf = async (key: string) => {
      const slot = Number((await redisCli(ports[0]!, ['cluster', 'keyslot', key])).trim());
      return ranges.find((r) => r.lo <= slot && slot <= r.hi)!.port;
    };
    const onMaster = new Map(ports.map((p) => [p, 0]));
    const keys: Array<{ key: string; slots: string }> = [];
    for (let i = 0; i < 200 && keys.length < 2 * ports.length; i++) {
      const { key, record } = await a.gateway.services.keys.create({ name: `cc${i}` });
      const slots = `tg:cc:{key:${record.id}}:route:concurrent:key`;
      const port = await masterOf(slots);
      if (onMaster.get(port)! >= 2) continue;
      onMaster.set(port, onMaster.get(port)! + 1);
      keys.push({ key, slots });
    }
    expect([...onMaster.values()]).toEqual([2, 2, 2]);
    const redis = a.gateway.services.redis!.client;
    const slotsHeld = () => Promise.all(keys.map(({ slots }) => redis.zcard(slots)));

    // `count` requests per key at once, alternating between the gateways; resolves when each is
    // answered or held in the upstream (bounded), with the answers so far per key.
    const burst = async (count: number) => {
      mostInUpstream.clear();
      const answered = keys.map((): Reply[] => []);
      const all = Promise.allSettled(
        Array.from({ length: count }, (_, r) =>
          keys.map(({ key }, i) =>
            request(`${((r + i) % 2 ? a : b).url}/concurrent?s=${i}`, {
              headers: { 'x-api-key': key },
              timeoutMs: 20_000,
            }).then((res) => {
              answered[i]!.push(res);
              return res;
            }),
          ),
        ).flat(),
      );
      const total = count * keys.length;
      await waitFor(
        () => answered.reduce((n, list) => n + list.length, 0) + held.length === total,
        15_000,
        20,
        () =>
          `answered per key: ${answered.map((l) => l.length).join(', ')}; in upstream: ${JSON.stringify([...inUpstream])}`,
      );
      return { answered, all };
    };
    const finish = async (all: Promise<Array<PromiseSettledResult<Reply>>>) => {
      release();
      const settled = await all;
      expect(settled.filter((x) => x.status === 'rejected')).toEqual([]);
      return settled.map((x) => (x as PromiseFulfilledResult<Reply>).value);
    };

    // 1. 120 requests, 20 per key: 3 per key in the upstream at once (never more), the other 17
    // refused with the documented 429, and the 3 admitted complete when let go.
    const first = await burst(perKey);
    for (const [i, list] of first.answered.entries()) {
      expect(inUpstream.get(String(i)), `key ${i}`).toBe(limit);
      expect(mostInUpstream.get(String(i)), `key ${i}`).toBe(limit);
      expect(list, `key ${i}`).toHaveLength(perKey - limit);
      for (const res of list) {
        expect(expectProblem(res, 'rate-limit-exceeded').policy).toBe('concurrency');
        expect(res.headers['retry-after']).toBe('1');
      }
    }
    expect(await slotsHeld()).toEqual(keys.map(() => limit));
    // While held, the slots are renewed (every leaseSec/3, in the same per-tag batches): each
    // member's lease end moves on, and no slot is lost or added (bounded wait).
    const leases = async () =>
      (await Promise.all(keys.map(({ slots }) => redis.zrange(slots, '0', '-1', 'WITHSCORES')))).map(
        (flat) => new Map(flat.flatMap((v, j) => (j % 2 ? [] : [[v, Number(flat[j + 1])] as const]))),
      );
    const granted = await leases();
    await waitFor(
      async () =>
        (await leases()).every(
          (now, i) =>
            now.size === limit && [...granted[i]!].every(([id, end]) => (now.get(id) ?? -Infinity) > end),
        ),
      10_000,
      50,
    );
    expect(await slotsHeld()).toEqual(keys.map(() => limit));
    const firstReplies = await finish(first.all);
    expect(firstReplies.filter((r) => r.status === 200)).toHaveLength(limit * keys.length);
    expect(firstReplies.filter((r) => r.status === 429)).toHaveLength((perKey - limit) * keys.length);
    for (const [i] of keys.entries()) expect(inUpstream.get(String(i))).toBe(0);

    // 2. Every release reaches Redis (each key's set empties, bounded wait); then 3 new requests
    // per key, from both gateways, are all admitted and held at once.
    await waitFor(async () => (await slotsHeld()).every((n) => n === 0), 5000, 20);
    const second = await burst(limit);
    expect(second.answered.map((l) => l.length)).toEqual(keys.map(() => 0));
    for (const [i] of keys.entries()) expect(inUpstream.get(String(i)), `key ${i}`).toBe(limit);
    const secondReplies = await finish(second.all);
    expect(secondReplies.map((r) => r.status)).toEqual(secondReplies.map(() => 200));
    await waitFor(async () => (await slotsHeld()).every((n) => n === 0), 5000, 20);
  }, 60_000);
});
