import { afterAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  MemoryCounters,
  RedisCounters,
  type CounterSpec,
  type CounterStore,
} from '../../src/policies/rate-limit/counters.js';
import { RedisHandle } from '../../src/shared/redis.js';
import { silentLogger } from '../../src/observability/logger.js';
import { sharedRedisUrl, uniquePrefix } from '../helpers/redis.js';
import { waitFor } from '../helpers/http.js';

const handles: RedisHandle[] = [];
afterAll(async () => {
  await Promise.all(handles.map((h) => h.close()));
});

const spec = (key: string, limit: number, cost = 1, kind: CounterSpec['kind'] = 'rate'): CounterSpec => ({
  kind,
  key: `${key}:{t}`,
  tag: 't',
  limit,
  cost,
  ttlMs: 60_000,
  spanSec: 60,
});

const twins: Array<[string, () => Promise<CounterStore>]> = [
  ['memory', () => Promise.resolve(new MemoryCounters())],
  [
    'redis',
    async () => {
      const h = new RedisHandle(
        {
          url: sharedRedisUrl,
          keyPrefix: uniquePrefix('counters'),
          commandTimeoutMs: 1000,
          connectTimeoutMs: 1000,
          onError: 'closed',
        },
        silentLogger(),
      );
      handles.push(h);
      await waitFor(() => h.ready, 5000);
      return new RedisCounters(h);
    },
  ],
];

describe.each(twins)('CounterStore contract: %s', (_name, make) => {
  it('charges every counter and reports usage', async () => {
    const c = await make();
    const specs = [spec('a', 5), spec('b', 10, 2)];
    expect(await c.consume(specs)).toEqual({ ok: true, used: [1, 2] });
    expect(await c.consume(specs)).toEqual({ ok: true, used: [2, 4] });
    expect(await c.peek(specs)).toEqual([2, 4]);
  });

  it('is all-or-nothing: a refused request charges none of its counters', async () => {
    const c = await make();
    const wide = spec('wide', 100);
    const narrow = spec('narrow', 2);
    await c.consume([wide, narrow]);
    await c.consume([wide, narrow]);
    const refused = await c.consume([wide, narrow]);
    expect(refused).toEqual({ ok: false, failed: 1, used: [2, 2] });
    expect(await c.peek([wide, narrow])).toEqual([2, 2]);
    expect(await c.consume([wide])).toEqual({ ok: true, used: [3] });
  });

  it('refuses a cost that would overflow even when some room is left', async () => {
    const c = await make();
    const s = spec('cost', 5, 3);
    expect((await c.consume([s])).ok).toBe(true);
    expect(await c.consume([s])).toEqual({ ok: false, failed: 0, used: [3] });
  });

  it('refunds and resets', async () => {
    const c = await make();
    const s = spec('refund', 3, 1, 'quota');
    await c.consume([s]);
    await c.consume([s]);
    await c.refund([s]);
    expect(await c.peek([s])).toEqual([1]);
    await c.reset(s.key, s.tag);
    expect(await c.peek([s])).toEqual([0]);
  });

  it('never lets more than the limit through under concurrency', async () => {
    const c = await make();
    const s = spec('race', 25);
    const results = await Promise.all(Array.from({ length: 100 }, () => Promise.resolve(c.consume([s]))));
    expect(results.filter((r) => r.ok)).toHaveLength(25);
    expect(await c.peek([s])).toEqual([25]);
  });

  // SPEC §10: sliding windows, shadow (soft) counters and meter settlements, identically on both twins.
  const sliding = (key: string, limit: number, bucket: number, cost = 1): CounterSpec => ({
    ...spec(key, limit, cost),
    ttlMs: 120_000,
    slide: { bucket, buckets: 10 },
  });

  it('sliding window: counts the last eleven buckets, forgets older ones', async () => {
    const c = await make();
    expect((await c.consume([sliding('sw', 3, 100)])).ok).toBe(true);
    expect((await c.consume([sliding('sw', 3, 105, 2)])).ok).toBe(true);
    expect(await c.consume([sliding('sw', 3, 110)])).toEqual({ ok: false, failed: 0, used: [3] });
    // Bucket 100 leaves at 111: one unit free again.
    expect(await c.consume([sliding('sw', 3, 111)])).toEqual({ ok: true, used: [3] });
    expect(await c.peek([sliding('sw', 3, 116)])).toEqual([1]);
  });

  it('sliding and fixed counters are all-or-nothing together', async () => {
    const c = await make();
    const fixed = spec('mix-fixed', 1);
    expect((await c.consume([sliding('mix', 5, 7), fixed])).ok).toBe(true);
    expect(await c.consume([sliding('mix', 5, 7), fixed])).toEqual({ ok: false, failed: 1, used: [1, 1] });
    expect(await c.peek([sliding('mix', 5, 7), fixed])).toEqual([1, 1]);
  });

  it('a soft (shadow) counter never refuses and is charged only when it fits', async () => {
    const c = await make();
    const soft = { ...spec('soft', 1), soft: true };
    const softSliding = { ...sliding('soft-s', 1, 3), soft: true };
    expect(await c.consume([soft, softSliding])).toEqual({ ok: true, used: [1, 1] });
    expect(await c.consume([soft, softSliding])).toEqual({ ok: true, used: [1, 1], over: [0, 1] });
    expect(await c.peek([soft, softSliding])).toEqual([1, 1]);
  });

  it('a metered check (cost 0) refuses at or over the limit and charges nothing; settlements add', async () => {
    const c = await make();
    const meter = spec('meter', 10, 0);
    const meterSliding = sliding('meter-s', 10, 50, 0);
    expect(await c.consume([meter, meterSliding])).toEqual({ ok: true, used: [0, 0] });
    c.settle([
      { ...meter, cost: 6 },
      { ...meterSliding, cost: 9 },
    ]);
    c.settle([
      { ...meter, cost: 3 },
      { ...meterSliding, cost: 1 },
    ]);
    await c.flush();
    expect(await c.peek([meter, meterSliding])).toEqual([9, 10]);
    expect(await c.consume([meter, meterSliding])).toEqual({ ok: false, failed: 1, used: [9, 10] });
    expect(await c.consume([meter])).toEqual({ ok: true, used: [9] });
  });
});

// The Redis twin decides a batch of concurrent requests in one script call, and a run of
// consecutive identical requests in one step (see CONSUME_LUA): whatever the mix of limits, costs,
// shadow and metered checks, sliding windows, plain counters and a request naming one counter twice,
// it answers every request exactly as the memory twin does one request after another.
describe('CounterStore: a concurrent batch on Redis answers as one request after another in memory', () => {
  const template = fc.record({
    counter: fc.integer({ min: 0, max: 4 }),
    limit: fc.integer({ min: 1, max: 9 }),
    cost: fc.integer({ min: 0, max: 3 }),
    soft: fc.boolean(),
  });
  const request = fc.array(template, { minLength: 1, maxLength: 3 });
  const runs = fc.array(fc.tuple(request, fc.integer({ min: 1, max: 6 })), { minLength: 1, maxLength: 8 });
  // Meter settlements pending when the batch goes: they ride on its script call, added first.
  const settlements = fc.array(
    fc.record({ counter: fc.integer({ min: 0, max: 4 }), cost: fc.integer({ min: 1, max: 5 }) }),
    { maxLength: 4 },
  );

  it('matches for random batches', async () => {
    const redis = await twins[1]![1]();
    let run = 0;
    await fc.assert(
      fc.asyncProperty(runs, settlements, async (batch, settles) => {
        run++;
        const memory = new MemoryCounters();
        const specOf = (t: { counter: number; limit: number; cost: number; soft: boolean }): CounterSpec => {
          const base: CounterSpec = { ...spec(`prop${run}-${t.counter}`, t.limit, t.cost), soft: t.soft };
          if (t.counter === 3) return { ...base, ttlMs: 120_000, slide: { bucket: 40, buckets: 10 } };
          if (t.counter === 4) return { ...base, kind: 'remaining', ttlMs: 0, spanSec: 0 };
          return base;
        };
        const calls = batch.flatMap(([req, times]) => Array.from({ length: times }, () => req.map(specOf)));
        // Each settlement is told its span of the counter (fixed counters only), on both twins.
        const spans = { redis: [] as string[], memory: [] as string[] };
        const settleSpecs = (into: string[]) =>
          settles.map((t, i) => ({
            ...specOf({ counter: t.counter, limit: 9, cost: t.cost, soft: false }),
            settled: (before: number, after: number) => into.push(`${i}:${before}-${after}`),
          }));
        redis.settle(settleSpecs(spans.redis));
        const fromRedis = await Promise.all(calls.map((specs) => Promise.resolve(redis.consume(specs))));
        memory.settle(settleSpecs(spans.memory));
        const fromMemory = calls.map((specs) => memory.consume(specs));
        expect(fromRedis).toEqual(fromMemory);
        await redis.flush();
        expect(spans.redis.sort()).toEqual(spans.memory.sort());
        const every = calls.flat();
        expect(await Promise.resolve(redis.peek(every))).toEqual(memory.peek(every));
      }),
      { numRuns: 60 },
    );
  });
});

describe('RedisCounters: meter settlements ride on the next check', () => {
  /** Counters on a redis-server of the test's own (its command counts are the test's alone). */
  const privateCounters = async (keyPrefix: string) => {
    const { startPrivateRedis } = await import('../helpers/redis.js');
    const server = await startPrivateRedis();
    const h = new RedisHandle(
      { url: server.url, keyPrefix, commandTimeoutMs: 1000, connectTimeoutMs: 1000, onError: 'closed' },
      silentLogger(),
    );
    const close = async () => {
      await h.close();
      await server.stop(true);
    };
    await waitFor(() => h.ready, 5000).catch(async (err: unknown) => {
      await close();
      throw err;
    });
    return { h, c: new RedisCounters(h), close };
  };

  it('a settlement pending when a check goes is written by the check script: no command of its own', async () => {
    const { h, c, close } = await privateCounters('ride:');
    try {
      const meter = spec('tokens', 100, 0);
      const hits = spec('hits', 100);
      expect(await c.consume([meter, hits])).toEqual({ ok: true, used: [0, 1] });
      // Script calls (EVAL the first time a script runs on this server, EVALSHA after).
      const calls = async () => {
        const stats = await h.client.info('commandstats');
        return ['eval', 'evalsha']
          .map((cmd) => Number(new RegExp(`cmdstat_${cmd}:calls=(\\d+)`).exec(stats)?.[1] ?? 0))
          .reduce((a, b) => a + b);
      };
      await h.client.config('RESETSTAT');
      const told: Array<[number, number]> = [];
      for (let i = 1; i <= 20; i++) {
        c.settle([{ ...meter, cost: 3, settled: (before, after) => told.push([before, after]) }]);
        // The next request's check: it sees every value settled before it.
        expect(await c.consume([meter, hits])).toEqual({ ok: true, used: [3 * i, 1 + i] });
      }
      expect(await calls()).toBe(20);
      expect(told).toEqual(Array.from({ length: 20 }, (_v, i) => [3 * i, 3 * i + 3]));
      // Nothing to ride on: the settlement goes in a call of its own, at once on flush.
      c.settle([{ ...meter, cost: 5 }]);
      await c.flush();
      expect(await calls()).toBe(21);
      expect(await c.peek([meter])).toEqual([65]);
    } finally {
      await close();
    }
  });

  it('counters expire when their window ends: fixed ones rounded to the second, sliding ones after their ttl', async () => {
    const { h, c, close } = await privateCounters('ttl:');
    try {
      const fixed = { ...spec('fixed', 10), ttlMs: 30_000 };
      const untagged: CounterSpec = { ...spec('x', 10), key: 'untagged', ttlMs: 20_000 };
      const slide: CounterSpec = { ...spec('slide', 10), ttlMs: 40_000, slide: { bucket: 7, buckets: 10 } };
      const forever = { ...spec('uses', 10, 1, 'remaining'), ttlMs: 0, spanSec: 0 };
      expect((await c.consume([fixed, untagged, slide, forever])).ok).toBe(true);
      const ttlOf = async (s: CounterSpec) => h.client.pttl(c.where(s).key);
      // Rounded to whole seconds, never shorter than asked: between the ttl and 1.5 s more.
      for (const [s, ms] of [
        [fixed, 30_000],
        [untagged, 20_000],
      ] as const) {
        const left = await ttlOf(s);
        expect(left).toBeGreaterThan(ms - 1000);
        expect(left).toBeLessThanOrEqual(ms + 1500);
      }
      const left = await ttlOf(slide);
      expect(left).toBeGreaterThan(39_000);
      expect(left).toBeLessThanOrEqual(40_000);
      expect(await ttlOf(forever)).toBe(-1);
    } finally {
      await close();
    }
  });
});
