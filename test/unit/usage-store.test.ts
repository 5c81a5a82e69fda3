import { describe, expect, it } from 'vitest';
import { MemoryUsageStore, usageSeries, HOUR_MS, DAY_MS } from '../../src/usage/usage.js';

/* The memory store's bounds (retention and bucket cap) and the series built from hour buckets. */

describe('MemoryUsageStore', () => {
  it('drops days past the retention, as the Redis hashes expire', async () => {
    let now = Date.UTC(2030, 0, 10, 12);
    const store = new MemoryUsageStore({ retentionDays: () => 3, now: () => now });
    const hourOf = (ms: number) => Math.floor(ms / HOUR_MS);
    for (let d = 0; d < 6; d++) store.bucket('k', 'a', hourOf(now - d * DAY_MS)).status[2]!++;
    expect(store.size).toBe(6);
    now += HOUR_MS; // the next hour sweeps
    const kept = await store.read('k', 'a', 0, hourOf(now) + 1);
    // Today and the 3 days before it are kept (each day ends, then lives 3 more).
    expect([...kept.keys()].map((h) => Math.floor(h / 24)).sort()).toEqual(
      [0, 1, 2, 3].map((d) => Math.floor(now / DAY_MS) - d).sort(),
    );
    expect(store.size).toBe(4);
    expect(store.stats().dropped).toBe(0);
  });

  it('stays under its cap, the oldest hours first, and counts what it dropped', async () => {
    const now = Date.UTC(2030, 0, 10, 12);
    const store = new MemoryUsageStore({ retentionDays: () => 35, now: () => now, maxBuckets: 100 });
    const hour = Math.floor(now / HOUR_MS);
    for (let i = 0; i < 500; i++) store.bucket('t', `tenant-${i}`, hour - (500 - i)).status[2]!++;
    expect(store.size).toBeLessThanOrEqual(100);
    expect(store.stats().dropped).toBe(500 - store.size);
    // The newest survive.
    expect((await store.read('t', 'tenant-499', 0, hour + 1)).size).toBe(1);
    expect((await store.read('t', 'tenant-0', 0, hour + 1)).size).toBe(0);
  });

  it('a read is a copy: adding later does not change an answer already given', async () => {
    const store = new MemoryUsageStore({ retentionDays: () => 35, now: () => 0 });
    store.bucket('k', 'a', 0).status[2]!++;
    const first = await store.read('k', 'a', 0, 1);
    store.bucket('k', 'a', 0).status[2]!++;
    expect(first.get(0)!.status[2]).toBe(1);
  });
});

describe('usageSeries', () => {
  it('fills every bucket of the range, rounding from down and to up, and sums hours into days', () => {
    const base = Date.UTC(2030, 0, 1);
    const h0 = base / HOUR_MS;
    const hours = new Map([
      [h0 + 1, { status: [0, 0, 2, 0, 1, 0], rateLimit: 1, quota: 0, meters: new Map([['tokens', 5]]) }],
      [h0 + 25, { status: [0, 1, 0, 0, 0, 3], rateLimit: 0, quota: 2, meters: new Map([['tokens', 7]]) }],
    ]);
    const hourly = usageSeries(hours, base + 30 * 60_000, base + 2 * HOUR_MS + 1, 'hour');
    expect(hourly.from).toBe('2030-01-01T00:00:00.000Z');
    expect(hourly.to).toBe('2030-01-01T03:00:00.000Z');
    expect(hourly.buckets.map((b) => b.requests.total)).toEqual([0, 3, 0]);
    const daily = usageSeries(hours, base, base + 2 * DAY_MS, 'day');
    expect(daily.buckets).toHaveLength(2);
    expect(daily.buckets[1]).toMatchObject({
      requests: { total: 4, '1xx': 1, '5xx': 3 },
      meters: { tokens: 7 },
      refusals: { rateLimit: 0, quota: 2 },
    });
    expect(daily.totals).toEqual({
      requests: { total: 7, '1xx': 1, '2xx': 2, '3xx': 0, '4xx': 1, '5xx': 3 },
      meters: { tokens: 12 },
      refusals: { rateLimit: 1, quota: 2 },
    });
  });
});
