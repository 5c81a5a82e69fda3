import { afterEach, describe, expect, inject, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { freePort } from '../helpers/http.js';
import { sharedRedisUrl, uniquePrefix } from '../helpers/redis.js';
import { deleteRunKeys, runKeyPattern } from '../helpers/test-run.js';
import { startGateway } from '../helpers/gateway.js';
import { request } from '../helpers/http.js';

// Issue 14.7: a run of the suite left ~300 keys without a TTL in the shared Redis. Every key a run
// writes is under `tollgate-test:<run id>:`, and the globalSetup's teardown deletes exactly those.

const cleanup: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

function client(): Redis {
  const c = new Redis(sharedRedisUrl, { maxRetriesPerRequest: 1 });
  cleanup.push(() => void c.disconnect());
  return c;
}

describe('test keys in the shared Redis are deleted when the run ends', () => {
  it('uniquePrefix() puts every key under this run id, distinct per call', () => {
    const run = inject('tollgateTestRun');
    expect(run).toMatch(/^[0-9a-f]{12}$/);
    const a = uniquePrefix('cleanup');
    const b = uniquePrefix('cleanup');
    expect(a.startsWith(`tollgate-test:${run}:cleanup:`)).toBe(true);
    expect(a.endsWith(':')).toBe(true);
    expect(a).not.toBe(b);
  });

  it("deleteRunKeys removes one run's keys, with and without TTL, and no other run's", async () => {
    const redis = client();
    const run = randomBytes(6).toString('hex');
    // Another run whose id starts with this one: the `:` after the id keeps it out of the pattern.
    const other = `${run}0`;
    const mine = Array.from({ length: 1500 }, (_, i) => `tollgate-test:${run}:t:{keys}:k${i}`);
    const theirs = [`tollgate-test:${other}:t:k`, `tollgate-test:${run}`, `tollgate-test:x${run}:k`];
    cleanup.push(async () => void (await redis.unlink(...theirs, ...mine)));
    const write = redis.multi();
    for (const [i, k] of mine.entries()) {
      if (i % 2) write.set(k, '1');
      else write.set(k, '1', 'EX', 600);
    }
    for (const k of theirs) write.set(k, '1');
    await write.exec();

    expect(await deleteRunKeys(sharedRedisUrl, run)).toBe(mine.length);
    expect(await redis.exists(...mine)).toBe(0);
    expect(await redis.exists(...theirs)).toBe(theirs.length);
  });

  it("a gateway's keys under uniquePrefix() are all found by the run's pattern", async () => {
    const redis = client();
    const prefix = uniquePrefix('cleanup-gw');
    const gw = await startGateway({
      redis: { url: sharedRedisUrl, keyPrefix: prefix, commandTimeoutMs: 2000 },
      routes: [
        {
          id: 'm',
          path: '/m',
          mock: { status: 200, body: 'ok' },
          rateLimits: [{ name: 'r', by: 'ip', limit: 100, windowSec: 60 }],
        },
      ],
    } as any);
    cleanup.push(() => gw.close());
    expect((await request(`${gw.url}/m`)).status).toBe(200);
    const written = await redis.keys(`${prefix}*`);
    expect(written.length).toBeGreaterThan(0);
    const pattern = runKeyPattern(inject('tollgateTestRun'));
    const underRun = new Set(await redis.keys(pattern));
    for (const k of written) expect(underRun.has(k)).toBe(true);
  });

  it('refuses a run id that would widen the pattern (glob characters, empty)', () => {
    for (const bad of ['', '*', 'abc*', 'deadbeef:*', '[0-9]deadbeef', 'DEADBEEFCAFE'])
      expect(() => runKeyPattern(bad)).toThrow(/bad test run id/);
  });

  it('deleteRunKeys resolves undefined when no Redis answers (a run without Redis)', async () => {
    const port = await freePort();
    expect(await deleteRunKeys(`redis://127.0.0.1:${port}`, randomBytes(6).toString('hex'))).toBe(undefined);
  });
});
