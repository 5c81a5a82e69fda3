import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { parseConfigText, validateConfig, loadConfigFile } from '../../src/config/load.js';
import { interpolateString } from '../../src/config/interpolate.js';
import { formatPath } from '../../src/config/issues.js';

const minimalRoute = { id: 'demo', path: '/demo', mock: { body: { ok: true } } };

describe('config schema', () => {
  it('applies defaults and freezes the result', () => {
    const r = validateConfig({ routes: [minimalRoute] });
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.config.listen).toEqual({ host: '0.0.0.0', port: 8080 });
    expect(r.config.limits.bodyBytes).toBe(1_048_576);
    expect(r.config.routes[0]!.auth).toBe('none');
    expect(r.config.routes[0]!.upstreamErrors).toBe('rewrite');
    expect(Object.isFrozen(r.config.routes[0])).toBe(true);
  });

  it('reports every problem with its path', () => {
    const r = validateConfig({
      listen: { port: 'eighty' },
      routes: [
        minimalRoute,
        { id: 'bad id!', path: 'no-slash', upstream: { targets: ['ftp://x'] } },
        {
          id: 'r3',
          path: '/r3',
          mock: {},
          rateLimits: [{ name: 'x', by: 'moon', limit: 0, windowSec: 1 }],
          extra: 1,
        },
      ],
    });
    expect(r.ok).toBe(false);
    if (r.ok) return;
    const paths = r.issues.map((i) => i.path);
    expect(paths).toContain('listen.port');
    expect(paths).toContain('routes[1].id');
    expect(paths).toContain('routes[1].path');
    expect(paths).toContain('routes[1].upstream.targets[0]');
    expect(paths).toContain('routes[1].auth');
    expect(paths).toContain('routes[2].rateLimits[0].by');
    expect(paths).toContain('routes[2].extra');
    const limit = r.issues.find((i) => i.path === 'routes[2].rateLimits[0].limit');
    expect(limit?.message).toBe('must be a positive integer');
  });

  it('requires exactly one of upstream, mock and gone, and auth on upstream routes', () => {
    const r = validateConfig({
      routes: [
        { id: 'a', path: '/a' },
        { id: 'b', path: '/b', mock: {}, gone: { redirectEndpoint: '/x', sunset: '2026-01-01T00:00:00Z' } },
        { id: 'c', path: '/c', upstream: { targets: ['http://127.0.0.1:1'] } },
      ],
    });
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.issues).toEqual(
      expect.arrayContaining([
        { path: 'routes[0]', message: 'needs exactly one of upstream, mock or gone' },
        { path: 'routes[1]', message: 'needs exactly one of upstream, mock or gone' },
        {
          path: 'routes[2].auth',
          message: expect.stringContaining('is required on a route with an upstream'),
        },
      ]),
    );
  });

  it('refuses duplicate route ids and paths, and a stripPrefix that is not a prefix', () => {
    const r = validateConfig({
      routes: [
        minimalRoute,
        { ...minimalRoute },
        {
          id: 'x',
          path: '/x',
          auth: 'none',
          upstream: { targets: ['http://127.0.0.1:1'], stripPrefix: '/y' },
        },
      ],
    });
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.issues.map((i) => i.path)).toEqual(
      expect.arrayContaining(['routes[1].id', 'routes[1].path', 'routes[2].upstream.stripPrefix']),
    );
  });

  it('applies PORT, REDIS_URL and LOG_LEVEL from the environment', () => {
    const r = validateConfig(
      { routes: [minimalRoute] },
      { PORT: '9999', REDIS_URL: 'redis://127.0.0.1:7000', LOG_LEVEL: 'debug' },
    );
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.config.listen.port).toBe(9999);
    expect(r.config.redis?.url).toBe('redis://127.0.0.1:7000');
    expect(r.config.logging.level).toBe('debug');
    const bad = validateConfig({}, { PORT: 'x' });
    expect(bad.ok).toBe(false);
    // Nothing a typo could turn into another port or a silently ignored level.
    for (const env of [{ PORT: '  ' }, { PORT: '1e3' }, { PORT: '0x50' }, { LOG_LEVEL: 'verbose' }]) {
      const r2 = validateConfig({ routes: [minimalRoute] }, env);
      expect(r2.ok ? [] : r2.issues.map((i) => i.path)).toEqual([`${Object.keys(env)[0]} (environment)`]);
    }
    const weak = validateConfig({ routes: [minimalRoute] }, { TOLLGATE_SECRET_KEY: 'short' });
    expect(weak.warnings.map((w) => w.path)).toEqual(['TOLLGATE_SECRET_KEY (environment)']);
    const upper = validateConfig({ routes: [minimalRoute] }, { LOG_LEVEL: 'DEBUG' });
    expect(upper.ok && upper.config.logging.level).toBe('debug');
  });

  it('formats paths like the SPEC', () => {
    expect(formatPath(['routes', 2, 'rateLimits', 0, 'limit'])).toBe('routes[2].rateLimits[0].limit');
    expect(formatPath(['plans', 'pro plan', 'quota'])).toBe('plans["pro plan"].quota');
  });
});

describe('interpolation', () => {
  const env = { SET: 'value', EMPTY: '', PORT: '9090' };
  const run = (s: string) => {
    const report = { errors: [], warnings: [] } as {
      errors: { path: string; message: string }[];
      warnings: { path: string; message: string }[];
    };
    return { ...interpolateString(s, env, 'p', report), report };
  };

  it('replaces ${VAR}, ${VAR:-default}, ${VAR-default} and $$', () => {
    expect(run('a-${SET}-b').value).toBe('a-value-b');
    expect(run('${MISSING:-fallback}').value).toBe('fallback');
    expect(run('${EMPTY:-fallback}').value).toBe('fallback');
    expect(run('${EMPTY-fallback}').value).toBe('');
    expect(run('${MISSING-fallback}').value).toBe('fallback');
    expect(run('cost: $$5').value).toBe('cost: $5');
  });

  it('warns on an unset variable and fails on ${VAR:?message}', () => {
    const unset = run('${MISSING}');
    expect(unset.value).toBe('');
    expect(unset.report.warnings[0]?.message).toContain('MISSING is not set');
    const required = run('${MISSING:?set the token}');
    expect(required.report.errors[0]).toEqual({
      path: 'p',
      message: 'environment variable MISSING is required: set the token',
    });
  });

  it('types unquoted scalars after substitution and keeps quoted ones strings', () => {
    const r = parseConfigText(
      [
        'listen:',
        '  port: ${PORT}',
        'limits: { bodyBytes: "${PORT}" }',
        'admin:',
        '  tokens: ["${TOKEN}"]',
        'routes:',
        '  - { id: demo, path: /demo, mock: { body: "${PORT}" } }',
      ].join('\n'),
      { PORT: '9090', TOKEN: '1234567890123456' },
    );
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.config.listen.port).toBe(9090);
    // A quoted reference in a number field is read as a number by the schema.
    expect(r.config.limits.bodyBytes).toBe(9090);
    expect(r.config.admin?.tokens).toEqual(['1234567890123456']);
    expect(r.config.routes[0]!.mock?.body).toBe('9090');
  });

  it('cannot change the structure of the file through a value', () => {
    const r = parseConfigText('routes:\n  - { id: demo, path: /demo, mock: { body: "${EVIL}" } }\n', {
      EVIL: '"}, gone: {x: 1',
    });
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.config.routes[0]!.mock?.body).toBe('"}, gone: {x: 1');
  });

  it('reports YAML syntax errors with their line', () => {
    const r = parseConfigText('routes:\n  - id: [unclosed\n');
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.issues[0]!.path).toMatch(/^line \d+/);
  });

  it('reads JSON files too', () => {
    const r = parseConfigText(JSON.stringify({ routes: [minimalRoute] }));
    expect(r.ok).toBe(true);
  });
});

describe('shipped configs', () => {
  it('config/gateway.yaml validates', async () => {
    const r = await loadConfigFile('config/gateway.yaml', {});
    expect(r.ok).toBe(true);
  });

  it('the SPEC §2 example validates as written', async () => {
    const r = await loadConfigFile('config/spec-example.yaml', {
      ADMIN_TOKEN: 'an-admin-token-of-some-length',
    });
    if (!r.ok) throw new Error(JSON.stringify(r.issues));
    expect(r.config.routes.map((x) => x.id)).toEqual(['orders', 'legacy', 'demo']);
    expect(readFileSync('config/spec-example.yaml', 'utf8')).toContain('selfService: { path: /v1/keys }');
    // Its signed route needs no TOLLGATE_SECRET_KEY to validate or start, only to create signed keys.
    expect(r.warnings.map((w) => w.path)).toContain('routes[0].auth.hmac');
  });
});
