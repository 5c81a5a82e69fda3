import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { normalizePath, splitTarget } from '../../src/core/path.js';
import { RouteTable, allowedMethods } from '../../src/gateway/route-table.js';
import { Problem } from '../../src/problems/problem.js';
import type { RouteConfig } from '../../src/config/schema.js';

describe('normalizePath', () => {
  it.each([
    ['/a/b', '/a/b'],
    ['/', '/'],
    ['/a/./b', '/a/b'],
    ['/a/../b', '/b'],
    ['/a/b/..', '/a/'],
    ['/../../etc/passwd', '/etc/passwd'],
    ['/a//b///c', '/a/b/c'],
    ['/a/%2e%2e/b', '/b'],
    ['/a/%2E%2e/%2e/b', '/b'],
    ['/a/.%2e/b', '/b'],
    ['/v1/orders/', '/v1/orders/'],
    ['/a/b%20c/d', '/a/b%20c/d'],
    ['/.well-known/x', '/.well-known/x'],
    // Escaped unreserved characters are the characters (RFC 3986 §6.2.2.2); other escapes stay, upper-cased.
    ['/api/%61dmin/users', '/api/admin/users'],
    ['/api/%41%7e%2D%5f', '/api/A~-_'],
    ['/a/%c3%a9/%3a', '/a/%C3%A9/%3A'],
  ])('%s → %s', (input, expected) => {
    expect(normalizePath(input)).toBe(expected);
  });

  it.each(['/a/%2f/b', '/a/%2F..%2Fadmin', '/a\\..\\b', '/a/%5c/b', '/a/%00'])(
    'refuses %s with 400 bad-request',
    (input) => {
      expect(() => normalizePath(input)).toThrow(Problem);
      try {
        normalizePath(input);
      } catch (err) {
        expect((err as Problem).slug).toBe('bad-request');
      }
    },
  );

  it('matches an escaped spelling of a path as the path itself (property)', () => {
    const unreserved = fc.stringMatching(/^[A-Za-z0-9._~-]{1,8}$/).filter((x) => x !== '.' && x !== '..');
    fc.assert(
      fc.property(
        fc.array(unreserved, { minLength: 1, maxLength: 5 }),
        fc.array(fc.boolean()),
        (segs, flips) => {
          const plain = '/' + segs.join('/');
          let i = 0;
          const escaped = plain.replace(/[A-Za-z0-9._~-]/g, (c) =>
            flips[i++ % Math.max(flips.length, 1)] ? `%${c.charCodeAt(0).toString(16)}` : c,
          );
          expect(normalizePath(escaped)).toBe(normalizePath(plain));
        },
      ),
    );
  });

  it('never yields a dot segment, an empty segment or a path outside the root (property)', () => {
    const segment = fc.oneof(
      fc.constantFrom('.', '..', '%2e', '%2E%2e', '.%2e', '', 'a', 'b', 'v1', 'orders', '%41', '..a', 'a..'),
      fc.stringMatching(/^[A-Za-z0-9._~-]{1,6}$/),
    );
    fc.assert(
      fc.property(fc.array(segment, { maxLength: 12 }), (segments) => {
        const out = normalizePath('/' + segments.join('/'));
        expect(out.startsWith('/')).toBe(true);
        const inner = out.slice(1).replace(/\/$/, '');
        if (inner !== '') {
          for (const s of inner.split('/')) {
            expect(s).not.toBe('');
            expect(s.replace(/%2e/gi, '.')).not.toMatch(/^\.{1,2}$/);
          }
        }
        // Idempotent: a normalised path is its own normal form.
        expect(normalizePath(out)).toBe(out);
      }),
    );
  });

  it('a path that climbs out of a prefix no longer matches that prefix (property)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom('..', '%2e%2e', 'x', '.'), { maxLength: 8 }),
        fc.constantFrom('admin', 'secret'),
        (middle, tail) => {
          const out = normalizePath(`/v1/orders/${middle.join('/')}/${tail}`);
          const climbs = out === `/v1/orders/${tail}` || out.startsWith('/v1/orders/');
          // Either it is still under the prefix (and is routed there), or it is routed elsewhere.
          expect(climbs || !out.startsWith('/v1/orders')).toBe(true);
        },
      ),
    );
  });
});

describe('splitTarget', () => {
  it('splits origin-form and absolute-form targets', () => {
    expect(splitTarget('/a/b?x=1&y')).toEqual({ path: '/a/b', search: '?x=1&y' });
    expect(splitTarget('/a')).toEqual({ path: '/a', search: '' });
    expect(splitTarget('http://example.com/a/b?q')).toEqual({ path: '/a/b', search: '?q' });
    expect(splitTarget('http://example.com')).toEqual({ path: '/', search: '' });
    expect(splitTarget('http://example.com?q=1')).toEqual({ path: '/', search: '?q=1' });
  });
});

describe('RouteTable', () => {
  const route = (path: string) =>
    ({ config: { id: path, path } as RouteConfig, stages: [], ...allowedMethods(undefined) }) as const;
  const table = new RouteTable([
    route('/v1/orders'),
    route('/v1'),
    route('/v1/orders/archive'),
    route('/health'),
  ]);

  it.each([
    ['/v1/orders', '/v1/orders'],
    ['/v1/orders/', '/v1/orders'],
    ['/v1/orders/7', '/v1/orders'],
    ['/v1/orders/archive/2020', '/v1/orders/archive'],
    ['/v1/ordersx', '/v1'],
    ['/v1', '/v1'],
    ['/health', '/health'],
  ])('%s → %s (longest segment prefix)', (path, expected) => {
    expect(table.match(path)?.config.path).toBe(expected);
  });

  it('returns undefined without a matching prefix', () => {
    expect(table.match('/v2/orders')).toBeUndefined();
    expect(table.match('/')).toBeUndefined();
    expect(table.match('/healthz')).toBeUndefined();
  });

  it('a root route catches everything', () => {
    const withRoot = new RouteTable([route('/'), route('/a')]);
    expect(withRoot.match('/zzz/y')?.config.path).toBe('/');
    expect(withRoot.match('/a/b')?.config.path).toBe('/a');
  });

  it('allows HEAD where GET is allowed and builds the Allow header', () => {
    const { methods, allow } = allowedMethods(['GET', 'POST']);
    expect(methods?.has('HEAD')).toBe(true);
    expect(allow).toBe('GET, POST, HEAD');
  });
});
