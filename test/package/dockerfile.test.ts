import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

// No container runtime on the CI machine: the Dockerfile's promises are checked as text.
const dockerfile = readFileSync(join(import.meta.dirname, '..', '..', 'Dockerfile'), 'utf8');
const lines = dockerfile.split('\n').filter((l) => !l.trim().startsWith('#'));
const runtime = lines.slice(lines.findLastIndex((l) => l.startsWith('FROM ')));

describe('the Dockerfile', () => {
  it('builds and runs on Node 24 LTS', () => {
    const froms = lines.filter((l) => l.startsWith('FROM '));
    expect(froms.length).toBeGreaterThan(0);
    for (const f of froms) expect(f).toMatch(/^FROM node:24-/);
  });

  it('leaves the app files owned by root (read-only to the runtime user) and runs as node', () => {
    expect(runtime.filter((l) => l.startsWith('COPY')).length).toBeGreaterThan(3);
    expect(runtime.join('\n')).not.toMatch(/--chown|chmod|chown/);
    const user = runtime.findIndex((l) => l.startsWith('USER '));
    expect(runtime[user]).toBe('USER node');
    // Nothing is copied or run after switching user (it would be the user's to change).
    expect(runtime.slice(user).filter((l) => /^(COPY|ADD|RUN)\b/.test(l))).toEqual([]);
  });

  it('points the CLI at its config with TOLLGATE_CONFIG, not a --config argument', () => {
    expect(runtime).toContain('ENV TOLLGATE_CONFIG=/app/config/gateway.yaml');
    expect(runtime.join('\n')).not.toContain('--config');
  });
});
