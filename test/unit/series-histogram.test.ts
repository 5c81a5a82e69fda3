import fc from 'fast-check';
import { AggregatorRegistry, Histogram, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { SeriesHistogram } from '../../src/observability/series.js';

const BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.1, 1, 10];
const ROUTES = ['a', 'b', 'c'];

/** The same observations into prom-client's Histogram and into a SeriesHistogram. */
function both(observations: ReadonlyArray<[number, number]>) {
  const theirs = new Registry();
  const ours = new Registry();
  const reference = new Histogram({
    name: 'h_seconds',
    help: 'A histogram.',
    labelNames: ['route', 'method'],
    buckets: BUCKETS,
    registers: [theirs],
  });
  const mine = new SeriesHistogram({
    name: 'h_seconds',
    help: 'A histogram.',
    labelNames: ['route', 'method'],
    buckets: BUCKETS,
    registers: [ours],
  });
  for (const [route, value] of observations) {
    const labels = { route: ROUTES[route]!, method: 'GET' };
    reference.observe(labels, value);
    mine.labels(labels).observe(value);
  }
  return { theirs, ours };
}

const observations = fc.array(
  fc.tuple(fc.integer({ min: 0, max: 2 }), fc.double({ min: 0, max: 20, noNaN: true })),
  { maxLength: 50 },
);

describe('SeriesHistogram', () => {
  it('exports what prom-client’s Histogram exports for the same observations: text and JSON (property)', async () => {
    await fc.assert(
      fc.asyncProperty(observations, async (obs) => {
        const { theirs, ours } = both(obs);
        expect(await ours.metrics()).toBe(await theirs.metrics());
        const strip = (json: unknown) => JSON.parse(JSON.stringify(json)) as unknown;
        expect(strip(await ours.getMetricsAsJSON())).toEqual(strip(await theirs.getMetricsAsJSON()));
      }),
      { numRuns: 50 },
    );
  });

  it('aggregates across workers as prom-client’s does', async () => {
    const { theirs, ours } = both([
      [0, 0.0007],
      [1, 0.2],
      [0, 3],
    ]);
    const a = AggregatorRegistry.aggregate([
      await theirs.getMetricsAsJSON(),
      await theirs.getMetricsAsJSON(),
    ]);
    const b = AggregatorRegistry.aggregate([await ours.getMetricsAsJSON(), await ours.getMetricsAsJSON()]);
    expect(await b.metrics()).toBe(await a.metrics());
  });

  it('refuses a label it was not made with, and a value that is not a number', () => {
    const h = new SeriesHistogram({
      name: 'x',
      help: 'x',
      labelNames: ['route'],
      buckets: [1],
      registers: [],
    });
    expect(() => h.labels({ route: 'a', other: 'b' })).toThrow(/not included/);
    expect(() => h.labels({ route: 'a' }).observe(Number.NaN)).toThrow(TypeError);
  });
});
