// Writes docs/configuration.md, docs/problems.md and docs/metrics.md from the built sources (`npm run docs`).
import { writeFileSync } from 'node:fs';
import { configurationMarkdown, problemsMarkdown } from '../dist/docs/reference.js';
import { metricsMarkdown } from '../dist/docs/metrics.js';

writeFileSync(new URL('../docs/configuration.md', import.meta.url), configurationMarkdown());
writeFileSync(new URL('../docs/problems.md', import.meta.url), problemsMarkdown());
writeFileSync(new URL('../docs/metrics.md', import.meta.url), metricsMarkdown());
console.log('wrote docs/configuration.md, docs/problems.md and docs/metrics.md');
