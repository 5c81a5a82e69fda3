import { afterEach, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { Redis } from 'ioredis';
import { RedisAuditStore, type AuditQuery, type AuditRecord } from '../../src/observability/audit.js';
import { createRedis, type RedisHandle } from '../../src/shared/redis.js';
import { shardTags } from '../../src/shared/shards.js';
import { systemClock } from '../../src/core/clock.js';
import { mintRequestId, uuidV7Time } from '../../src/core/request-id.js';
import { silentLogger } from '../../src/observability/logger.js';
import { sharedRedisUrl, startPrivateRedis, uniquePrefix } from '../helpers/redis.js';
import { deleteRedisKeys } from '../helpers/redis-cleanup.js';
import { sampleAuditRecord } from '../helpers/audit.js';

// The audit layout on real Redis (single node: one shard), store against store: what a flush
// writes, and what the earlier layout wrote (its flush script, as released) read back after an
// upgrade while both write.

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

/** The flush script of the earlier layout (batch stream entry, id → JSON lines), as released. */
const EARLIER_FLUSH_LUA = readFileSync(
  new URL('../fixtures/audit-flush-earlier.lua', import.meta.url),
  'utf8',
);
const RETENTION_SEC = 3600;
const BUCKET_MS = Math.max(60_000, Math.ceil((RETENTION_SEC * 1000) / 24));
const base = Date.now() - 60_000;
let tick = 0;

function record(id: string, extra: Partial<AuditRecord> = {}): AuditRecord {
  const time = new Date(base + tick++ * 10).toISOString();
  return sampleAuditRecord({ time, request_id: id, path: `/orders/${tick}`, ...extra });
}

async function setup(name: string, maxEntries = 1000, url = sharedRedisUrl) {
  const prefix = uniquePrefix(name);
  const direct = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  await direct.connect();
  const handles: RedisHandle[] = [];
  const stores: RedisAuditStore[] = [];
  cleanup.push(async () => {
    for (const s of stores) await s.close();
    for (const h of handles) await h.close();
    direct.disconnect();
    await deleteRedisKeys(prefix);
  });
  /** A gateway's trail: its own connection and store. */
  const store = async () => {
    const redis = createRedis({ url, keyPrefix: prefix, commandTimeoutMs: 2000 });
    handles.push(redis);
    await redis.whenReady(5000);
    const s = new RedisAuditStore({
      redis,
      maxEntries,
      retentionSec: RETENTION_SEC,
      clock: systemClock,
      logger: silentLogger(),
    });
    stores.push(s);
    return s;
  };
  const tag = `{${shardTags('a', 1)[0]!}}`;
  const bucket = () => Math.floor(Date.now() / BUCKET_MS);
  const earlierSha = (await direct.script('LOAD', EARLIER_FLUSH_LUA)) as string;
  /** A flush of a gateway of the earlier layout: its script, its keys, its arguments. */
  const earlierFlush = (records: AuditRecord[]) =>
    direct.evalsha(
      earlierSha,
      2,
      `${prefix}${tag}:stream`,
      `${prefix}${tag}:reqs:${bucket()}`,
      RETENTION_SEC * 1000,
      Math.max(1, Math.ceil(maxEntries / records.length)),
      RETENTION_SEC * 1000 + 2 * BUCKET_MS,
      maxEntries,
      ...records.flatMap((r) => [r.request_id, JSON.stringify(r)]),
    );
  return { prefix, direct, store, tag, bucket, earlierFlush };
}

const query = (q: Partial<AuditQuery> = {}): AuditQuery => ({ limit: 100, ...q });
const paths = (records: AuditRecord[]) => records.map((r) => r.path);
const newestFirst = (records: AuditRecord[]) => [...records].reverse().map((r) => r.path);

describe('RedisAuditStore layout: each record stored once', () => {
  it('one flush: the batch JSON once under a token; the id index and the batch stream hold the token', async () => {
    const { prefix, direct, store, tag, bucket } = await setup('audit-layout');
    const writer = await store();
    const records = Array.from({ length: 30 }, (_, i) =>
      record(`req-${i}`, i % 5 === 0 ? { status: 429, route: 'pay' } : {}),
    );
    for (const r of records) writer.append(r);
    await writer.flush();

    // (The size check's lock, `reqs-trim`, is there only while a check runs: every 5 s.)
    const keys = (await direct.keys(`${prefix}*`))
      .map((k) => k.slice(prefix.length))
      .filter((k) => !k.endsWith(':reqs-trim'))
      .sort();
    const b = bucket();
    expect(keys).toEqual([
      `${tag}:reqs-ids:${b}`,
      `${tag}:reqs-json:${b}`,
      `${tag}:reqs-size`,
      `${tag}:stream-batches`,
    ]);
    // The size count: one batch of 30 records, its bytes (the JSON and what its index takes).
    const size = await direct.hgetall(`${prefix}${tag}:reqs-size`);
    expect(size[`${b}:n`]).toBe('1');
    expect(size[`${b}:r`]).toBe('30');
    expect(Number(size[String(b)])).toBeGreaterThan(records.map((r) => JSON.stringify(r)).join('\n').length);
    const batches = await direct.hgetall(`${prefix}${tag}:reqs-json:${b}`);
    const [token] = Object.keys(batches);
    expect(Object.keys(batches)).toHaveLength(1);
    expect(batches[token!]).toBe(records.map((r) => JSON.stringify(r)).join('\n'));
    const index = await direct.hgetall(`${prefix}${tag}:reqs-ids:${b}`);
    expect(index).toEqual(Object.fromEntries(records.map((r) => [r.request_id, token])));
    const entries = await direct.xrange(`${prefix}${tag}:stream-batches`, '-', '+');
    expect(entries.map(([, fields]) => fields)).toEqual([[String(b), token]]);
    for (const key of keys) expect(await direct.pttl(prefix + key)).toBeGreaterThan(0);

    // Another gateway reads it: listing newest first, with filters and `since`; lookup by id.
    const reader = await store();
    expect(paths(await reader.list(query()))).toEqual(newestFirst(records));
    expect(paths(await reader.list(query({ limit: 4 })))).toEqual(newestFirst(records).slice(0, 4));
    const refused = records.filter((r) => r.status === 429);
    expect(paths(await reader.list(query({ status: '4xx' })))).toEqual(newestFirst(refused));
    expect(paths(await reader.list(query({ route: 'pay', limit: 2 })))).toEqual(
      newestFirst(refused).slice(0, 2),
    );
    const since = Date.parse(records[20]!.time);
    expect(paths(await reader.list(query({ since })))).toEqual(newestFirst(records.slice(20)));
    expect(await reader.getAll('req-7')).toEqual([records[7]]);
    expect(await reader.get('req-8')).toEqual(records[8]);
    expect(await reader.getAll('req-none')).toEqual([]);
  });

  it('a reused id, written by two gateways in several flushes: every record, newest first, the newest maxEntries', async () => {
    const { store } = await setup('audit-layout-reuse', 4);
    const [a, b] = [await store(), await store()];
    const same: AuditRecord[] = [];
    for (let i = 0; i < 3; i++) {
      for (const w of [a, b]) {
        const r = record('same', { path: `/same/${same.length}` });
        same.push(r);
        w.append(r);
        w.append(record(`other-${same.length}`));
        await w.flush();
      }
    }
    expect(paths(await a.getAll('same'))).toEqual(newestFirst(same).slice(0, 4));
    expect(paths(await b.getAll('same'))).toEqual(newestFirst(same).slice(0, 4));
    // Two records of one id in one batch are both kept.
    const pair = [record('pair'), record('pair')];
    for (const r of pair) a.append(r);
    await a.flush();
    expect(paths(await b.getAll('pair'))).toEqual(newestFirst(pair));
  });

  it('an id reused in 40 flushes by two gateways: every record found, newest first', async () => {
    const { store } = await setup('audit-layout-hot', 100);
    const [a, b] = [await store(), await store()];
    // Reused in 40 flushes (the lookup reads its batches in pipelines of 32): all 40, newest first.
    const hot: AuditRecord[] = [];
    for (let i = 0; i < 40; i++) {
      const r = record('hot', { path: `/hot/${i}` });
      hot.push(r);
      (i % 2 ? a : b).append(r);
      await (i % 2 ? a : b).flush();
    }
    expect(paths(await b.getAll('hot'))).toEqual(newestFirst(hot));
    expect((await a.get('hot'))?.path).toBe('/hot/39');
  });

  it('a flush that failed half-way is retried: no record is lost, none is read twice', async () => {
    const { prefix, direct, store, tag } = await setup('audit-layout-retry');
    const writer = await store();
    const records = [record('retry-1'), record('retry-2'), record('retry-3')];
    // The batch stream of the wrong type: the script fails at its XADD, after the batch and the
    // id index were written.
    await direct.set(`${prefix}${tag}:stream-batches`, 'not a stream', 'PX', 60_000);
    for (const r of records) writer.append(r);
    await writer.flush();
    const [token] = Object.keys(
      await direct.hgetall(`${prefix}${tag}:reqs-json:${Math.floor(Date.now() / BUCKET_MS)}`),
    );
    expect(token).toBeDefined();
    const ids = `${prefix}${tag}:reqs-ids:${Math.floor(Date.now() / BUCKET_MS)}`;
    expect(await direct.hget(ids, 'retry-1')).toBe(token);
    await direct.del(`${prefix}${tag}:stream-batches`);
    await writer.flush();
    // Written twice now (two batches, both named by the index), read once.
    expect((await direct.hget(ids, 'retry-1'))?.split(' ')).toHaveLength(2);

    const reader = await store();
    for (const r of records) expect(await reader.getAll(r.request_id)).toEqual([r]);
    expect(paths(await reader.list(query()))).toEqual(newestFirst(records));
  });
});

describe('RedisAuditStore upgrade: the earlier layout is read next to this one', () => {
  it('records the earlier flush script wrote, interleaved with this one, are listed and looked up', async () => {
    const { store, earlierFlush } = await setup('audit-layout-upgrade');
    const current = await store();
    // An earlier gateway and this one write at once, the same reused id among them.
    const first = [
      record('old-1'),
      record('both', { path: '/both/old-1' }),
      record('old-2', { status: 503 }),
    ];
    const second = [record('new-1'), record('both', { path: '/both/new' }), record('new-2', { status: 502 })];
    const third = [record('old-3'), record('both', { path: '/both/old-2' })];
    await earlierFlush(first);
    for (const r of second) current.append(r);
    await current.flush();
    await earlierFlush(third);

    const reader = await store();
    const all = [...first, ...second, ...third];
    expect(paths(await reader.list(query()))).toEqual(newestFirst(all));
    expect(paths(await reader.list(query({ status: '5xx' })))).toEqual(
      newestFirst(all.filter((r) => r.status >= 500)),
    );
    expect(paths(await reader.list(query({ limit: 3 })))).toEqual(newestFirst(all).slice(0, 3));
    expect(paths(await reader.getAll('both'))).toEqual(['/both/old-2', '/both/new', '/both/old-1']);
    expect(await reader.getAll('old-2')).toEqual([first[2]]);
    expect(await reader.getAll('new-1')).toEqual([second[0]]);
    expect(await current.get('old-3')).toEqual(third[0]);
  });
});

describe('RedisAuditStore: minted (time-ordered) request ids need no per-record index', () => {
  /** A record whose id the gateway minted on its arrival (a UUIDv7 of its time). */
  const minted = (extra: Partial<AuditRecord> = {}): AuditRecord => {
    const r = record('', extra);
    return { ...r, request_id: mintRequestId(Date.parse(r.time)) };
  };

  it('a flush of minted and client ids: the minted ones indexed once per batch and 100 ms block, the others by id', async () => {
    const { prefix, direct, store, tag, bucket } = await setup('audit-layout-minted');
    const writer = await store();
    // In time order: ten minted, two of a client's, ten minted (10 ms apart: 3 blocks of 100 ms).
    const records = Array.from({ length: 22 }, (_, i) =>
      i === 10 ? record('client-1') : i === 11 ? record('client-2') : minted(),
    );
    const mintedOnes = records.filter((r) => !r.request_id.startsWith('client-'));
    for (const r of records) writer.append(r);
    await writer.flush();

    const b = bucket();
    const keys = (await direct.keys(`${prefix}*`)).map((k) => k.slice(prefix.length)).sort();
    const [token] = Object.keys(await direct.hgetall(`${prefix}${tag}:reqs-json:${b}`));
    // The id index holds the client ids only.
    expect(await direct.hgetall(`${prefix}${tag}:reqs-ids:${b}`)).toEqual({
      'client-1': token,
      'client-2': token,
    });
    // One field per block of 100 ms the ids fall in, naming the batch and the ids' last digits.
    const blockOf = (r: AuditRecord) =>
      `${tag}:reqs-blk:${Math.floor(uuidV7Time(r.request_id)! / 100).toString(36)}`;
    const expected = new Map<string, string[]>();
    for (const r of mintedOnes)
      expected.set(blockOf(r), [...(expected.get(blockOf(r)) ?? []), r.request_id.slice(-8)]);
    expect(keys.filter((k) => k.includes(':reqs-blk:'))).toEqual([...expected.keys()].sort());
    for (const [key, tails] of expected)
      expect(await direct.hgetall(prefix + key)).toEqual({ [`${b}.${token}`]: tails.join(',') });
    for (const key of keys) expect(await direct.pttl(prefix + key)).toBeGreaterThan(0);

    const reader = await store();
    for (const r of records) expect(await reader.getAll(r.request_id)).toEqual([r]);
    expect(paths(await reader.list(query()))).toEqual(newestFirst(records));
    // An id of the same block that was never used: nothing (its block's batches are filtered by id).
    const unused = `${mintedOnes[0]!.request_id.slice(0, 28)}00000000`;
    expect(uuidV7Time(unused)).toBe(uuidV7Time(mintedOnes[0]!.request_id));
    expect(await reader.getAll(unused)).toEqual([]);
  });

  it('only minted ids: no id index and no script, the batch stream written directly', async () => {
    // A redis-server of its own: its command counts are this test's alone.
    const server = await startPrivateRedis();
    cleanup.push(() => server.stop(true));
    const { prefix, direct, store, tag, bucket } = await setup('audit-layout-minted-only', 1000, server.url);
    const writer = await store();
    const records = Array.from({ length: 5 }, () => minted());
    for (const r of records) writer.append(r);
    await direct.config('RESETSTAT');
    await writer.flush();
    const stats = await direct.info('commandstats');
    expect(stats).not.toMatch(/cmdstat_evalsha|cmdstat_eval:/);
    expect(stats).toMatch(/cmdstat_xadd:calls=1,/);
    expect(await direct.exists(`${prefix}${tag}:reqs-ids:${bucket()}`)).toBe(0);
    expect(paths(await (await store()).list(query()))).toEqual(newestFirst(records));
  });

  it('a minted id a client sends again, through two gateways: both records, newest first', async () => {
    const { store } = await setup('audit-layout-minted-reuse');
    const [a, b] = [await store(), await store()];
    const first = minted({ path: '/first' });
    const id = first.request_id;
    a.append(first);
    a.append(minted());
    await a.flush();
    // A client echoes the id it was given, soon after (a time-ordered id near its arrival: the
    // same block), and later (its time too far from the arrival: the id index).
    const again = record(id, { path: '/again', time: new Date(uuidV7Time(id)! + 300).toISOString() });
    const later = record(id, { path: '/later', time: new Date(uuidV7Time(id)! + 30_000).toISOString() });
    b.append(again);
    await b.flush();
    b.append(later);
    await b.flush();
    expect(paths(await a.getAll(id))).toEqual(['/later', '/again', '/first']);
  });

  it('a client piling time-ordered ids of one moment into a block: only near their arrival, the rest by id', async () => {
    const { prefix, direct, store, tag } = await setup('audit-layout-minted-pile');
    const writer = await store();
    // The same claimed time for every id, far from the records' arrivals: none goes to a block.
    const claimed = Date.parse(record('x').time) - 3_600_000;
    const piled = Array.from({ length: 50 }, () => record(mintRequestId(claimed)));
    for (const r of piled) writer.append(r);
    await writer.flush();
    expect(await direct.exists(`${prefix}${tag}:reqs-blk:${Math.floor(claimed / 100).toString(36)}`)).toBe(0);
    const reader = await store();
    for (const r of piled.slice(0, 5)) expect(await reader.getAll(r.request_id)).toEqual([r]);
  });

  it('a minted id the previous release indexed by id is still found', async () => {
    const { prefix, direct, store, tag, bucket } = await setup('audit-layout-minted-upgrade');
    const old = minted({ path: '/previous-release' });
    const id = old.request_id;
    // What a gateway of the previous release wrote for any id: the batch, the id index, the stream.
    const b = bucket();
    await direct.hsetnx(`${prefix}${tag}:reqs-json:${b}`, 'old.0', JSON.stringify(old));
    await direct.hset(`${prefix}${tag}:reqs-ids:${b}`, id, 'old.0');
    await direct.xadd(`${prefix}${tag}:stream-batches`, '*', String(b), 'old.0');
    await direct.pexpire(`${prefix}${tag}:reqs-json:${b}`, 60_000);
    await direct.pexpire(`${prefix}${tag}:reqs-ids:${b}`, 60_000);
    const current = await store();
    const again = record(id, { path: '/this-release', time: new Date(uuidV7Time(id)! + 5).toISOString() });
    current.append(again);
    await current.flush();
    expect(paths(await (await store()).getAll(id))).toEqual(['/this-release', '/previous-release']);
  });

  it('a flush of minted ids that failed half-way is retried: nothing lost, nothing read twice', async () => {
    const { prefix, direct, store, tag } = await setup('audit-layout-minted-retry');
    const writer = await store();
    const records = [minted(), minted()];
    // The batch stream of the wrong type: its XADD fails after the batch and the block were written.
    await direct.set(`${prefix}${tag}:stream-batches`, 'not a stream', 'PX', 60_000);
    for (const r of records) writer.append(r);
    await writer.flush();
    await direct.del(`${prefix}${tag}:stream-batches`);
    await writer.flush();
    const reader = await store();
    for (const r of records) expect(await reader.getAll(r.request_id)).toEqual([r]);
    expect(paths(await reader.list(query()))).toEqual(newestFirst(records));
  });
});
