import { describe, expect, it } from 'vitest';
import { readFileSync, readdirSync } from 'node:fs';
import { metricsMarkdown, registeredMetrics } from '../../src/docs/metrics.js';

const HISTOGRAM_SERIES = /_(bucket|sum|count)$/;

describe('docs/metrics.md cannot drift from the registry (14.6)', () => {
  it('docs/metrics.md is generated from the registry (run `npm run docs`)', () => {
    expect(readFileSync('docs/metrics.md', 'utf8')).toBe(metricsMarkdown());
  });

  it('docs/metrics.md names every registered metric and no other', () => {
    const rows = readFileSync('docs/metrics.md', 'utf8').matchAll(
      /^\| `([^`]+)` \| (counter|gauge|histogram|summary) \|/gm,
    );
    const documented = [...rows].map(([, name]) => name!).sort();
    const registered = registeredMetrics()
      .map((m) => m.name)
      .sort();
    expect(documented).toEqual(registered);
  });

  it('README.md and docs/*.md name only metrics that exist', () => {
    const names = new Set(registeredMetrics().map((m) => m.name));
    const files = ['README.md', ...readdirSync('docs').map((f) => `docs/${f}`)].filter((f) =>
      f.endsWith('.md'),
    );
    const unknown: string[] = [];
    for (const file of files)
      for (const [name] of readFileSync(file, 'utf8').matchAll(/\btollgate_[a-z0-9_]+[a-z0-9]/g)) {
        const base = name.replace(HISTOGRAM_SERIES, '');
        if (!names.has(name) && !names.has(base)) unknown.push(`${file}: ${name}`);
      }
    expect(unknown).toEqual([]);
  });

  it('every gateway metric is a counter named _total or not named _total at all', () => {
    for (const m of registeredMetrics().filter((x) => x.name.startsWith('tollgate_')))
      expect({ name: m.name, counter: m.type === 'counter' }).toEqual({
        name: m.name,
        counter: m.name.endsWith('_total'),
      });
  });
});
