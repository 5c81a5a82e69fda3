// Hand-drawn SVG charts with a real time axis: a few dozen lines, where a charting library would
// be the console's first dependency (and its largest file) for two chart types.
// Every text goes in through textContent: nothing here parses markup.

const NS = 'http://www.w3.org/2000/svg';

export function svg(tag, attrs = {}, text) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
const STEPS = [
  SECOND,
  2 * SECOND,
  5 * SECOND,
  10 * SECOND,
  15 * SECOND,
  30 * SECOND,
  MINUTE,
  2 * MINUTE,
  5 * MINUTE,
  10 * MINUTE,
  15 * MINUTE,
  30 * MINUTE,
  HOUR,
  2 * HOUR,
  3 * HOUR,
  6 * HOUR,
  12 * HOUR,
  DAY,
  2 * DAY,
  7 * DAY,
  14 * DAY,
];

const two = (n) => String(n).padStart(2, '0');
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** A tick's text in local time: the date for day steps, HH:MM, or HH:MM:SS under a minute. */
export function tickLabel(t, step) {
  const d = new Date(t);
  if (step >= DAY) return `${MONTHS[d.getMonth()]} ${d.getDate()}`;
  const hm = `${two(d.getHours())}:${two(d.getMinutes())}`;
  if (step < MINUTE) return `${hm}:${two(d.getSeconds())}`;
  // Midnight of a multi-day range reads better as its date.
  return d.getHours() === 0 && d.getMinutes() === 0 && step >= HOUR
    ? `${MONTHS[d.getMonth()]} ${d.getDate()}`
    : hm;
}

/** Round times between `from` and `to` (epoch ms), at most `max` of them, in local time. */
export function timeTicks(from, to, max = 6) {
  const span = Math.max(1, to - from);
  const step = STEPS.find((s) => span / s <= max) ?? Math.ceil(span / max / DAY) * DAY;
  // Align to the local clock (a day step starts at local midnight).
  const offset = new Date(from).getTimezoneOffset() * MINUTE;
  let t = Math.ceil((from - offset) / step) * step + offset;
  const ticks = [];
  for (; t <= to; t += step) ticks.push({ t, label: tickLabel(t, step) });
  return ticks;
}

const fmt = (v) => (Number.isInteger(v) || v >= 10 ? v.toFixed(0) : v.toFixed(2));

function frame(el, { from, to, max, width, height }) {
  const pad = { left: 34, right: 6, top: 10, bottom: 18 };
  const x = (t) => pad.left + ((t - from) / Math.max(1, to - from)) * (width - pad.left - pad.right);
  const y = (v) => height - pad.bottom - (v / max) * (height - pad.top - pad.bottom);
  const parts = [
    svg('line', { x1: pad.left, y1: y(0), x2: width - pad.right, y2: y(0), stroke: '#d4d8de' }),
    svg('line', { x1: pad.left, y1: y(max), x2: width - pad.right, y2: y(max), stroke: '#eceef1' }),
    svg(
      'text',
      { x: pad.left - 4, y: y(max) + 4, 'font-size': 10, fill: '#4f5660', 'text-anchor': 'end' },
      fmt(max),
    ),
    svg(
      'text',
      { x: pad.left - 4, y: y(0) + 4, 'font-size': 10, fill: '#4f5660', 'text-anchor': 'end' },
      '0',
    ),
  ];
  const axis = svg('g', { class: 'x-axis' });
  for (const tick of timeTicks(from, to, Math.max(2, Math.floor(width / 80)))) {
    axis.append(
      svg('line', { x1: x(tick.t), y1: y(0), x2: x(tick.t), y2: y(0) + 3, stroke: '#9aa1ab' }),
      svg(
        'text',
        {
          x: x(tick.t),
          y: height - 4,
          'font-size': 10,
          fill: '#4f5660',
          // A label at either edge stays inside the chart.
          'text-anchor': x(tick.t) > width - 24 ? 'end' : x(tick.t) < pad.left + 16 ? 'start' : 'middle',
          'data-t': tick.t,
        },
        tick.label,
      ),
    );
  }
  parts.push(axis);
  el.replaceChildren(...parts);
  return { x, y };
}

function size(el) {
  const box = el.viewBox.baseVal;
  return { width: box?.width || 400, height: box?.height || 160 };
}

/**
 * Lines over time: `series` = [{name, color, points: [[t, v], ...]}], on [from, to]. One polyline per
 * series (a lone reading also gets a dot, which a one-point polyline would not show).
 */
export function lineChart(el, { from, to, series }) {
  const { width, height } = size(el);
  const max = Math.max(1, ...series.flatMap((s) => s.points.map(([, v]) => v ?? 0)));
  const { x, y } = frame(el, { from, to, max, width, height });
  for (const s of series) {
    const points = s.points.filter(([, v]) => v !== null && v !== undefined);
    const line = svg('polyline', {
      fill: 'none',
      stroke: s.color,
      'stroke-width': 2,
      'data-series': s.name,
      points: points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(' '),
    });
    line.append(svg('title', {}, s.name));
    el.append(line);
    if (points.length === 1)
      el.append(svg('circle', { cx: x(points[0][0]), cy: y(points[0][1]), r: 2.5, fill: s.color }));
  }
}

/**
 * Stacked bars per time bucket: `buckets` = [{t, parts: [{name, value, color}]}], each `step` ms
 * wide, on [from, to]. Each bar piece has a `<title>` (its name, bucket and value) for a hover.
 */
export function barChart(el, { from, to, step, buckets, label = (t) => new Date(t).toLocaleString() }) {
  const { width, height } = size(el);
  const max = Math.max(1, ...buckets.map((b) => b.parts.reduce((a, p) => a + p.value, 0)));
  const { x, y } = frame(el, { from, to, max, width, height });
  const w = Math.max(1, (x(from + step) - x(from)) * 0.8);
  for (const b of buckets) {
    let base = 0;
    for (const p of b.parts) {
      if (p.value <= 0) continue;
      const rect = svg('rect', {
        x: (x(b.t) + (x(b.t + step) - x(b.t) - w) / 2).toFixed(1),
        y: y(base + p.value).toFixed(1),
        width: w.toFixed(1),
        height: Math.max(0.5, y(base) - y(base + p.value)).toFixed(1),
        fill: p.color,
        'data-series': p.name,
        'data-value': p.value,
      });
      rect.append(svg('title', {}, `${p.name} · ${label(b.t)}: ${p.value}`));
      el.append(rect);
      base += p.value;
    }
  }
}
