import { afterAll, describe, expect, it } from 'vitest';
import {
  MemoryDeliveryStore,
  RedisDeliveryStore,
  groupOf,
  type AttemptRecord,
  type Delivery,
  type DeliveryStore,
} from '../../src/events/store.js';
import { retryDelay } from '../../src/events/dispatcher.js';
import { RedisHandle } from '../../src/shared/redis.js';
import { silentLogger } from '../../src/observability/logger.js';
import { sharedRedisUrl, uniquePrefix } from '../helpers/redis.js';
import { waitFor } from '../helpers/http.js';

const handles: RedisHandle[] = [];
afterAll(async () => {
  await Promise.all(handles.map((h) => h.close()));
});

const twins: Array<[string, (maxDepth: number) => Promise<DeliveryStore>]> = [
  ['memory', (maxDepth) => Promise.resolve(new MemoryDeliveryStore({ maxDepth }))],
  [
    'redis',
    async (maxDepth) => {
      const h = new RedisHandle(
        {
          url: sharedRedisUrl,
          keyPrefix: uniquePrefix('webhook-store'),
          commandTimeoutMs: 1000,
          connectTimeoutMs: 1000,
          onError: 'closed',
        },
        silentLogger(),
      );
      handles.push(h);
      await waitFor(() => h.ready, 5000);
      return new RedisDeliveryStore({ redis: h, maxDepth });
    },
  ],
];

const T = 1_900_000_000_000;
const URL = 'http://127.0.0.1:1/hooks';
const d = (id: string, orderKey: string): Delivery => ({
  id,
  eventId: `msg_${id}`,
  type: 'key.updated',
  url: URL,
  body: '{}',
  group: groupOf(URL, orderKey),
  createdAt: T,
  attempts: 0,
  lastStatus: null,
  lastError: null,
});
const attempt = (x: Delivery, outcome: AttemptRecord['outcome']): AttemptRecord => ({
  time: new Date(T).toISOString(),
  delivery_id: x.id,
  event_id: x.eventId,
  type: x.type,
  url: x.url,
  status: outcome === 'delivered' ? 200 : 503,
  error: null,
  attempts: 1,
  outcome,
  next_retry_at: null,
});
const ids = (r: { deliveries: Delivery[] }) => r.deliveries.map((x) => x.id).sort();

describe.each(twins)('DeliveryStore contract: %s', (_name, make) => {
  it('only the head of a group is due: one key’s deliveries go one at a time, in order', async () => {
    const s = await make(100);
    const [a1, a2, b1] = [d('a1', 'key:a'), d('a2', 'key:a'), d('b1', 'key:b')];
    expect(await s.enqueue([a1, a2, b1], T)).toEqual({ dropped: 0, depth: 3 });
    expect(ids(await s.claim(T, 10, T + 1000))).toEqual(['a1', 'b1']);
    await s.finish(a1, attempt(a1, 'delivered'), T + 1);
    expect(ids(await s.claim(T + 1, 10, T + 1000))).toEqual(['a2']);
    expect((await s.claim(T + 1, 10, T + 1000)).depth).toBe(2);
    // A second finish of the same delivery (two instances raced) changes nothing.
    await s.finish(a1, attempt(a1, 'delivered'), T + 2);
    expect((await s.claim(T + 2, 10, T + 1000)).depth).toBe(2);
  });

  it('a claim is a lease: taken over by another claimer once it runs out', async () => {
    const s = await make(100);
    const x = d('x', 'key:x');
    await s.enqueue([x], T);
    expect(ids(await s.claim(T, 10, T + 1000))).toEqual(['x']);
    expect(ids(await s.claim(T + 999, 10, T + 5000))).toEqual([]);
    expect(ids(await s.claim(T + 1000, 10, T + 5000))).toEqual(['x']);
  });

  it('a retry is due again at its time, with its attempts counted', async () => {
    const s = await make(100);
    const x = d('x', 'key:x');
    await s.enqueue([x], T);
    const [claimed] = (await s.claim(T, 10, T + 1000)).deliveries;
    claimed!.attempts = 1;
    await s.retry(claimed!, attempt(claimed!, 'retry'), T + 300);
    expect(ids(await s.claim(T + 299, 10, T + 1000))).toEqual([]);
    const again = (await s.claim(T + 300, 10, T + 1000)).deliveries;
    expect(again.map((y) => [y.id, y.attempts])).toEqual([['x', 1]]);
    expect((await s.recent(10)).map((r) => r.outcome)).toEqual(['retry']);
  });

  it('is bounded: past the cap the oldest are dropped, and the next of their group becomes due', async () => {
    const s = await make(3);
    const all = [d('p1', 'key:p'), d('p2', 'key:p'), d('q1', 'key:q'), d('q2', 'key:q'), d('r1', 'key:r')];
    expect(await s.enqueue(all, T)).toEqual({ dropped: 2, depth: 3 });
    // p1 and p2 went (the oldest); q1 and r1 are heads, q2 waits behind q1.
    expect(ids(await s.claim(T, 10, T + 1000))).toEqual(['q1', 'r1']);
    // Dropping a head hands its group on.
    expect(await s.enqueue([d('s1', 'key:s')], T)).toEqual({ dropped: 1, depth: 3 });
    expect(ids(await s.claim(T, 10, T + 1000))).toEqual(['q2', 's1']);
  });

  it('once: true the first time only, within its TTL', async () => {
    const s = await make(100);
    expect(await s.once('q:{key:a}:month:m203001:t:0.8', 60_000, T)).toBe(true);
    expect(await s.once('q:{key:a}:month:m203001:t:0.8', 60_000, T)).toBe(false);
    expect(await s.once('q:{key:a}:month:m203001:t:1', 60_000, T)).toBe(true);
  });
});

describe('retry backoff', () => {
  const retry = { initialDelayMs: 5_000, maxDelayMs: 3_600_000, maxAgeSec: 86_400 };
  it('doubles from the initial delay, with jitter in [½, 1], capped', () => {
    expect(retryDelay(retry, 1, 0)).toBe(2_500);
    expect(retryDelay(retry, 1, 1)).toBe(5_000);
    expect(retryDelay(retry, 3, 1)).toBe(20_000);
    expect(retryDelay(retry, 30, 1)).toBe(3_600_000);
    expect(retryDelay(retry, 1000, 0.5)).toBe(2_700_000);
  });
  it('keeps trying for at least 24 h: the schedule of the defaults covers a day', () => {
    let t = 0;
    let attempts = 0;
    // The dispatcher stops only once an event is retry.maxAgeSec old, and never schedules past it.
    while (t < retry.maxAgeSec * 1000) {
      attempts++;
      t = Math.min(retry.maxAgeSec * 1000, t + retryDelay(retry, attempts, 1));
    }
    expect(t).toBe(86_400_000);
    expect(attempts).toBeGreaterThan(20);
  });
});
