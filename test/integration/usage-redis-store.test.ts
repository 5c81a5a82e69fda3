import { afterEach, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { startPrivateRedis } from '../helpers/redis.js';
import { waitFor } from '../helpers/http.js';
import { RedisUsageStore, USAGE_SHARDS } from '../../src/usage/redis-store.js';
import { RedisHandle } from '../../src/shared/redis.js';
import { redisSchema } from '../../src/shared/redis-schema.js';
import { silentLogger } from '../../src/observability/logger.js';
import { HOUR_MS, DAY_MS } from '../../src/usage/usage.js';

/*
 * The Redis usage store's shard-hash layout on a private redis-server (INFO commandstats counts
 * only this test's commands): many subjects per flush in a few commands, meter names, escaped
 * ids, the layout before merged into reads, the expiry set once per day hash, and a timed-out
 * flush dropped rather than retried.
 */

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

async function setup(o: { commandTimeoutMs?: number } = {}) {
  const redis = await startPrivateRedis();
  cleanup.push(() => redis.stop());
  const handles: RedisHandle[] = [];
  const direct = new Redis(redis.url);
  cleanup.push(() => Promise.resolve(direct.disconnect()));
  const open = async (opts: Partial<ConstructorParameters<typeof RedisUsageStore>[0]> = {}) => {
    const handle = new RedisHandle(
      redisSchema.parse({ url: redis.url, keyPrefix: 'tg:', ...o }),
      silentLogger(),
    );
    cleanup.push(() => handle.close());
    handles.push(handle);
    await handle.whenReady(5000);
    const store = new RedisUsageStore({
      redis: handle,
      retentionDays: () => 35,
      now: () => NOW,
      flushIntervalMs: () => 60_000,
      flushAt: 1_000_000,
      ...opts,
    });
    cleanup.push(() => store.close());
    return store;
  };
  const calls = async () => {
    const out: Record<string, number> = {};
    for (const m of (await direct.info('commandstats')).matchAll(/cmdstat_([\w|]+):calls=(\d+)/g))
      if (!/^(info|config|ping|client|hello|select|command)/.test(m[1]!)) out[m[1]!] = Number(m[2]);
    return out;
  };
  return { redis, direct, open, calls };
}

const NOW = Date.UTC(2030, 2, 3, 13, 20);
const HOUR = Math.floor(NOW / HOUR_MS);
const DAY = Math.floor(NOW / DAY_MS);

describe('RedisUsageStore (shard hashes)', () => {
  it('writes 12,000 subjects in one flush with a few commands per shard hash, and reads each back', async () => {
    const { direct, open, calls } = await setup();
    const store = await open();
    // Warm the script (EVALSHA's first NOSCRIPT answer is not the layout's cost).
    store.bucket('k', 'warm', HOUR)!.status[2]!++;
    await store.flush();
    await direct.config('RESETSTAT');
    const before = store.commands;
    const n = 12_000;
    for (let i = 0; i < n; i++) {
      const b = store.bucket('k', `key_${i}`, HOUR)!;
      b.status[2]! += 1 + (i % 3);
      if (i % 10 === 0) b.status[4]!++;
      if (i % 2 === 0) b.meters = new Map([['tokens', i]]);
    }
    expect(store.pending).toBe(n);
    await store.flush();
    expect(store.pending).toBe(0);
    const c = await calls();
    // Fields: 12,000 2xx, 1,200 4xx and 5,999 meters (key_0 has 0 tokens), 2,000 per call.
    const fields = n + n / 10 + n / 2 - 1;
    const scripts = c.evalsha ?? 0;
    expect(scripts).toBeGreaterThanOrEqual(Math.ceil(fields / 2000));
    expect(scripts).toBeLessThanOrEqual(Math.ceil(fields / 2000) + 1);
    // Per call one HMGET and one HSET per shard hash it writes (the calls take the shards in
    // turn); a PEXPIRE for each new hash (all but warm's); no HINCRBY, no MULTI.
    expect(c.hmget).toBe(c.hset);
    expect(c.hmget).toBeLessThanOrEqual(USAGE_SHARDS.node + scripts);
    expect(c.pexpire).toBeGreaterThanOrEqual(USAGE_SHARDS.node - 1);
    expect(c.pexpire).toBeLessThanOrEqual(USAGE_SHARDS.node);
    expect(c.hincrby).toBeUndefined();
    expect(c.multi).toBeUndefined();
    const total = Object.values(c).reduce((x, y) => x + y, 0);
    expect(store.commands - before).toBe(total);
    // 12,000 subjects for well under a command per 50 of them.
    expect(total).toBeLessThan(n / 50);
    const keys = await direct.keys('tg:usage:*');
    expect(keys).toHaveLength(USAGE_SHARDS.node);
    for (const k of keys) expect(k).toMatch(new RegExp(`^tg:usage:\\{u\\d+-\\d+\\}:${DAY}$`));
    // The hashes share the subjects evenly enough (none more than twice its share).
    const sizes = await Promise.all(keys.map((k) => direct.hlen(k)));
    for (const s of sizes) expect(s).toBeLessThan((2 * fields) / USAGE_SHARDS.node);
    // Each hash: its marker, its meter names, hashtable-encoded from the start.
    expect(await direct.hget(keys[0]!, 'm')).toBe('tokens');
    expect(await direct.object('ENCODING', keys[0]!)).toBe('hashtable');
    // Expires retentionDays after its day ends.
    const ttl = await direct.pttl(keys[0]!);
    expect(ttl).toBeGreaterThan(35 * DAY_MS);
    expect(ttl).toBeLessThanOrEqual(36 * DAY_MS);
    for (const i of [0, 1, 2, 3, 10, 5_555, 11_999]) {
      const got = (await store.read('k', `key_${i}`, HOUR - 30, HOUR + 30)).get(HOUR);
      expect(got, `key_${i}`).toEqual({
        status: [0, 0, 1 + (i % 3), 0, i % 10 === 0 ? 1 : 0, 0],
        rateLimit: 0,
        quota: 0,
        meters: i % 2 === 0 && i > 0 ? new Map([['tokens', i]]) : undefined,
      });
    }

    // A second flush adds to the same hashes: no PEXPIRE (the hashes exist), sums exact.
    await direct.config('RESETSTAT');
    for (let i = 0; i < n; i++) store.bucket('k', `key_${i}`, HOUR)!.status[2]!++;
    await store.flush();
    const again = await calls();
    expect(again.pexpire).toBeUndefined();
    expect((await store.read('k', 'key_5', HOUR, HOUR + 1)).get(HOUR)!.status[2]).toBe(4);
  });

  it('adds up from two instances, hour by hour across midnight, with refusals and meter names', async () => {
    const { open } = await setup();
    const a = await open();
    const b = await open();
    const late = DAY * 24 + 23; // 23:00 today, then 00:00 tomorrow
    const fill = (s: RedisUsageStore, hour: number, meters: Array<[string, number]>) => {
      const x = s.bucket('t', 'acme', hour)!;
      x.status[2]! += 2;
      x.status[5]! += 1;
      x.rateLimit += 1;
      x.quota += 3;
      x.meters = new Map(meters);
    };
    fill(a, late, [['tokens', 5]]);
    fill(a, late + 1, [['images', 1]]);
    fill(b, late, [
      ['tokens', 7],
      ['images', 2],
    ]);
    await Promise.all([a.flush(), b.flush()]);
    // A later flush with a name seen before and a new one: the day's index grows, once per name.
    fill(b, late, [
      ['tokens', 1],
      ['audio-seconds', 9],
    ]);
    await b.flush();
    const got = await a.read('t', 'acme', late - 5, late + 5);
    expect([...got.keys()].sort()).toEqual([late, late + 1]);
    expect(got.get(late)).toEqual({
      status: [0, 0, 6, 0, 0, 3],
      rateLimit: 3,
      quota: 9,
      meters: new Map([
        ['tokens', 13],
        ['images', 2],
        ['audio-seconds', 9],
      ]),
    });
    expect(got.get(late + 1)).toEqual({
      status: [0, 0, 2, 0, 0, 1],
      rateLimit: 1,
      quota: 3,
      meters: new Map([['images', 1]]),
    });
    // The range bounds hold: only the hour asked for.
    expect([...(await a.read('t', 'acme', late + 1, late + 2)).keys()]).toEqual([late + 1]);
    // The other subject kind with the same id is another subject.
    expect((await a.read('k', 'acme', late - 5, late + 5)).size).toBe(0);
  });

  it('keeps ids and meter names apart however they are spelled (escaped fields)', async () => {
    const { open } = await setup();
    const store = await open();
    // Ids and names that would run into each other unescaped.
    const ids = ['a', 'a:13:2xx', 'a:13', 'a%3A13', 'b,c', 'x:m'];
    ids.forEach((id, i) => {
      const b = store.bucket('k', id, HOUR)!;
      b.status[2]! += i + 1;
      b.meters = new Map([
        [`m:${i}`, 10 + i],
        ['a,b', 1],
        ['%', 2],
      ]);
    });
    await store.flush();
    for (const [i, id] of ids.entries()) {
      const got = (await store.read('k', id, HOUR, HOUR + 1)).get(HOUR)!;
      expect(got.status[2], id).toBe(i + 1);
      expect(got.meters, id).toEqual(
        new Map([
          [`m:${i}`, 10 + i],
          ['a,b', 1],
          ['%', 2],
        ]),
      );
    }
  });

  it('reads the per-subject hashes of the layout before, merged with the shard hashes', async () => {
    const { direct, open } = await setup();
    // Written by the version before: one hash per subject and day, fields <HH>:<what>.
    const hh = String(HOUR % 24).padStart(2, '0');
    const prev = String((HOUR - 24) % 24).padStart(2, '0');
    await direct.hset(`tg:usage:{k:key_old}:${DAY}`, {
      [`${hh}:2xx`]: 5,
      [`${hh}:rl`]: 2,
      [`${hh}:m:tokens`]: 40,
    });
    await direct.hset(`tg:usage:{k:key_old}:${DAY - 1}`, { [`${prev}:4xx`]: 1, [`${prev}:m:images`]: 3 });
    await direct.hset(`tg:usage:{t:acme}:${DAY}`, { [`${hh}:q`]: 4 });
    const store = await open();
    const b = store.bucket('k', 'key_old', HOUR)!;
    b.status[2]! += 3;
    b.meters = new Map([
      ['tokens', 2],
      ['audio', 1],
    ]);
    await store.flush();
    const got = await store.read('k', 'key_old', HOUR - 30, HOUR + 1);
    expect(got.get(HOUR)).toEqual({
      status: [0, 0, 8, 0, 0, 0],
      rateLimit: 2,
      quota: 0,
      meters: new Map([
        ['tokens', 42],
        ['audio', 1],
      ]),
    });
    // A day only the layout before holds.
    expect(got.get(HOUR - 24)).toEqual({
      status: [0, 0, 0, 0, 1, 0],
      rateLimit: 0,
      quota: 0,
      meters: new Map([['images', 3]]),
    });
    expect((await store.read('t', 'acme', HOUR, HOUR + 1)).get(HOUR)?.quota).toBe(4);
    // Nothing writes the layout before any more.
    expect(await direct.hgetall(`tg:usage:{k:key_old}:${DAY}`)).toEqual({
      [`${hh}:2xx`]: '5',
      [`${hh}:rl`]: '2',
      [`${hh}:m:tokens`]: '40',
    });
  });

  it('skips buckets past the retention, and keeps the interval, size and pending bounds', async () => {
    const { direct, open } = await setup();
    const store = await open({ retentionDays: () => 2, maxPending: 3, flushAt: 1_000_000 });
    store.bucket('k', 'old', HOUR - 24 * 4)!.status[2]!++;
    store.bucket('k', 'new', HOUR)!.status[2]!++;
    store.bucket('k', 'new2', HOUR)!.status[2]!++;
    expect(store.bucket('k', 'over', HOUR)).toBeUndefined();
    expect(store.stats()).toEqual({ pending: 3, dropped: 1 });
    await store.flush();
    expect((await store.read('k', 'old', HOUR - 24 * 5, HOUR + 1)).size).toBe(0);
    expect((await store.read('k', 'new', HOUR, HOUR + 1)).get(HOUR)!.status[2]).toBe(1);
    const keys = await direct.keys('tg:usage:*');
    for (const k of keys) expect(k.endsWith(`:${DAY}`)).toBe(true);
    // At flushAt distinct buckets the flush starts at once; by interval otherwise.
    const sized = await open({ flushAt: 2 });
    sized.bucket('t', 's1', HOUR)!.status[2]!++;
    expect(sized.pending).toBe(1);
    sized.bucket('t', 's2', HOUR)!.status[2]!++;
    // Started once the caller's turn is over, so what it added to the bucket is written.
    expect(sized.pending).toBe(2);
    await Promise.resolve();
    expect(sized.pending).toBe(0);
    const timed = await open({ flushIntervalMs: () => 30 });
    timed.bucket('t', 's3', HOUR)!.status[3]!++;
    await waitFor(async () => (await timed.read('t', 's3', HOUR, HOUR + 1)).size === 1, 5000, 20);
    await sized.flush();
    expect((await sized.read('t', 's2', HOUR, HOUR + 1)).get(HOUR)!.status[2]).toBe(1);
  });

  it('drops a flush that timed out (Redis may have run it) rather than counting it twice', async () => {
    const { redis, open } = await setup({ commandTimeoutMs: 200 });
    const store = await open();
    const reader = await open();
    // Warm the script so the frozen call is one EVALSHA.
    store.bucket('k', 'warm', HOUR)!.status[2]!++;
    await store.flush();
    store.bucket('k', 'key_t', HOUR)!.status[2]! += 7;
    store.bucket('t', 'ten_t', HOUR)!.status[2]! += 7;
    redis.freeze();
    cleanup.push(() => Promise.resolve(redis.thaw()));
    await store.flush();
    expect(store.failures).toBe(1);
    expect(store.stats()).toEqual({ pending: 0, dropped: 2 });
    redis.thaw();
    // The frozen server ran the call once thawed: counted once, never retried.
    await waitFor(async () => (await reader.read('k', 'key_t', HOUR, HOUR + 1)).size === 1, 5000, 20);
    await store.flush();
    expect((await reader.read('k', 'key_t', HOUR, HOUR + 1)).get(HOUR)!.status[2]).toBe(7);
    expect((await reader.read('t', 'ten_t', HOUR, HOUR + 1)).get(HOUR)!.status[2]).toBe(7);
  });
});
