import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { MemoryKeyStore } from '../../src/keys/memory-store.js';
import { RedisKeyStore } from '../../src/keys/redis-store.js';
import { KeyService } from '../../src/keys/service.js';
import { SecretBox } from '../../src/keys/secret-box.js';
import type { KeyStore } from '../../src/keys/record.js';
import { ManualClock } from '../../src/core/clock.js';
import { RedisHandle } from '../../src/shared/redis.js';
import { silentLogger } from '../../src/observability/logger.js';
import {
  keyInvalidationChannel,
  sharedRedisUrl,
  uniquePrefix,
  waitForSubscribers,
} from '../helpers/redis.js';
import { waitFor } from '../helpers/http.js';

const handles: RedisHandle[] = [];
afterAll(async () => {
  await Promise.all(handles.map((h) => h.close()));
});

function redisHandle(prefix: string): RedisHandle {
  const h = new RedisHandle(
    {
      url: sharedRedisUrl,
      keyPrefix: prefix,
      commandTimeoutMs: 1000,
      connectTimeoutMs: 1000,
      onError: 'closed',
    },
    silentLogger(),
  );
  handles.push(h);
  return h;
}

const twins: Array<[string, (clock: ManualClock) => Promise<KeyStore>]> = [
  ['memory', () => Promise.resolve(new MemoryKeyStore())],
  [
    'redis',
    async (clock) => {
      const redis = redisHandle(uniquePrefix('keys'));
      await waitFor(() => redis.ready, 5000);
      return new RedisKeyStore({ redis, clock, logger: silentLogger(), cacheTtlMs: 5000 });
    },
  ],
];

describe.each(twins)('KeyStore contract: %s', (_name, make) => {
  let clock: ManualClock;
  let keys: KeyService;

  beforeEach(async () => {
    clock = new ManualClock(Date.UTC(2030, 0, 1));
    keys = new KeyService({
      store: await make(clock),
      prefix: 'tg',
      box: new SecretBox('contract-test-secret-key-0123456789'),
      clock,
    });
  });

  it('creates a key whose plaintext is returned once and stored only as a hash', async () => {
    const created = await keys.create({
      name: 'ci',
      ownerId: 'u1',
      tenantId: 't1',
      scopes: ['a'],
      plan: 'free',
      hmac: true,
      meta: { team: 'x' },
    });
    expect(created.key).toMatch(/^tg_live_/);
    expect(created.signingSecret).toMatch(/^whsec_/);
    const stored = await keys.get(created.record.id);
    expect(stored).toMatchObject({
      name: 'ci',
      ownerId: 'u1',
      tenantId: 't1',
      scopes: ['a'],
      plan: 'free',
      enabled: true,
      meta: { team: 'x' },
    });
    expect(JSON.stringify(stored)).not.toContain(created.key);
    expect(JSON.stringify(stored)).not.toContain(created.signingSecret!);
    expect(keys.signingSecretOf(stored!)).toBe(created.signingSecret);
  });

  it('finds a key by its plaintext, refuses made-up and mistyped ones', async () => {
    const created = await keys.create({ name: 'k' });
    expect((await keys.find(created.key))?.id).toBe(created.record.id);
    expect(
      await keys.find(created.key.slice(0, -1) + (created.key.endsWith('a') ? 'b' : 'a')),
    ).toBeUndefined();
    const other = await new KeyService({
      store: new MemoryKeyStore(),
      prefix: 'tg',
      box: new SecretBox(undefined),
      clock,
    }).create({ name: 'elsewhere' });
    expect(await keys.find(other.key)).toBeUndefined();
  });

  it('lists newest first with owner and tenant filters and cursor pagination', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      clock.advance(1000);
      ids.push(
        (await keys.create({ name: `k${i}`, ownerId: i % 2 ? 'odd' : 'even', tenantId: 'tenant' })).record.id,
      );
    }
    const first = await keys.list({ limit: 2 });
    expect(first.items.map((r) => r.id)).toEqual([ids[4], ids[3]]);
    expect(first.nextCursor).not.toBeNull();
    const second = await keys.list({ limit: 2, cursor: first.nextCursor! });
    expect(second.items.map((r) => r.id)).toEqual([ids[2], ids[1]]);
    const third = await keys.list({ limit: 2, cursor: second.nextCursor! });
    expect(third.items.map((r) => r.id)).toEqual([ids[0]]);
    expect(third.nextCursor).toBeNull();
    expect((await keys.list({ limit: 10, ownerId: 'odd' })).items.map((r) => r.id)).toEqual([ids[3], ids[1]]);
    expect((await keys.list({ limit: 10, tenantId: 'tenant' })).items).toHaveLength(5);
    expect((await keys.list({ limit: 10, ownerId: 'nobody' })).items).toEqual([]);
  });

  it('updates fields, moves owners in listings, and revokes', async () => {
    const created = await keys.create({ name: 'k', ownerId: 'a' });
    const updated = await keys.update(created.record.id, { name: 'renamed', enabled: false, scopes: ['x'] });
    expect(updated).toMatchObject({ name: 'renamed', enabled: false, scopes: ['x'] });
    expect((await keys.find(created.key))?.enabled).toBe(false);
    await keys.store.replace({ ...updated!, ownerId: 'b' });
    expect((await keys.list({ limit: 10, ownerId: 'a' })).items).toEqual([]);
    expect((await keys.list({ limit: 10, ownerId: 'b' })).items).toHaveLength(1);
    expect((await keys.revoke(created.record.id))?.id).toBe(created.record.id);
    expect(await keys.get(created.record.id)).toBeUndefined();
    expect(await keys.find(created.key)).toBeUndefined();
    expect(await keys.revoke(created.record.id)).toBeUndefined();
    expect(await keys.update('key_nope', { name: 'x' })).toBeUndefined();
  });

  it('keeps revoked keys for listing, newest first, by owner and tenant, without hash or secret', async () => {
    const a = await keys.create({ name: 'a', ownerId: 'o1', tenantId: 't1', hmac: true });
    const b = await keys.create({ name: 'b', ownerId: 'o2', tenantId: 't2' });
    await keys.create({ name: 'alive', ownerId: 'o1', tenantId: 't1' });
    await keys.revoke(a.record.id);
    clock.advance(1000);
    await keys.revoke(b.record.id);
    const all = await keys.store.listRevoked({ limit: 10 });
    expect(all.map((r) => r.name)).toEqual(['b', 'a']);
    expect(all[1]).toMatchObject({ id: a.record.id, hmac: true, tenantId: 't1' });
    expect(all[1]!.revokedAt).toBe(new Date(Date.UTC(2030, 0, 1)).toISOString());
    expect(JSON.stringify(all)).not.toContain(a.record.hash);
    expect(JSON.stringify(all)).not.toContain('signingSecret');
    expect((await keys.store.listRevoked({ limit: 10, tenantId: 't1' })).map((r) => r.name)).toEqual(['a']);
    expect((await keys.store.listRevoked({ limit: 10, ownerId: 'o2' })).map((r) => r.name)).toEqual(['b']);
    expect(await keys.store.listRevoked({ limit: 1 })).toHaveLength(1);
    // Revoked keys are not in the ordinary listing.
    expect((await keys.list({ limit: 10 })).items.map((r) => r.name)).toEqual(['alive']);
  });

  it('rotates: a new key with the same attributes; the old one expires at the end of the grace period', async () => {
    const created = await keys.create({ name: 'rot', ownerId: 'u', scopes: ['s'], hmac: true });
    const rotated = await keys.rotate(created.record.id, 60);
    expect(rotated).toBeDefined();
    const { created: next, previous } = rotated!;
    expect(next.key).not.toBe(created.key);
    expect(next.record).toMatchObject({
      name: 'rot',
      ownerId: 'u',
      scopes: ['s'],
      rotatedFrom: created.record.id,
    });
    expect(next.signingSecret).toMatch(/^whsec_/);
    expect(previous.expiresAt).toBe(new Date(clock.now() + 60_000).toISOString());
    expect((await keys.find(created.key))?.expiresAt).toBe(previous.expiresAt);
  });

  it('counts active keys per owner and records last use', async () => {
    const a = await keys.create({ name: 'a', ownerId: 'o' });
    await keys.create({ name: 'b', ownerId: 'o', enabled: false });
    await keys.create({ name: 'c', ownerId: 'o', expiresAt: new Date(clock.now() - 1000).toISOString() });
    expect(await keys.store.countActive('o', clock.now())).toBe(1);
    keys.store.touch(a.record.id, clock.now());
    expect((await keys.get(a.record.id))?.lastUsedAt).toBe(new Date(clock.now()).toISOString());
  });

  it('runs work under an owner lock one at a time per owner, releasing it on failure', async () => {
    const store = keys.store;
    let inside = 0;
    let most = 0;
    const order: string[] = [];
    const work = (name: string, fail = false) =>
      store.withOwnerLock('owner-1', async () => {
        inside++;
        most = Math.max(most, inside);
        await new Promise((r) => setTimeout(r, 5));
        order.push(name);
        inside--;
        if (fail) throw new Error(`failed ${name}`);
        return name;
      });
    const results = await Promise.allSettled([work('a'), work('b', true), work('c'), work('d')]);
    expect(most).toBe(1);
    expect(order).toEqual(['a', 'b', 'c', 'd']);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled', 'fulfilled']);
    // Another owner is not held up by this one.
    const other = store.withOwnerLock('owner-2', () => Promise.resolve('free'));
    expect(await other).toBe('free');
  });
});

describe('RedisKeyStore across instances', () => {
  it('a revocation through one instance is refused at once by another that had the key cached', async () => {
    const prefix = uniquePrefix('keys-shared');
    const clock = new ManualClock();
    const [ra, rb] = [redisHandle(prefix), redisHandle(prefix)];
    await waitFor(() => ra.ready && rb.ready, 5000);
    const box = new SecretBox('shared-secret-key-0123456789-abcdefgh');
    const a = new KeyService({
      store: new RedisKeyStore({ redis: ra, clock, logger: silentLogger(), cacheTtlMs: 60_000 }),
      prefix: 'tg',
      box,
      clock,
    });
    const b = new KeyService({
      store: new RedisKeyStore({ redis: rb, clock, logger: silentLogger(), cacheTtlMs: 60_000 }),
      prefix: 'tg',
      box,
      clock,
    });
    await waitForSubscribers(sharedRedisUrl, keyInvalidationChannel(prefix), 2);
    const created = await a.create({ name: 'shared', hmac: true });
    expect((await b.find(created.key))?.id).toBe(created.record.id); // cached on b now, for 60 s
    expect(b.signingSecretOf((await b.find(created.key))!)).toBe(created.signingSecret);
    await a.revoke(created.record.id);
    await waitFor(async () => (await b.find(created.key)) === undefined, 2000, 10);
  });
});

describe('RedisKeyStore owner lock across instances', () => {
  it('never lets two instances hold the same owner lock at once', async () => {
    const prefix = uniquePrefix('owner-lock');
    const clock = new ManualClock(Date.UTC(2030, 0, 1));
    const ra = redisHandle(prefix);
    const rb = redisHandle(prefix);
    await waitFor(() => ra.ready && rb.ready, 5000);
    const a = new RedisKeyStore({ redis: ra, clock, logger: silentLogger(), cacheTtlMs: 5000 });
    const b = new RedisKeyStore({ redis: rb, clock, logger: silentLogger(), cacheTtlMs: 5000 });
    let inside = 0;
    let most = 0;
    let runs = 0;
    const work = (store: RedisKeyStore) =>
      store.withOwnerLock('shared-owner', async () => {
        inside++;
        most = Math.max(most, inside);
        await new Promise((r) => setTimeout(r, 10));
        inside--;
        runs++;
      });
    await Promise.all(Array.from({ length: 6 }, (_, i) => work(i % 2 ? a : b)));
    expect(runs).toBe(6);
    expect(most).toBe(1);
    // Released: nothing is left behind in Redis.
    expect(await ra.client.keys(`${prefix}*lock*`)).toEqual([]);
    await Promise.all([a.close(), b.close()]);
  });
});
