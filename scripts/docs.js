// Writes docs/configuration.md, docs/problems.md, docs/metrics.md and the README's problem table
// from the built sources (`npm run docs`).
import { readFileSync, writeFileSync } from 'node:fs';
import { configurationMarkdown, problemTable, problemsMarkdown } from '../dist/docs/reference.js';
import { metricsMarkdown } from '../dist/docs/metrics.js';

writeFileSync(new URL('../docs/configuration.md', import.meta.url), configurationMarkdown());
writeFileSync(new URL('../docs/problems.md', import.meta.url), problemsMarkdown());
writeFileSync(new URL('../docs/metrics.md', import.meta.url), metricsMarkdown());
const readmeUrl = new URL('../README.md', import.meta.url);
const readme = readFileSync(readmeUrl, 'utf8');
const start = '<!-- problems:start -->';
const end = '<!-- problems:end -->';
const from = readme.indexOf(start);
const to = readme.indexOf(end);
if (from === -1 || to === -1) throw new Error('README.md has no problems:start/end markers');
writeFileSync(readmeUrl, `${readme.slice(0, from + start.length)}\n${problemTable()}\n${readme.slice(to)}`);
console.log('wrote docs/configuration.md, docs/problems.md, docs/metrics.md and the README problem table');
