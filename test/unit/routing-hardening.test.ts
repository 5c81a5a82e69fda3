import { describe, expect, it } from 'vitest';
import { validateConfig } from '../../src/config/load.js';
import { runCli } from '../../src/cli/index.js';
import {
  afterSegmentPrefix,
  normalizePath,
  prefixSegments,
  targetAuthority,
  withoutParams,
} from '../../src/core/path.js';
import { hostFieldCount, isValidHost } from '../../src/gateway/host.js';
import { RouteTable, allowedMethods } from '../../src/gateway/route-table.js';
import type { ConfigInput, RouteConfig } from '../../src/config/schema.js';
import { Problem } from '../../src/problems/problem.js';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const T1 = 'http://127.0.0.1:9001';
const T2 = 'http://127.0.0.1:9002';

function warningsOf(config: ConfigInput) {
  const result = validateConfig(config);
  expect(result.ok).toBe(true);
  return result.warnings.filter((w) => w.message.includes('segment prefix'));
}

describe('routing hardening: matching keys', () => {
  const route = (path: string) =>
    ({ config: { id: path, path } as RouteConfig, stages: [], ...allowedMethods(undefined) }) as const;

  it('matches case-insensitively by default and ignores ;params, one lookup per segment', () => {
    const table = new RouteTable([route('/app'), route('/app/orders'), route('/V1/Mixed')]);
    for (const path of [
      '/app/ORDERS/7',
      '/APP/orders',
      '/app/orders;jsessionid=1/7',
      '/app/;x/orders',
      '/app;a/orders;b',
    ])
      expect(table.match(path)?.config.path, path).toBe('/app/orders');
    expect(table.match('/v1/mixed/x')?.config.path).toBe('/V1/Mixed');
    expect(table.match('/app/ordersx')?.config.path).toBe('/app');
  });

  it('routing.caseSensitive keeps exact case (params are still ignored)', () => {
    const table = new RouteTable([route('/app'), route('/app/orders')], { caseSensitive: true });
    expect(table.match('/app/ORDERS/7')?.config.path).toBe('/app');
    expect(table.match('/app/orders;x/7')?.config.path).toBe('/app/orders');
  });

  it.each([
    ['/v1/orders;jsessionid=1/7', '/v1/orders/7'],
    ['/a;x', '/a'],
    ['/;x', '/'],
    ['/a/;x/', '/a'],
    ['/a;/b', '/a/b'],
  ])('withoutParams(%s) = %s', (input, out) => {
    expect(withoutParams(input)).toBe(out);
  });

  it.each([
    ['/v1/orders', '/v1', '/orders'],
    ['/V1/orders', '/v1', '/orders'],
    ['/v1;x/orders', '/v1', '/orders'],
    ['/;x/v1/orders', '/v1', '/orders'],
    ['/v1', '/v1', ''],
    ['/v1;x', '/v1', ''],
    ['/v1/', '/v1', '/'],
    ['/Api/V1/x', '/api/v1', '/x'],
    ['/v2/orders', '/v1', undefined],
    ['/v1x/orders', '/v1', undefined],
    ['/api', '/api/v1', undefined],
  ])('afterSegmentPrefix(%s, %s) = %s', (path, prefix, rest) => {
    expect(afterSegmentPrefix(path, prefixSegments(prefix))).toBe(rest);
  });

  it('refuses dot segments with parameters; keeps other ;params as sent', () => {
    for (const p of ['/a/..;/b', '/a/.;x/b', '/a/%2e%2e;x/b', '/a/..;'])
      expect(() => normalizePath(p), p).toThrow(Problem);
    expect(normalizePath('/a/b;x/./c;y')).toBe('/a/b;x/c;y');
    expect(normalizePath('/a/..x;y/b')).toBe('/a/..x;y/b');
  });

  it('reads the authority of an absolute-form target only', () => {
    expect(targetAuthority('http://a.example:8080/x?y')).toBe('a.example:8080');
    expect(targetAuthority('HTTPS://a.example?y')).toBe('a.example');
    expect(targetAuthority('http://user@a.example/')).toBe('user@a.example');
    expect(targetAuthority('/x')).toBeUndefined();
    expect(targetAuthority('*')).toBeUndefined();
  });

  it('validates Host as an RFC 3986 authority and counts Host field lines', () => {
    for (const ok of [
      'a',
      'a.example',
      'a.example:1',
      '127.0.0.1:65535',
      '[::1]',
      '[::ffff:1.2.3.4]:80',
      'a%41b',
      "a!$&'()*+,;=b",
    ])
      expect(isValidHost(ok), ok).toBe(true);
    for (const bad of [
      '',
      'a/b',
      'a?b',
      'a#b',
      'a@b',
      'a b',
      'a:',
      'a:123456',
      'a:b',
      '[::1',
      '[x]',
      '[::1]x',
      '%g0',
      'a\\b',
      ':80',
    ])
      expect(isValidHost(bad), bad).toBe(false);
    expect(hostFieldCount(['Host', 'a', 'X', 'y', 'HOST', 'b'])).toBe(2);
    expect(hostFieldCount(['host', 'a'])).toBe(1);
    expect(hostFieldCount([])).toBe(0);
  });
});

describe('routing hardening: config validation', () => {
  it('two routes whose paths differ only in case are a validation error unless routing.caseSensitive', () => {
    const routes = [
      { id: 'a', path: '/v1/orders', mock: {} },
      { id: 'b', path: '/v1/Orders', mock: {} },
    ];
    const bad = validateConfig({ routes });
    expect(bad.ok).toBe(false);
    if (!bad.ok) {
      expect(bad.issues.map((i) => i.path)).toEqual(['routes[1].path']);
      expect(bad.issues[0]!.message).toContain('routing.caseSensitive');
    }
    expect(validateConfig({ routing: { caseSensitive: true }, routes }).ok).toBe(true);
  });

  it('a route path with ";" is a validation error (it could never match)', () => {
    const result = validateConfig({ routes: [{ id: 'a', path: '/v1/orders;x', mock: {} }] });
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.issues[0]!.path).toBe('routes[0].path');
  });

  it('routing.caseSensitive defaults to false', () => {
    const result = validateConfig({});
    expect(result.ok && result.config.routing.caseSensitive).toBe(false);
  });
});

describe('routing hardening: validate warns about weaker routes in front of stronger ones', () => {
  const upstream = (targets = [T1]) => ({ targets });

  it('names both routes when a public route is a segment prefix of a protected one on the same targets', () => {
    const warnings = warningsOf({
      routes: [
        { id: 'app', path: '/app', auth: 'none', upstream: upstream([T1, T2]) },
        { id: 'orders', path: '/app/Orders', auth: { methods: ['apiKey'] }, upstream: upstream([T2, T1]) },
      ],
    });
    expect(warnings).toHaveLength(1);
    expect(warnings[0]!.path).toBe('routes[0].path');
    expect(warnings[0]!.message).toContain('"app"');
    expect(warnings[0]!.message).toContain('"orders"');
    expect(warnings[0]!.message).toContain('public');
  });

  it('warns when the prefix route has fewer scopes, not when its scopes are a superset', () => {
    const routes = (outer: string[]) => [
      {
        id: 'all',
        path: '/api',
        auth: { methods: ['apiKey' as const], scopes: outer },
        upstream: upstream(),
      },
      {
        id: 'admin',
        path: '/api/admin/users',
        auth: { methods: ['apiKey' as const], scopes: ['admin'] },
        upstream: upstream(),
      },
    ];
    expect(warningsOf({ routes: routes(['read']) })).toHaveLength(1);
    expect(warningsOf({ routes: routes([]) })[0]!.message).toContain('any credential');
    expect(warningsOf({ routes: routes(['admin', 'read']) })).toEqual([]);
  });

  it('does not warn for other targets, for mock routes, or for a stronger route in front', () => {
    expect(
      warningsOf({
        routes: [
          { id: 'app', path: '/app', auth: 'none', upstream: upstream([T1]) },
          { id: 'orders', path: '/app/orders', auth: { methods: ['apiKey'] }, upstream: upstream([T2]) },
          { id: 'docs', path: '/docs', mock: {} },
          { id: 'secret', path: '/docs/secret', auth: { methods: ['apiKey'] }, upstream: upstream([T1]) },
          { id: 'strong', path: '/s', auth: { methods: ['apiKey'], scopes: ['x'] }, upstream: upstream() },
          { id: 'weak', path: '/s/open', auth: 'none', upstream: upstream() },
        ],
      }),
    ).toEqual([]);
  });

  it('routing.caseSensitive: paths that differ in case are not prefixes of each other', () => {
    expect(
      warningsOf({
        routing: { caseSensitive: true },
        routes: [
          { id: 'app', path: '/APP', auth: 'none', upstream: upstream() },
          { id: 'orders', path: '/app/orders', auth: { methods: ['apiKey'] }, upstream: upstream() },
        ],
      }),
    ).toEqual([]);
  });

  it('`tollgate validate` prints the warning and still exits 0', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-routing-'));
    try {
      const file = join(dir, 'gateway.yaml');
      writeFileSync(
        file,
        `routes:
  - { id: app, path: /app, auth: none, upstream: { targets: ["${T1}"] } }
  - { id: orders, path: /app/orders, auth: { methods: [apiKey] }, upstream: { targets: ["${T1}"] } }
`,
      );
      const err: string[] = [];
      const code = await runCli(['validate', '--config', file], {
        out: () => undefined,
        err: (l) => err.push(l),
        env: {},
      });
      expect(code).toBe(0);
      expect(
        err.some((l) => /^[^ ]*:\d+:\d+: warning: routes\[0\]\.path:/.test(l) && l.includes('"orders"')),
      ).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
