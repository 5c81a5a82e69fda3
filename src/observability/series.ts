import type { Registry } from 'prom-client';

/**
 * One labelled series of a `SeriesHistogram`: plain numbers, updated per request without any
 * label work (prom-client hashes and validates the label object on every `observe`, ~0.6 µs).
 */
export class HistogramSeries {
  readonly labels: Readonly<Record<string, string>>;
  /** Observations per bucket (not cumulative), the last one past every bound (+Inf only). */
  readonly counts: Float64Array;
  sum = 0;
  count = 0;
  readonly #bounds: readonly number[];

  constructor(labels: Readonly<Record<string, string>>, bounds: readonly number[]) {
    this.labels = labels;
    this.#bounds = bounds;
    this.counts = new Float64Array(bounds.length + 1);
  }

  observe(value: number): void {
    if (!Number.isFinite(value)) throw new TypeError(`Value is not a valid number: ${value}`);
    const bounds = this.#bounds;
    let b = 0;
    while (b < bounds.length && value > bounds[b]!) b++;
    this.counts[b]!++;
    this.sum += value;
    this.count++;
  }
}

interface ValuePair {
  labels: Record<string, string | number>;
  sharedLabels: Readonly<Record<string, string>>;
  value: number;
  metricName: string;
  /** As prom-client's buckets carry it (null: this gateway keeps none). */
  exemplar?: null;
}

/**
 * A Prometheus histogram whose series are plain numbers (`HistogramSeries`), published as
 * prom-client publishes its own `Histogram` — the same `get()` / `getForPromString()` shapes, so
 * the registry's text format, the cluster aggregator and the metrics docs read it alike.
 * Hand-written for the request path's cost; prom-client still formats and aggregates.
 */
export class SeriesHistogram {
  readonly name: string;
  readonly help: string;
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  readonly labelNames: readonly string[];
  readonly upperBounds: readonly number[];
  #series = new Map<string, HistogramSeries>();

  constructor(o: {
    name: string;
    help: string;
    labelNames: readonly string[];
    buckets: readonly number[];
    registers: readonly Registry[];
  }) {
    this.name = o.name;
    this.help = o.help;
    this.labelNames = o.labelNames;
    this.upperBounds = [...o.buckets].sort((a, b) => a - b);
    for (const r of o.registers)
      r.registerMetric(this as unknown as Parameters<Registry['registerMetric']>[0]);
  }

  /** The series of these label values (made on first use; callers keep it). */
  labels(labels: Readonly<Record<string, string>>): HistogramSeries {
    for (const name of Object.keys(labels))
      if (!this.labelNames.includes(name))
        throw new Error(`Added label "${name}" is not included in initial labelset`);
    const key = this.labelNames.map((n) => labels[n] ?? '').join('\u0000');
    let series = this.#series.get(key);
    if (series === undefined) {
      series = new HistogramSeries({ ...labels }, this.upperBounds);
      this.#series.set(key, series);
    }
    return series;
  }

  reset(): void {
    this.#series = new Map();
  }

  getForPromString(): Promise<{
    name: string;
    help: string;
    type: string;
    values: ValuePair[];
    aggregator: string;
  }> {
    const values: ValuePair[] = [];
    const bucket = `${this.name}_bucket`;
    for (const s of this.#series.values()) {
      let acc = 0;
      this.upperBounds.forEach((le, i) => {
        acc += s.counts[i]!;
        values.push({
          labels: { le },
          sharedLabels: s.labels,
          value: acc,
          metricName: bucket,
          exemplar: null,
        });
      });
      values.push(
        {
          labels: { le: '+Inf' },
          sharedLabels: s.labels,
          value: s.count,
          metricName: bucket,
          exemplar: null,
        },
        { labels: {}, sharedLabels: s.labels, value: s.sum, metricName: `${this.name}_sum` },
        { labels: {}, sharedLabels: s.labels, value: s.count, metricName: `${this.name}_count` },
      );
    }
    return Promise.resolve({
      name: this.name,
      help: this.help,
      type: this.type,
      values,
      aggregator: this.aggregator,
    });
  }

  /** What prom-client's `Histogram#get` answers: each value's labels with the series' own. */
  async get(): Promise<{
    name: string;
    help: string;
    type: string;
    values: Array<Omit<ValuePair, 'sharedLabels'>>;
    aggregator: string;
  }> {
    const data = await this.getForPromString();
    return {
      ...data,
      values: data.values.map(({ labels, sharedLabels, ...rest }) => ({
        ...rest,
        labels: { ...labels, ...sharedLabels },
      })),
    };
  }
}
