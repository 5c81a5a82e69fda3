import { afterEach, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { AUDIT_SHARDS, RedisAuditStore, type AuditRecord } from '../../src/observability/audit.js';
import { createRedis, type RedisHandle } from '../../src/shared/redis.js';
import { shardOf, shardTags } from '../../src/shared/shards.js';
import { ManualClock } from '../../src/core/clock.js';
import { mintRequestId } from '../../src/core/request-id.js';
import { silentLogger } from '../../src/observability/logger.js';
import { sharedRedisUrl, startPrivateRedis, startRedisCluster, uniquePrefix } from '../helpers/redis.js';
import { deleteRedisKeys } from '../helpers/redis-cleanup.js';
import { sampleAuditRecord } from '../helpers/audit.js';
import { startGateway } from '../helpers/gateway.js';
import { request, waitFor } from '../helpers/http.js';
import { createLogger } from '../../src/observability/logger.js';
import { validateConfig } from '../../src/config/load.js';

// `audit.maxRedisBytes`: the trail's size count in Redis, and the trim that keeps it under its cap
// (oldest first: whole buckets, then a bucket's oldest batches), on real Redis (one shard).

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

const RETENTION_SEC = 3600;
const BUCKET_MS = Math.max(60_000, Math.ceil((RETENTION_SEC * 1000) / 24));
const TAG = `{${shardTags('a', 1)[0]!}}`;

function record(clock: ManualClock, n: number, id = mintRequestId(clock.now())): AuditRecord {
  return sampleAuditRecord({
    time: new Date(clock.now()).toISOString(),
    request_id: id,
    path: `/orders/${n}`,
  });
}

/** A gateway's trail on `redis`, on the test's clock. */
function auditStore(redis: RedisHandle, clock: ManualClock, maxRedisBytes?: number): RedisAuditStore {
  return new RedisAuditStore({
    redis,
    maxEntries: 1000,
    retentionSec: RETENTION_SEC,
    clock,
    logger: silentLogger(),
    maxRedisBytes,
  });
}

async function setup(name: string, url = sharedRedisUrl) {
  const prefix = uniquePrefix(name);
  const direct = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  await direct.connect();
  const clock = new ManualClock(Math.floor(Date.now() / BUCKET_MS) * BUCKET_MS);
  const handles: RedisHandle[] = [];
  const stores: RedisAuditStore[] = [];
  cleanup.push(async () => {
    for (const s of stores) await s.close();
    for (const h of handles) await h.close();
    direct.disconnect();
    if (url === sharedRedisUrl) await deleteRedisKeys(prefix);
  });
  /** A gateway's trail: its own connection and store, on the test's clock. */
  const store = async (maxRedisBytes?: number) => {
    const redis = createRedis({ url, keyPrefix: prefix, commandTimeoutMs: 5000 });
    handles.push(redis);
    await redis.whenReady(5000);
    const s = auditStore(redis, clock, maxRedisBytes);
    stores.push(s);
    return s;
  };
  let n = 0;
  /** `batches` flushes of 100 records each, 10 ms apart; returns the records in write order. */
  const write = async (s: RedisAuditStore, batches: number, id?: (i: number) => string | undefined) => {
    const out: AuditRecord[] = [];
    for (let b = 0; b < batches; b++) {
      for (let i = 0; i < 100; i++) {
        const r = record(clock, n, id?.(n));
        n++;
        out.push(r);
        s.append(r);
      }
      await s.flush();
      clock.advance(10);
    }
    return out;
  };
  /** The size count per bucket: bytes, batches, records. */
  const size = async () => {
    const raw = await direct.hgetall(`${prefix}${TAG}:reqs-size`);
    const out = new Map<number, { bytes: number; batches: number; records: number }>();
    for (const [field, v] of Object.entries(raw)) {
      const [b, what] = field.split(':');
      const e = out.get(Number(b)) ?? { bytes: 0, batches: 0, records: 0 };
      if (what === undefined) e.bytes = Number(v);
      else if (what === 'n') e.batches = Number(v);
      else e.records = Number(v);
      out.set(Number(b), e);
    }
    return out;
  };
  const total = async () => [...(await size()).values()].reduce((a, e) => a + e.bytes, 0);
  return { prefix, direct, clock, store, write, size, total };
}

/** Every path the trail lists (newest first), and which of `records` a lookup by id still finds. */
async function kept(s: RedisAuditStore, records: AuditRecord[]) {
  const listed = (await s.list({ limit: 10_000 })).map((r) => r.path);
  const found: boolean[] = [];
  for (let i = 0; i < records.length; i += 50)
    found.push(
      ...(await Promise.all(
        records.slice(i, i + 50).map(async (r) => (await s.getAll(r.request_id)).length === 1),
      )),
    );
  return { listed, found };
}

describe('audit.maxRedisBytes: the trail in Redis stays under its cap, oldest first', () => {
  it('the size count is what the trail takes in Redis (INFO memory, a private server)', async () => {
    const redis = await startPrivateRedis();
    cleanup.push(() => redis.stop());
    const { direct, store, write, total } = await setup('audit-trim-size', redis.url);
    const s = await store();
    const before = Number(/used_memory:(\d+)/.exec(await direct.info('memory'))![1]);
    // Time-ordered ids (the gateway's) and a tenth of client-chosen ones (the id index).
    await write(s, 150, (i) => (i % 10 === 0 ? `client-${i}-${'x'.repeat(20)}` : undefined));
    const after = Number(/used_memory:(\d+)/.exec(await direct.info('memory'))![1]);
    const counted = await total();
    const ratio = counted / (after - before);
    console.log(
      `audit size count: ${counted} bytes for 15,000 records; Redis used_memory +${after - before} (count / memory ${ratio.toFixed(2)})`,
    );
    expect(ratio).toBeGreaterThan(0.8);
    expect(ratio).toBeLessThan(1.25);
  });

  it('under the cap nothing goes; over it, whole oldest buckets, then the next bucket’s oldest batches', async () => {
    const { prefix, direct, clock, store, write, size, total } = await setup('audit-trim');
    const big = await store();
    const perBucket: AuditRecord[][] = [];
    for (let b = 0; b < 4; b++) {
      perBucket.push(await write(big, 10));
      clock.advance(BUCKET_MS - 100);
    }
    const all = perBucket.flat();
    const counts = await size();
    expect([...counts.values()].map((e) => [e.batches, e.records])).toEqual(
      Array.from({ length: 4 }, () => [10, 1000]),
    );
    const full = await total();
    // A cap above what it holds: nothing goes.
    await big.trim();
    expect(big.trimmed).toBe(0);
    expect(await total()).toBe(full);

    // A cap of 60 % of it: the first bucket goes whole, the second loses its oldest batches.
    await direct.del(`${prefix}${TAG}:reqs-trim`);
    const cap = Math.floor(full * 0.6);
    const s = await store(cap);
    await s.trim();
    const left = await total();
    // Under the cap, and within half a batch (a fortieth of it all) of 90 % of it.
    expect(left).toBeLessThanOrEqual(cap);
    expect(Math.abs(left - cap * 0.9)).toBeLessThanOrEqual(full / 80);
    const [b0, b1, b2, b3] = [...counts.keys()].sort((a, b) => a - b);
    const after = await size();
    expect(after.has(b0!)).toBe(false);
    expect(after.get(b1!)!.batches).toBeLessThan(10);
    expect(after.get(b2!)).toEqual(counts.get(b2!));
    expect(after.get(b3!)).toEqual(counts.get(b3!));
    // The first bucket's keys are gone: its batches, id index and time blocks.
    const keys = await direct.keys(`${prefix}*`);
    expect(keys.filter((k) => k.endsWith(`:${b0}`))).toEqual([]);
    const firstBlock = Math.floor((b0! * BUCKET_MS) / 100);
    const blocks = keys.filter((k) => k.includes(':reqs-blk:')).map((k) => parseInt(k.split(':').pop()!, 36));
    expect(blocks.filter((b) => b >= firstBlock && b < firstBlock + BUCKET_MS / 100 - 20)).toEqual([]);

    // Exactly the oldest records went (write order), listed and looked up alike, and counted.
    const { listed, found } = await kept(s, all);
    const gone = all.length - found.filter(Boolean).length;
    expect(gone).toBe(s.trimmed);
    expect(gone).toBe(1000 + (10 - after.get(b1!)!.batches) * 100);
    expect(found).toEqual(all.map((_r, i) => i >= gone));
    expect(listed).toEqual(
      all
        .slice(gone)
        .reverse()
        .map((r) => r.path),
    );
    expect(after.get(b1!)!.records).toBe(2000 - gone);
    // The batch stream names the live batches only.
    const live = [...after.values()].reduce((a, e) => a + e.batches, 0);
    expect(await direct.xlen(`${prefix}${TAG}:stream-batches`)).toBe(live);
  });

  it('one bucket over the cap on its own: its oldest batches go, in write order', async () => {
    const { clock, store, write, total } = await setup('audit-trim-one');
    const writer = await store();
    const records = await write(writer, 20);
    const full = await total();
    clock.advance(1000);
    const s = await store(Math.floor(full / 2));
    await s.trim();
    // Under the cap (half), within half a batch of 90 % of it.
    expect(Math.abs((await total()) - full * 0.45)).toBeLessThanOrEqual(full / 40);
    const { found } = await kept(s, records);
    const gone = found.filter((f) => !f).length;
    expect(gone).toBeGreaterThanOrEqual(1000);
    expect(gone % 100).toBe(0);
    expect(found).toEqual(records.map((_r, i) => i >= gone));
    // A record written after the trim is kept and found.
    const [next] = await write(s, 1);
    expect(await s.getAll(next!.request_id)).toHaveLength(1);
  });

  it('two gateways check at once: one trims (a lock per shard and interval), nothing twice', async () => {
    const { clock, store, write, total } = await setup('audit-trim-two');
    const writer = await store();
    const records = await write(writer, 20);
    const full = await total();
    clock.advance(1000);
    const [a, b] = [await store(Math.floor(full / 2)), await store(Math.floor(full / 2))];
    await Promise.all([a.trim(), b.trim()]);
    expect([a.trimmed, b.trimmed].filter((n) => n > 0)).toHaveLength(1);
    const { found } = await kept(a, records);
    expect(found.filter((f) => !f).length).toBe(a.trimmed + b.trimmed);
    // The lock expires before the next interval: a later check may trim again (here: nothing to).
    // Under the cap (half), within half a batch of 90 % of it.
    expect(Math.abs((await total()) - full * 0.45)).toBeLessThanOrEqual(full / 40);
  });

  it('buckets past retention are forgotten by the count, and their stream entries cut', async () => {
    const { prefix, direct, clock, store, write, size } = await setup('audit-trim-expired');
    const s = await store();
    await write(s, 3);
    const [old] = [...(await size()).keys()];
    clock.advance(RETENTION_SEC * 1000 + 4 * BUCKET_MS);
    await write(s, 1);
    await direct.del(`${prefix}${TAG}:reqs-trim`);
    await s.trim();
    const after = await size();
    expect(after.has(old!)).toBe(false);
    expect([...after.values()]).toEqual([expect.objectContaining({ batches: 1, records: 100 })]);
    expect(s.trimmed).toBe(0);
    const entries = await direct.xrange(`${prefix}${TAG}:stream-batches`, '-', '+');
    expect(entries.map(([, f]) => Number(f[0]))).toEqual([...after.keys()]);
  });
});

describe('audit.maxRedisBytes in a gateway', () => {
  it('the check runs on its own: the oldest records go, a warning is logged, the metric counts them', async () => {
    const prefix = uniquePrefix('audit-trim-gw');
    cleanup.push(() => deleteRedisKeys(prefix));
    const lines: string[] = [];
    const logger = createLogger({
      level: 'warn',
      format: 'json',
      destination: { write: (line: string) => void lines.push(String(line)) },
    });
    // About half of what 300 records take (a batch, up to 100 of them, is ~65 KB).
    const cap = 100_000;
    const gw = await startGateway(
      {
        admin: { host: '127.0.0.1', port: 0, tokens: ['audit-trim-admin-token'] },
        redis: { url: sharedRedisUrl, keyPrefix: prefix },
        audit: { maxRedisBytes: cap },
        routes: [{ id: 'demo', path: '/demo', mock: {} }],
      },
      { logger },
    );
    cleanup.push(() => gw.close());
    await waitFor(() => gw.gateway.services.redis!.ready, 5000);
    const ids: string[] = [];
    for (let i = 0; i < 300; i++) {
      const res = await request(`${gw.url}/demo/${i}`);
      expect(res.status).toBe(200);
      ids.push(res.headers['x-request-id'] as string);
    }
    await gw.gateway.services.audit.flush();
    const trimmed = async () => {
      const res = await request(`${gw.adminUrl}/metrics`);
      return Number(/^tollgate_audit_trimmed_total (\d+)/m.exec(res.text)?.[1] ?? 0);
    };
    // The check runs every 5 s.
    await waitFor(async () => (await trimmed()) > 0, 15_000, 200);
    const direct = new Redis(sharedRedisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 });
    await direct.connect();
    cleanup.push(() => Promise.resolve(direct.disconnect()));
    const size = await direct.hgetall(`${prefix}${TAG}:reqs-size`);
    const bytes = Object.entries(size)
      .filter(([f]) => !f.includes(':'))
      .reduce((a, [, v]) => a + Number(v), 0);
    expect(bytes).toBeLessThanOrEqual(cap);
    expect(lines.some((l) => l.includes('audit trail over audit.maxRedisBytes'))).toBe(true);
    // The size as the next check reads it, in the metrics.
    const gauge = async () => {
      const res = await request(`${gw.adminUrl}/metrics`);
      return Number(/^tollgate_audit_redis_bytes (\d+)/m.exec(res.text)?.[1] ?? -1);
    };
    await waitFor(async () => (await gauge()) === bytes, 15_000, 200);
    // The newest request is still looked up by id; the oldest is not.
    const auth = { authorization: 'Bearer audit-trim-admin-token' };
    // (Polled: the response can reach the client before the gateway hands its record to the
    // trail, and a lookup racing that record's flush may miss it once.)
    await waitFor(
      async () => (await request(`${gw.adminUrl}/requests/${ids.at(-1)}`, { headers: auth })).status === 200,
      5000,
      100,
    );
    expect((await request(`${gw.adminUrl}/requests/${ids[0]}`, { headers: auth })).status).toBe(404);
  });

  it('a cap that is not a positive integer is a config error', () => {
    for (const maxRedisBytes of [0, -1, 1.5, '1GB'])
      expect(validateConfig({ audit: { maxRedisBytes } }).ok, String(maxRedisBytes)).toBe(false);
    expect(validateConfig({ audit: { maxRedisBytes: 5_000_000_000 } }).ok).toBe(true);
  });
});

describe('audit.maxRedisBytes on a real 3-master Redis Cluster', () => {
  it('each shard is counted and trimmed in its own slot, oldest first, to its share of the cap', async () => {
    const cluster = await startRedisCluster();
    cleanup.push(() => cluster.stop());
    const clock = new ManualClock(Math.floor(Date.now() / BUCKET_MS) * BUCKET_MS);
    const handle = async (maxRedisBytes?: number) => {
      const redis = createRedis({ cluster: cluster.urls, keyPrefix: 'tg:', commandTimeoutMs: 5000 });
      cleanup.push(() => redis.close());
      await redis.whenReady(10_000);
      const s = auditStore(redis, clock, maxRedisBytes);
      cleanup.push(() => s.close());
      return { redis, s };
    };
    const { redis, s: writer } = await handle();
    const records: AuditRecord[] = [];
    for (let f = 0; f < 30; f++) {
      for (let i = 0; i < 100; i++) {
        const n = f * 100 + i;
        const r = record(clock, n, n % 10 === 0 ? `client-${n}` : undefined);
        records.push(r);
        writer.append(r);
      }
      await writer.flush();
      clock.advance(10);
    }
    const tags = shardTags('a', AUDIT_SHARDS.cluster);
    const shardBytes = async () =>
      Promise.all(
        tags.map(async (t) => {
          const raw = await redis.client.hgetall(redis.key(`{${t}}`, 'reqs-size'));
          return Object.entries(raw)
            .filter(([f]) => !f.includes(':'))
            .reduce((a, [, v]) => a + Number(v), 0);
        }),
      );
    const before = await shardBytes();
    // Records spread over the shards (by request id): none holds much more than its share.
    const full = before.reduce((a, b) => a + b, 0);
    for (const b of before) expect(b).toBeGreaterThan(full / tags.length / 2);
    clock.advance(1000);
    const { s } = await handle(Math.floor(full / 2));
    await s.trim();
    const after = await shardBytes();
    for (const b of after) expect(b).toBeLessThanOrEqual(Math.ceil(full / 2 / tags.length));
    // Per shard, exactly its oldest records went (write order); every lookup agrees with the count.
    const { found } = await kept(s, records);
    expect(found.filter((f) => !f).length).toBe(s.trimmed);
    for (let shard = 0; shard < tags.length; shard++) {
      const mine = records
        .map((r, i) => [r, found[i]!] as const)
        .filter(([r]) => shardOf(r.request_id, tags.length) === shard);
      const firstKept = mine.findIndex(([, f]) => f);
      expect(firstKept).toBeGreaterThan(0);
      expect(mine.slice(firstKept).every(([, f]) => f)).toBe(true);
    }
  });
});
