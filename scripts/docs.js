// Writes docs/configuration.md and docs/problems.md from the built sources (`npm run docs`).
import { writeFileSync } from 'node:fs';
import { configurationMarkdown, problemsMarkdown } from '../dist/docs/reference.js';

writeFileSync(new URL('../docs/configuration.md', import.meta.url), configurationMarkdown());
writeFileSync(new URL('../docs/problems.md', import.meta.url), problemsMarkdown());
console.log('wrote docs/configuration.md and docs/problems.md');
