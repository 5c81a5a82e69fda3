import { afterEach, describe, expect, it } from 'vitest';
import { Cluster, Redis } from 'ioredis';
import { startGateway, type RunningGateway } from '../helpers/gateway.js';
import { request, waitFor } from '../helpers/http.js';
import { expectProblem } from '../helpers/problem.js';
import { sharedRedisUrl, startPrivateRedis, startRedisCluster, uniquePrefix } from '../helpers/redis.js';
import { deleteRedisKeys } from '../helpers/redis-cleanup.js';
import { quotaCounter } from '../../src/policies/quota/quota.js';
import { rateCounter } from '../../src/policies/rate-limit/rate-limit.js';
import { rateLimitSchema } from '../../src/policies/rate-limit/schema.js';
import { COUNTER_SHARDS, RedisCounters, type CounterSpec } from '../../src/policies/rate-limit/counters.js';
import { CounterLayoutMigration } from '../../src/policies/rate-limit/layout-migration.js';
import { createRedis } from '../../src/shared/redis.js';
import { silentLogger } from '../../src/observability/logger.js';
import { shardTags } from '../../src/shared/shards.js';
import type { GatewayOptions } from '../../src/gateway/create-gateway.js';

/*
 * The counter layout migration (src/policies/rate-limit/layout-migration.ts): a gateway started on
 * a Redis that an older build wrote to — one plain string per fixed window and day/month quota,
 * `<prefix><spec.key>`, made by INCRBY with a PX expiry — continues those counts in the shared hashes.
 */

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

const MONTHLY = { limit: 10, period: 'month' as const };
const HOURLY = { name: 'per-key', by: 'key' as const, limit: 5, windowSec: 3600 };

function config(redis: Record<string, unknown>) {
  return {
    redis: { commandTimeoutMs: 2000, ...redis },
    plans: {
      monthly: { quota: MONTHLY },
      hourly: { rateLimits: [HOURLY] },
      forever: { quota: { limit: 100, period: 'lifetime' as const } },
    },
    routes: [
      {
        id: 'api',
        path: '/api',
        auth: { methods: ['apiKey' as const] },
        quota: { cost: 1 },
        mock: { body: { ok: true } },
      },
    ],
  };
}

/** The counters the gateway charges for a key on each plan (the old build's keys are theirs, prefixed). */
const quotaSpec = (keyId: string): CounterSpec => quotaCounter(MONTHLY, keyId, 'credential', 1, Date.now());
const rateSpec = (keyId: string): CounterSpec =>
  rateCounter('plan:hourly', rateLimitSchema.parse(HOURLY), keyId, Date.now()).spec;

/** What the old build's consume script did for a fixed counter: INCRBY, and PEXPIRE on the first charge. */
const OLD_CHARGE = `
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
if v == tonumber(ARGV[1]) and tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return v
`;
const oldCharge = (redis: Redis | Cluster, key: string, cost: number, ttlMs: number) =>
  redis.eval(OLD_CHARGE, 1, key, cost, ttlMs);

const get = (gw: RunningGateway, path: string, key: string) =>
  request(`${gw.url}${path}`, { headers: { 'x-api-key': key } });

async function started(cfg: ReturnType<typeof config>, options: GatewayOptions = {}) {
  const gw = await startGateway(cfg, options);
  let closed = false;
  cleanup.push(async () => {
    if (!closed) await gw.close();
  });
  await waitFor(() => gw.gateway.services.redis!.ready, 10_000);
  return {
    gw,
    close: async () => {
      closed = true;
      await gw.close();
    },
  };
}

/** Waits for the gateway's migration to finish `n` sweeps. */
const swept = (gw: RunningGateway, n = 1) =>
  waitFor(() => (gw.gateway.services.counterMigration?.sweeps ?? 0) >= n, 10_000, 10);

const used = async (gw: RunningGateway, spec: CounterSpec) =>
  (await gw.gateway.services.counters.peek([spec]))[0];

describe('counter layout migration (single node)', () => {
  it('continues a monthly quota and an hourly rate limit from the old build’s counts; leaves counters kept for ever', async () => {
    const keyPrefix = uniquePrefix('counter-migration');
    cleanup.push(() => deleteRedisKeys(keyPrefix));
    const direct = new Redis(sharedRedisUrl);
    cleanup.push(() => Promise.resolve(direct.disconnect()));
    const cfg = config({ url: sharedRedisUrl, keyPrefix });

    // The keys exist before the upgrade (made on a gateway that counts nothing).
    const first = await started(cfg);
    const keys = first.gw.gateway.services.keys;
    const q = await keys.create({ name: 'quota', plan: 'monthly' });
    const r = await keys.create({ name: 'rate', plan: 'hourly' });
    const life = await keys.create({ name: 'life', plan: 'forever' });
    await first.close();

    // What the old build left: 8 of 10 this month, 3 of 5 this hour, as plain keys with their PX.
    const qs = quotaSpec(q.record.id);
    const rs = rateSpec(r.record.id);
    const month = new Date().toISOString().slice(0, 7).replace('-', '');
    expect(qs.key).toBe(`q:{key:${q.record.id}}:month:m${month}`);
    expect(rs.key).toMatch(new RegExp(`^rl:\\{key:${r.record.id}\\}:plan:hourly:per-key:3600:\\d+$`));
    await direct.set(keyPrefix + qs.key, '8', 'PX', qs.ttlMs);
    await oldCharge(direct, keyPrefix + rs.key, 3, rs.ttlMs);
    // When each old key expires (Redis's own clock: PEXPIRETIME).
    const qExpires = Number(await direct.call('PEXPIRETIME', keyPrefix + qs.key));
    const rExpires = Number(await direct.call('PEXPIRETIME', keyPrefix + rs.key));
    expect(rExpires).toBeGreaterThan(0);
    // Kept for ever, and read in place by this build too: a lifetime quota, an old key without a
    // TTL (a refund after expiry left "0"… here "2"), and a sliding window (a hash in both layouts).
    const lifetimeKey = `${keyPrefix}q:{key:${life.record.id}}:lifetime:l`;
    await direct.set(lifetimeKey, '4');
    const index = Number(rs.key.split(':').at(-1));
    const noTtlKey = `${keyPrefix}rl:{key:${r.record.id}}:plan:hourly:per-key:3600:${index - 1}`;
    await direct.set(noTtlKey, '2');
    const slidingKey = `${keyPrefix}rl:{key:${r.record.id}}:plan:hourly:slow:60:s`;
    await direct.hset(slidingKey, '100', '3');
    await direct.pexpire(slidingKey, 120_000);

    const upgraded = await started(cfg, { counterMigration: { intervalMs: 60_000 } });
    const gw = upgraded.gw;
    await swept(gw);
    expect(gw.gateway.services.counterMigration!.last).toMatchObject({ folded: 2, units: 11, failed: 0 });
    expect(await direct.exists(keyPrefix + qs.key, keyPrefix + rs.key)).toBe(0);
    expect(await used(gw, qs)).toBe(8);
    expect(await used(gw, rs)).toBe(3);
    // The hashes got the marker the consume script reads and the old keys' expiry: made by the fold,
    // each expires at its old key's millisecond (PEXPIRETIME read, PEXPIREAT set, in one script).
    for (const [spec, expires] of [
      [qs, qExpires],
      [rs, rExpires],
    ] as const)
      expect(await hashOf(direct, keyPrefix, spec)).toEqual({ marker: '1', expires });

    // 8 of 10: two more pass, the third is over the quota.
    expect((await get(gw, '/api', q.key)).status).toBe(200);
    expect((await get(gw, '/api', q.key)).status).toBe(200);
    expect(expectProblem(await get(gw, '/api', q.key), 'quota-exceeded')).toMatchObject({ limit: 10 });
    // 3 of 5 this hour: two more pass, the third is rate limited.
    expect((await get(gw, '/api', r.key)).status).toBe(200);
    expect((await get(gw, '/api', r.key)).status).toBe(200);
    expectProblem(await get(gw, '/api', r.key), 'rate-limit-exceeded');
    // The lifetime quota goes on from its plain key: 4 + 1.
    expect((await get(gw, '/api', life.key)).status).toBe(200);

    // Left alone: no TTL, or not a string.
    expect(await direct.get(lifetimeKey)).toBe('5');
    expect(await direct.pttl(lifetimeKey)).toBe(-1);
    expect(await direct.get(noTtlKey)).toBe('2');
    expect(await direct.pttl(noTtlKey)).toBe(-1);
    expect(await direct.hgetall(slidingKey)).toEqual({ '100': '3' });
    await upgraded.close();

    // Another start sweeps again: nothing counted twice.
    const again = await started(cfg, { counterMigration: { intervalMs: 60_000 } });
    await swept(again.gw);
    expect(again.gw.gateway.services.counterMigration!.last).toMatchObject({ folded: 0, units: 0 });
    expect(await used(again.gw, qs)).toBe(10);
    expect(await used(again.gw, rs)).toBe(5);
    expectProblem(await get(again.gw, '/api', q.key), 'quota-exceeded');
    expectProblem(await get(again.gw, '/api', r.key), 'rate-limit-exceeded');
    expect(await direct.get(noTtlKey)).toBe('2');
  });

  it('folds what an old instance writes after the first sweep at the next one (rolling upgrade)', async () => {
    const keyPrefix = uniquePrefix('counter-migration-rolling');
    cleanup.push(() => deleteRedisKeys(keyPrefix));
    const direct = new Redis(sharedRedisUrl);
    cleanup.push(() => Promise.resolve(direct.disconnect()));
    const { gw } = await started(config({ url: sharedRedisUrl, keyPrefix }), {
      counterMigration: { intervalMs: 50 },
    });
    const q = await gw.gateway.services.keys.create({ name: 'quota', plan: 'monthly' });
    const qs = quotaSpec(q.record.id);
    await swept(gw);
    // A new instance charges 1 (in the hash), an old one 4 (its plain key), after the first sweep.
    expect((await get(gw, '/api', q.key)).status).toBe(200);
    const oldKey = keyPrefix + qs.key;
    await oldCharge(direct, oldKey, 4, qs.ttlMs);
    await waitFor(async () => (await direct.exists(oldKey)) === 0, 10_000, 10);
    expect(await used(gw, qs)).toBe(5);
    // The old instance goes on; the sweeps go on, each folding only what was added since. An old
    // key that expires sooner than the hash does not shorten it.
    const before = gw.gateway.services.counterMigration!.sweeps;
    const hash = await hashOf(direct, keyPrefix, qs);
    expect(hash.marker).toBe('1');
    await oldCharge(direct, oldKey, 2, 60_000);
    await waitFor(async () => (await direct.exists(oldKey)) === 0, 10_000, 10);
    await swept(gw, before + 3);
    expect(await used(gw, qs)).toBe(7);
    expect(await hashOf(direct, keyPrefix, qs)).toEqual(hash);
    expect(gw.gateway.services.counterMigration!.total).toMatchObject({ folded: 2, units: 6, failed: 0 });
    // 7 of 10: three more, then the quota.
    for (let i = 0; i < 3; i++) expect((await get(gw, '/api', q.key)).status).toBe(200);
    expectProblem(await get(gw, '/api', q.key), 'quota-exceeded');
  });

  it('two gateways sweeping at once fold each old key once', async () => {
    const keyPrefix = uniquePrefix('counter-migration-race');
    cleanup.push(() => deleteRedisKeys(keyPrefix));
    const direct = new Redis(sharedRedisUrl);
    cleanup.push(() => Promise.resolve(direct.disconnect()));
    const ids = Array.from({ length: 600 }, (_, i) => `key_${i}`);
    const p = direct.pipeline();
    ids.forEach((id, i) => {
      const s = quotaSpec(id);
      p.set(keyPrefix + s.key, String(1 + (i % 7)), 'PX', s.ttlMs);
    });
    await p.exec();
    const handles = [0, 1].map(() => createRedis({ url: sharedRedisUrl, keyPrefix, commandTimeoutMs: 2000 }));
    cleanup.push(async () => {
      for (const h of handles) await h.close();
    });
    await Promise.all(handles.map((h) => h.whenReady(5000)));
    // Small pages, so that the two sweeps interleave over the same keys.
    const migrations = handles.map(
      (h) => new CounterLayoutMigration(h, { logger: silentLogger(), scanCount: 10 }),
    );
    const [a, b] = await Promise.all(migrations.map((m) => m.sweep()));
    expect(a!.folded + b!.folded).toBe(ids.length);
    expect(a!.failed + b!.failed).toBe(0);
    const counters = new RedisCounters(handles[0]!);
    const used = await counters.peek(ids.map(quotaSpec));
    expect(used).toEqual(ids.map((_id, i) => 1 + (i % 7)));
    expect(a!.units + b!.units).toBe(used.reduce((x, y) => x + y, 0));
  });
  it('on a Redis without PEXPIRETIME (6.x) the hash takes the old expiry from TIME + PTTL', async () => {
    const redis = await startPrivateRedis(['--rename-command', 'PEXPIRETIME', '']);
    cleanup.push(() => redis.stop());
    const direct = new Redis(redis.url);
    cleanup.push(() => Promise.resolve(direct.disconnect()));
    await expect(direct.call('PEXPIRETIME', 'x')).rejects.toThrow(/unknown command/i);
    const keyPrefix = 'tg:';
    const s = quotaSpec('key_old_redis');
    await direct.set(keyPrefix + s.key, '6', 'PX', 90_000);
    const [seconds, micros] = await direct.time();
    const expected =
      Number(seconds) * 1000 +
      Math.floor(Number(micros) / 1000) +
      Number(await direct.pttl(keyPrefix + s.key));
    const handle = createRedis({ url: redis.url, keyPrefix, commandTimeoutMs: 2000 });
    cleanup.push(() => handle.close());
    await handle.whenReady(5000);
    const stats = await new CounterLayoutMigration(handle, { logger: silentLogger() }).sweep();
    expect(stats).toMatchObject({ folded: 1, units: 6, failed: 0 });
    expect(await new RedisCounters(handle).peek([s])).toEqual([6]);
    // Two clock reads (PTTL, TIME) a few commands apart: the same expiry within a few ms.
    const where = new RedisCounters(handle).where(s);
    const pttl = Number(await direct.pttl(where.key));
    const [s2, m2] = await direct.time();
    const at = Number(s2) * 1000 + Math.floor(Number(m2) / 1000) + pttl;
    expect(Math.abs(at - expected)).toBeLessThanOrEqual(5);
    expect(await direct.hget(where.key, '_')).toBe('1');
  });
});

describe('counter layout migration (Redis Cluster)', () => {
  it('takes each old key, then adds it to its hash in another slot; every master scanned', async () => {
    const cluster = await startRedisCluster();
    cleanup.push(() => cluster.stop());
    const nodes = cluster.urls.map((u) => {
      const url = new URL(u);
      return { host: url.hostname, port: Number(url.port) };
    });
    const direct = new Cluster(nodes);
    cleanup.push(() => Promise.resolve(direct.disconnect()));
    const keyPrefix = 'tg:';
    const cfg = config({ cluster: cluster.urls, keyPrefix });
    const first = await started(cfg);
    // Old quota counters on every master (keys made until each master holds at least one).
    const masters = direct.nodes('master');
    expect(masters).toHaveLength(3);
    const made: Array<{ key: string; record: { id: string } }> = [];
    const holding = new Set<number>();
    while (holding.size < 3 && made.length < 60) {
      const k = await first.gw.gateway.services.keys.create({ name: `q${made.length}`, plan: 'monthly' });
      const s = quotaSpec(k.record.id);
      await oldCharge(direct, keyPrefix + s.key, 1 + (made.length % 9), s.ttlMs);
      made.push(k);
      // (A master that does not own the key answers MOVED.)
      for (const [i, m] of masters.entries())
        if (
          await m.exists(keyPrefix + s.key).then(
            (n) => n === 1,
            () => false,
          )
        )
          holding.add(i);
    }
    expect(holding.size).toBe(3);
    const r = await first.gw.gateway.services.keys.create({ name: 'rate', plan: 'hourly' });
    await first.close();
    const rs = rateSpec(r.record.id);
    await oldCharge(direct, keyPrefix + rs.key, 3, rs.ttlMs);

    const { gw } = await started(cfg, { counterMigration: { intervalMs: 60_000 } });
    await swept(gw);
    const stats = gw.gateway.services.counterMigration!.last!;
    const units = made.reduce((sum, _k, i) => sum + 1 + (i % 9), 0) + 3;
    expect(stats).toMatchObject({ folded: made.length + 1, units, failed: 0 });
    expect(stats.scans).toBeGreaterThanOrEqual(3);
    for (const [i, k] of made.entries()) {
      const s = quotaSpec(k.record.id);
      expect(await direct.exists(keyPrefix + s.key)).toBe(0);
      expect(await used(gw, s)).toBe(1 + (i % 9));
    }
    // The first key had 1 of 10: nine more pass, then the quota.
    for (let i = 0; i < 9; i++) expect((await get(gw, '/api', made[0]!.key)).status).toBe(200);
    expectProblem(await get(gw, '/api', made[0]!.key), 'quota-exceeded');
    // 3 of 5 this hour.
    expect((await get(gw, '/api', r.key)).status).toBe(200);
    expect((await get(gw, '/api', r.key)).status).toBe(200);
    expectProblem(await get(gw, '/api', r.key), 'rate-limit-exceeded');
  }, 60_000);
});

/** The shared hash a fixed counter lives in now (one shard on a node): its `_` marker and its expiry (epoch ms). */
async function hashOf(direct: Redis, keyPrefix: string, spec: CounterSpec) {
  const [shard] = shardTags('c', COUNTER_SHARDS.node);
  const open = spec.key.indexOf('{');
  const close = spec.key.indexOf('}');
  const key = `${keyPrefix}${spec.key.slice(0, open + 1)}${shard}${spec.key.slice(close)}`;
  return { marker: await direct.hget(key, '_'), expires: Number(await direct.call('PEXPIRETIME', key)) };
}
