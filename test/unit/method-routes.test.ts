import { describe, expect, it } from 'vitest';
import { validateConfig } from '../../src/config/load.js';
import type { ConfigInput, RouteConfig } from '../../src/config/schema.js';
import { RouteTable, allowedMethods, routeFor } from '../../src/gateway/route-table.js';

const T1 = 'http://127.0.0.1:9001';

const route = (id: string, path: string, methods?: string[]) =>
  ({
    config: { id, path, methods } as RouteConfig,
    stages: [],
    ...allowedMethods(methods),
  }) as const;

describe('per-method routes: the route table (SPEC §9)', () => {
  const table = new RouteTable([
    route('docs-write', '/v1/documents', ['POST', 'PUT']),
    route('docs-read', '/v1/documents', ['GET']),
    route('v1', '/v1'),
    route('one', '/one', ['GET']),
  ]);

  it('one path lookup, then the method picks the route', () => {
    const entry = table.lookup('/V1/Documents;x/7')!;
    expect(routeFor(entry, 'POST')?.config.id).toBe('docs-write');
    expect(routeFor(entry, 'PUT')?.config.id).toBe('docs-write');
    expect(routeFor(entry, 'GET')?.config.id).toBe('docs-read');
    expect(routeFor(entry, 'HEAD')?.config.id).toBe('docs-read');
    expect(routeFor(entry, 'DELETE')).toBeUndefined();
    expect(table.match('/v1/documents/7', 'GET')?.config.id).toBe('docs-read');
    expect(table.match('/v1/documents/7', 'DELETE')).toBeUndefined();
    // A method no route of the longest path takes is 405 there, never a fall back to a shorter prefix.
    expect(table.match('/v1/documents', 'PATCH')).toBeUndefined();
    expect(table.match('/v1/other', 'PATCH')?.config.id).toBe('v1');
  });

  it('Allow of a shared path is the union of its routes; a single route keeps its own', () => {
    expect(table.lookup('/v1/documents')!.allow).toBe('POST, PUT, GET, HEAD');
    expect(table.lookup('/one')!.allow).toBe('GET, HEAD');
    expect(table.lookup('/v1/x')!.allow).toBe('GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS');
    expect(routeFor(table.lookup('/v1/x')!, 'TRACE')).toBeUndefined();
    expect(table.size).toBe(4);
  });
});

describe('per-method routes: config validation', () => {
  const up = (id: string, path: string, methods?: string[]) => ({
    id,
    path,
    ...(methods ? { methods } : {}),
    auth: 'none' as const,
    upstream: { targets: [T1] },
  });
  const issues = (routes: unknown[], extra: Partial<ConfigInput> = {}) => {
    const r = validateConfig({ ...extra, routes });
    return r.ok ? [] : r.issues;
  };

  it('disjoint methods on one path are valid', () => {
    expect(issues([up('a', '/v1/documents', ['POST']), up('b', '/v1/documents', ['GET', 'DELETE'])])).toEqual(
      [],
    );
  });

  it('overlapping methods are an error at routes[i].methods naming both routes and their paths', () => {
    const found = issues([up('a', '/v1/documents', ['POST', 'GET']), up('b', '/v1/Documents', ['get'])]);
    expect(found.map((i) => i.path)).toEqual(['routes[1].methods']);
    expect(found[0]!.message).toContain('routes[0]');
    expect(found[0]!.message).toContain('"/v1/documents"');
    expect(found[0]!.message).toContain('"/v1/Documents"');
    expect(found[0]!.message).toContain('GET');
  });

  it('HEAD counts with GET', () => {
    const found = issues([up('a', '/d', ['GET']), up('b', '/d', ['HEAD'])]);
    expect(found.map((i) => i.path)).toEqual(['routes[1].methods']);
    expect(found[0]!.message).toContain('HEAD comes with GET');
  });

  it('a route without methods cannot share a path with one that has them', () => {
    const found = issues([up('a', '/d', ['GET']), up('b', '/d')]);
    expect(found.map((i) => i.path)).toEqual(['routes[1].methods']);
    expect(found[0]!.message).toContain('routes[0]');
    // Neither lists methods: the old duplicate-path error.
    expect(issues([up('a', '/d'), up('b', '/d')]).map((i) => i.path)).toEqual(['routes[1].path']);
  });

  it('with routing.caseSensitive, paths differing in case are different paths', () => {
    expect(
      issues([up('a', '/d', ['GET']), up('b', '/D', ['GET'])], { routing: { caseSensitive: true } }),
    ).toEqual([]);
  });

  it('a third route is checked against every route of the path', () => {
    const found = issues([up('a', '/d', ['GET']), up('b', '/d', ['POST']), up('c', '/d', ['PUT', 'POST'])]);
    expect(found.map((i) => i.path)).toEqual(['routes[2].methods']);
    expect(found[0]!.message).toContain('routes[1]');
  });

  it('the weaker-prefix warning sees per-method routes, and only where methods meet', () => {
    const strong = {
      id: 'admin',
      path: '/app/admin',
      methods: ['POST'],
      auth: { methods: ['apiKey' as const], scopes: ['admin'] },
      upstream: { targets: [T1] },
    };
    const warn = (routes: unknown[]) => {
      const r = validateConfig({ routes });
      expect(r.ok).toBe(true);
      return r.warnings.filter((w) => w.message.includes('segment prefix'));
    };
    // The public POST route of /app reaches the protected POST of /app/admin.
    const w = warn([up('app-read', '/app', ['GET']), up('app-write', '/app', ['POST']), strong]);
    expect(w.map((x) => x.path)).toEqual(['routes[1].path']);
    expect(w[0]!.message).toContain('(POST)');
    // A weaker route that takes none of its methods cannot carry them: no warning.
    expect(warn([up('app-read', '/app', ['GET']), strong])).toEqual([]);
  });
});
