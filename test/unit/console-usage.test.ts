import { describe, expect, it } from 'vitest';
// @ts-expect-error -- the console is plain JavaScript, served as is
import { bucketStarts, onGrid, parseUsage } from '../../console/usage.js';
// @ts-expect-error -- the console is plain JavaScript, served as is
import { timeTicks } from '../../console/chart.js';

const HOUR = 3_600_000;
const T0 = Date.UTC(2030, 0, 1, 10);

describe("the console's usage parsing (the one function that knows the usage API's JSON)", () => {
  it('reads buckets: every status class, meters, refusals; epoch-ms starts, sorted', () => {
    const u = parseUsage({
      granularity: 'hour',
      buckets: [
        {
          start: new Date(T0 + HOUR).toISOString(),
          requests: { '2xx': 3, '4xx': 1 },
          meters: { tokens: 120 },
          rateLimited: 1,
          quotaRejected: 0,
        },
        {
          start: new Date(T0).toISOString(),
          requests: { '5xx': 2 },
          meters: {},
          rateLimited: 0,
          quotaRejected: 2,
        },
      ],
    });
    expect(u.granularity).toBe('hour');
    expect(u.buckets.map((b: { start: number }) => b.start)).toEqual([T0, T0 + HOUR]);
    expect(u.buckets[1]).toEqual({
      start: T0 + HOUR,
      requests: { '1xx': 0, '2xx': 3, '3xx': 0, '4xx': 1, '5xx': 0 },
      meters: Object.assign(Object.create(null), { tokens: 120 }),
      rateLimited: 1,
      quotaRejected: 0,
    });
    expect(u.buckets[0].quotaRejected).toBe(2);
  });

  it('turns anything it cannot read into 0 or drops it, never throws', () => {
    for (const junk of [null, undefined, 42, 'x', [], { buckets: 'no' }, { buckets: [null, 1, 'a', {}] }])
      expect(parseUsage(junk).buckets).toEqual([]);
    const u = parseUsage({
      granularity: 'week',
      buckets: [
        {
          start: T0,
          requests: { '2xx': -5, '4xx': 'many', '5xx': Infinity },
          meters: JSON.parse('{"__proto__": 7, "tokens": {"sum": 9}, "bad": "x"}'),
          rateLimited: NaN,
        },
      ],
    });
    expect(u.granularity).toBe('hour');
    const [b] = u.buckets;
    expect(b.requests).toEqual({ '1xx': 0, '2xx': 0, '3xx': 0, '4xx': 0, '5xx': 0 });
    expect(b.rateLimited).toBe(0);
    expect(b.quotaRejected).toBe(0);
    expect(b.meters.tokens).toBe(9);
    expect(b.meters.bad).toBe(0);
    // A meter named `__proto__` is a meter, not a prototype.
    expect(Object.hasOwn(b.meters, '__proto__')).toBe(true);
    expect(b.meters['__proto__']).toBe(7);
  });

  it('puts buckets on the range grid: missing hours read 0, a day range has one bucket per day', () => {
    const u = parseUsage({ buckets: [{ start: T0 + HOUR, requests: { '2xx': 4 }, meters: { tokens: 5 } }] });
    const grid = onGrid(u, T0, T0 + 3 * HOUR);
    expect(grid.step).toBe(HOUR);
    expect(grid.buckets.map((b: { start: number }) => b.start)).toEqual([T0, T0 + HOUR, T0 + 2 * HOUR]);
    expect(grid.buckets.map((b: { requests: Record<string, number> }) => b.requests['2xx'])).toEqual([
      0, 4, 0,
    ]);
    expect(bucketStarts(T0, T0 + 7 * 24 * HOUR, 'day')).toHaveLength(8);
  });

  it('draws a time axis of round, evenly spaced, in-range ticks', () => {
    for (const [from, span] of [
      [T0 + 1234, 60_000],
      [T0, 5 * 60_000],
      [T0, 24 * HOUR],
      [T0, 30 * 24 * HOUR],
    ] as const) {
      const ticks = timeTicks(from, from + span, 6) as Array<{ t: number; label: string }>;
      expect(ticks.length).toBeGreaterThanOrEqual(2);
      expect(ticks.length).toBeLessThanOrEqual(7);
      const step = ticks[1]!.t - ticks[0]!.t;
      ticks.forEach((k, i) => {
        expect(k.t).toBeGreaterThanOrEqual(from);
        expect(k.t).toBeLessThanOrEqual(from + span);
        expect(k.t - ticks[0]!.t).toBe(i * step);
        expect(k.label).not.toBe('');
      });
    }
  });
});
