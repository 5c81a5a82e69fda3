// Usage history of a key or a tenant (`GET /keys/{id}/usage`, `GET /tenants/{id}/usage`, SPEC §11):
// requests by status class, each meter's sum, and rate-limit and quota refusals per hour or day.
import { barChart, svg } from './chart.js';

export const HOUR = 3_600_000;
export const DAY = 24 * HOUR;
const CLASSES = ['2xx', '3xx', '4xx', '5xx', '1xx'];

const num = (v) => (typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : 0);
const timeOf = (v) => (typeof v === 'number' ? v : typeof v === 'string' ? Date.parse(v) : NaN);

/**
 * The one place that knows the usage API's JSON: `{granularity, buckets: [{start, requests:
 * {'2xx': n, …}, meters: {name: sum}, rateLimited, quotaRejected}]}` → the same, with epoch-ms
 * starts, every class present and numbers only. Anything else in a bucket is ignored; a bucket
 * without a readable start is dropped.
 */
export function parseUsage(json) {
  const list = Array.isArray(json?.buckets) ? json.buckets : Array.isArray(json?.items) ? json.items : [];
  const buckets = [];
  for (const b of list) {
    const start = timeOf(b?.start ?? b?.time ?? b?.from);
    if (!Number.isFinite(start)) continue;
    const requests = {};
    const raw = b.requests && typeof b.requests === 'object' ? b.requests : {};
    for (const c of CLASSES) requests[c] = num(raw[c]);
    // Null-prototype: a meter named `__proto__` is a meter like any other.
    const meters = Object.create(null);
    if (b.meters && typeof b.meters === 'object')
      for (const [name, v] of Object.entries(b.meters))
        meters[name] = num(typeof v === 'object' ? v?.sum : v);
    const refusals = b.refusals && typeof b.refusals === 'object' ? b.refusals : {};
    buckets.push({
      start,
      requests,
      meters,
      rateLimited: num(b.rateLimited ?? b.rate_limited ?? refusals.rateLimit ?? refusals.rateLimited),
      quotaRejected: num(b.quotaRejected ?? b.quota_rejected ?? refusals.quota ?? refusals.quotaRejected),
    });
  }
  buckets.sort((a, b) => a.start - b.start);
  return { granularity: json?.granularity === 'day' ? 'day' : 'hour', buckets };
}

/** Every bucket start of [from, to) at the granularity: UTC hours or UTC days, as the usage API counts. */
export function bucketStarts(from, to, granularity) {
  const step = granularity === 'day' ? DAY : HOUR;
  const out = [];
  for (let t = Math.floor(from / step) * step; t < to && out.length < 2000; t += step) out.push(t);
  return out;
}

/** Buckets placed on the range's grid: a bucket the API left out (no traffic) reads 0. */
export function onGrid(usage, from, to) {
  const step = usage.granularity === 'day' ? DAY : HOUR;
  const starts = bucketStarts(from, to, usage.granularity);
  const byStart = new Map();
  for (const b of usage.buckets) {
    // A bucket off the grid (another alignment) goes into the slot it falls in.
    const slot = starts.findLast((s) => s <= b.start) ?? b.start;
    const into = byStart.get(slot);
    if (!into)
      byStart.set(slot, {
        ...b,
        requests: { ...b.requests },
        meters: Object.assign(Object.create(null), b.meters),
      });
    else {
      for (const c of CLASSES) into.requests[c] += b.requests[c];
      for (const [m, v] of Object.entries(b.meters)) into.meters[m] = (into.meters[m] ?? 0) + v;
      into.rateLimited += b.rateLimited;
      into.quotaRejected += b.quotaRejected;
    }
  }
  const empty = (start) => ({
    start,
    requests: Object.fromEntries(CLASSES.map((c) => [c, 0])),
    meters: Object.create(null),
    rateLimited: 0,
    quotaRejected: 0,
  });
  return { step, buckets: starts.map((s) => byStart.get(s) ?? empty(s)) };
}

const METER_COLORS = ['#0b57d0', '#7b3fb8', '#00796b', '#8a5100', '#b3261e'];

/** Draws the three usage charts and the totals of a parsed usage answer into `root`. */
export function renderUsage(root, usage, range) {
  const { color } = range;
  const { step, buckets } = onGrid(usage, range.from, range.to);
  // The axis spans whole buckets (the API rounds the range out to its hours or UTC days).
  const from = buckets[0]?.start ?? range.from;
  const to = buckets.length ? buckets.at(-1).start + step : range.to;
  const label = (t) =>
    usage.granularity === 'day' ? new Date(t).toLocaleDateString() : new Date(t).toLocaleString();
  const classColor = {
    '1xx': color('--muted'),
    '2xx': color('--c2'),
    '3xx': color('--c3'),
    '4xx': color('--c4'),
    '5xx': color('--c5'),
  };
  barChart(root.querySelector('.usage-requests'), {
    from,
    to,
    step,
    label,
    buckets: buckets.map((b) => ({
      t: b.start,
      parts: CLASSES.map((c) => ({ name: c, value: b.requests[c], color: classColor[c] })),
    })),
  });
  const meterNames = [...new Set(buckets.flatMap((b) => Object.keys(b.meters)))].sort();
  barChart(root.querySelector('.usage-meters'), {
    from,
    to,
    step,
    label,
    buckets: buckets.map((b) => ({
      t: b.start,
      parts: meterNames.map((m, i) => ({
        name: m,
        value: b.meters[m] ?? 0,
        color: METER_COLORS[i % METER_COLORS.length],
      })),
    })),
  });
  const legend = root.querySelector('.usage-meter-legend');
  legend.replaceChildren(
    ...(meterNames.length
      ? meterNames.map((m, i) => {
          const span = document.createElement('span');
          span.textContent = m;
          span.dataset.meter = m;
          span.append(' ');
          const swatch = svg('svg', { width: 10, height: 10, viewBox: '0 0 10 10', 'aria-hidden': 'true' });
          swatch.append(svg('rect', { width: 10, height: 10, fill: METER_COLORS[i % METER_COLORS.length] }));
          span.prepend(swatch, ' ');
          return span;
        })
      : ['No meters in this range.']),
  );
  barChart(root.querySelector('.usage-refusals'), {
    from,
    to,
    step,
    label,
    buckets: buckets.map((b) => ({
      t: b.start,
      parts: [
        { name: 'rate limit', value: b.rateLimited, color: color('--c4') },
        { name: 'quota', value: b.quotaRejected, color: color('--c5') },
      ],
    })),
  });
  const sum = (f) => buckets.reduce((a, b) => a + f(b), 0);
  const rows = [
    ['Requests', sum((b) => CLASSES.reduce((a, c) => a + b.requests[c], 0))],
    ...CLASSES.map((c) => [`Requests ${c}`, sum((b) => b.requests[c])]),
    ...meterNames.map((m) => [`Meter ${m}`, sum((b) => b.meters[m] ?? 0)]),
    ['Rate-limit refusals', sum((b) => b.rateLimited)],
    ['Quota refusals', sum((b) => b.quotaRejected)],
  ];
  root.querySelector('.usage-totals tbody').replaceChildren(
    ...rows.map(([k, v]) => {
      const tr = document.createElement('tr');
      const th = document.createElement('th');
      th.scope = 'row';
      th.textContent = k;
      const td = document.createElement('td');
      td.textContent = String(v);
      td.dataset.total = k;
      tr.append(th, td);
      return tr;
    }),
  );
}
