import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, type RunningGateway } from '../helpers/gateway.js';
import { parseRaw, rawExchange, request } from '../helpers/http.js';
import { startUpstream, type Upstream } from '../helpers/upstream.js';
import { expectProblem } from '../helpers/problem.js';

/*
 * Route confusion (issue "Security hardening", items 1, 2, 22, 23): a protected route under a
 * broader public one on the same upstream, the usual layout, and request targets an upstream reads
 * differently from the gateway.
 */

let up: Upstream;
let gw: RunningGateway;
let key: string;

/** One raw HTTP/1.1 exchange (the connection closed after it), parsed. */
async function raw(head: string) {
  const { response } = await rawExchange(gw.port, `${head}\r\nConnection: close\r\n\r\n`);
  const parsed = parseRaw(response);
  return { ...parsed, json: () => JSON.parse(parsed.body) };
}

beforeAll(async () => {
  up = await startUpstream();
  gw = await startGateway({
    routes: [
      { id: 'app', path: '/app', auth: 'none', upstream: { targets: [up.url] } },
      { id: 'orders', path: '/app/orders', auth: { methods: ['apiKey'] }, upstream: { targets: [up.url] } },
      {
        id: 'stripped',
        path: '/v1/items',
        auth: { methods: ['apiKey'] },
        upstream: { targets: [`${up.url}/base`], stripPrefix: '/v1' },
      },
      {
        id: 'host',
        path: '/host',
        auth: 'none',
        upstream: { targets: [up.url], preserveHost: true },
      },
      {
        id: 'traced',
        path: '/traced',
        auth: 'none',
        methods: ['GET', 'TRACE'],
        upstream: { targets: [up.url] },
      },
    ],
  });
  key = (await gw.gateway.services.keys.create({ name: 'k' })).key;
});
afterAll(async () => {
  await gw.close();
  await up.close();
});

/** Upstream calls made while `fn` ran. */
async function upstreamCalls(fn: () => Promise<unknown>) {
  const before = up.calls.length;
  await fn();
  return up.calls.slice(before);
}

describe('routing hardening: a fragment in the request target', () => {
  it('`/app/orders#` is 400 bad-request, never the public route serving the protected path', async () => {
    const calls = await upstreamCalls(async () => {
      for (const target of ['/app/orders#', '/app/orders#/x', '/app/x?q=1#frag', '/app/#'])
        expectProblem(await raw(`GET ${target} HTTP/1.1\r\nHost: gw.test`), 'bad-request');
    });
    expect(calls).toEqual([]);
  });
});

describe('routing hardening: case and ;params', () => {
  it('matches case-insensitively: /app/ORDERS/7 and /app/%4Frders/7 are the protected route', async () => {
    const calls = await upstreamCalls(async () => {
      for (const path of ['/app/ORDERS/7', '/app/%4Frders/7', '/APP/Orders', '/App/oRdErS/'])
        expectProblem(await request(`${gw.url}${path}`), 'missing-credentials');
    });
    expect(calls).toEqual([]);
  });

  it('ignores ;params in a segment for matching: /app/orders;jsessionid=1/7 is the protected route', async () => {
    const calls = await upstreamCalls(async () => {
      for (const path of ['/app/orders;jsessionid=1/7', '/app;x/orders', '/app/;x/orders/7', '/app/Orders;'])
        expectProblem(await request(`${gw.url}${path}`), 'missing-credentials');
    });
    expect(calls).toEqual([]);
  });

  it('forwards the path as sent (case and ;params kept) once the right route let it through', async () => {
    const calls = await upstreamCalls(async () => {
      for (const path of ['/app/ORDERS/7', '/app/orders;jsessionid=1/7?x=1'])
        expect((await request(`${gw.url}${path}`, { headers: { 'x-api-key': key } })).status).toBe(200);
    });
    expect(calls.map((c) => c.url)).toEqual(['/app/ORDERS/7', '/app/orders;jsessionid=1/7?x=1']);
  });

  it('strips upstream.stripPrefix by the matched segments, whatever their case or ;params', async () => {
    const calls = await upstreamCalls(async () => {
      for (const path of ['/V1/Items/7', '/v1;v=2/items/7', '/;x/v1/items', '/v1/items;a=b?q', '/V1/ITEMS/'])
        expect((await request(`${gw.url}${path}`, { headers: { 'x-api-key': key } })).status).toBe(200);
    });
    expect(calls.map((c) => c.url)).toEqual([
      '/base/Items/7',
      '/base/items/7',
      '/base/items',
      '/base/items;a=b?q',
      '/base/ITEMS/',
    ]);
  });

  it('refuses a dot segment with parameters (`..;`), which Java upstreams resolve after stripping them', async () => {
    const calls = await upstreamCalls(async () => {
      for (const path of ['/app/x/..;/orders/7', '/app/.;x/orders', '/app/%2e%2e;/orders'])
        expectProblem(await raw(`GET ${path} HTTP/1.1\r\nHost: gw.test`), 'bad-request');
    });
    expect(calls).toEqual([]);
  });

  it('routing.caseSensitive: true matches exact case (the operator opted in)', async () => {
    const g = await startGateway({
      routing: { caseSensitive: true },
      routes: [
        { id: 'lower', path: '/a/b', mock: { body: 'lower' } },
        { id: 'upper', path: '/a/B', mock: { body: 'upper' } },
        { id: 'a', path: '/a', mock: { body: 'a' } },
      ],
    });
    try {
      expect((await request(`${g.url}/a/b/1`)).text).toBe('lower');
      expect((await request(`${g.url}/a/B/1`)).text).toBe('upper');
      expect((await request(`${g.url}/A/b`)).status).toBe(404);
      expect((await request(`${g.url}/a/b;p=1`)).text).toBe('lower'); // ;params are still ignored
    } finally {
      await g.close();
    }
  });
});

describe('routing hardening: Host', () => {
  it('two Host headers are 400 bad-request (RFC 9112 §3.2)', async () => {
    const calls = await upstreamCalls(async () => {
      expectProblem(await raw('GET /app/x HTTP/1.1\r\nHost: gw.test\r\nHost: evil.example'), 'bad-request');
      expectProblem(await raw('GET /app/x HTTP/1.1\r\nHost: gw.test\r\nhost: gw.test'), 'bad-request');
    });
    expect(calls).toEqual([]);
  });

  it('a Host that is not an authority is 400: never forwarded as X-Forwarded-Host or, with preserveHost, Host', async () => {
    const bad = [
      'evil.example/abc?x=',
      'evil.example\\abc',
      'user@evil.example',
      'a b',
      'gw.test:99999999',
      'gw.test:x',
      '[::1',
      '[not-ip]:80',
      '%zz',
      '',
    ];
    const calls = await upstreamCalls(async () => {
      for (const host of bad) {
        const res = await raw(`GET /host/x HTTP/1.1\r\nHost: ${host}`);
        expect(res.status, host).toBe(400);
        expect(res.json().type, host).toMatch(/bad-request$/);
      }
    });
    expect(calls).toEqual([]);
  });

  it('valid hosts pass: names, IPv4, [IPv6], ports', async () => {
    for (const host of [
      'gw.test',
      'gw.test:8080',
      '127.0.0.1:80',
      '[::1]:8080',
      '[2001:db8::1]',
      'xn--bcher-kva.example',
    ]) {
      const calls = await upstreamCalls(async () => {
        expect((await raw(`GET /host/x HTTP/1.1\r\nHost: ${host}`)).status, host).toBe(200);
      });
      expect(calls[0]!.headers['x-forwarded-host']).toBe(host);
      expect(calls[0]!.headers.host).toBe(host);
    }
  });

  it('an HTTP/1.1 request without Host is a 400 problem (not a bare Node answer); HTTP/1.0 may omit it', async () => {
    expectProblem(await raw('GET /app/x HTTP/1.1'), 'bad-request');
    const calls = await upstreamCalls(async () => {
      expect((await raw('GET /app/x HTTP/1.0')).status).toBe(200);
    });
    expect(calls[0]!.headers['x-forwarded-host']).toBeUndefined();
  });

  it('for an absolute-form target the target authority wins over Host (RFC 9112 §3.2.2)', async () => {
    const calls = await upstreamCalls(async () => {
      expect(
        (await raw('GET http://api.example:8443/host/x?q=1 HTTP/1.1\r\nHost: other.example')).status,
      ).toBe(200);
      expect((await raw('GET http://api.example/app/y HTTP/1.1\r\nHost: other.example')).status).toBe(200);
    });
    expect(calls.map((c) => [c.url, c.headers.host, c.headers['x-forwarded-host']])).toEqual([
      ['/host/x?q=1', 'api.example:8443', 'api.example:8443'],
      ['/app/y', `127.0.0.1:${up.port}`, 'api.example'],
    ]);
  });

  it('an absolute-form target with a userinfo or a bad authority is 400', async () => {
    const calls = await upstreamCalls(async () => {
      for (const target of ['http://user@api.example/app/x', 'http:///app/x', 'http://a b/app/x'])
        expect((await raw(`GET ${target} HTTP/1.1\r\nHost: gw.test`)).status, target).toBe(400);
    });
    expect(calls).toEqual([]);
  });
});

describe('routing hardening: TRACE', () => {
  it('TRACE on a route without a methods list is 405 with Allow, never proxied (cookies would echo back)', async () => {
    const calls = await upstreamCalls(async () => {
      const res = await request(`${gw.url}/app/x`, {
        method: 'TRACE',
        headers: { cookie: 'session=secret' },
      });
      expectProblem(res, 'method-not-allowed');
      expect(res.headers.allow).toBe('GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS');
      expect(res.text).not.toContain('secret');
    });
    expect(calls).toEqual([]);
  });

  it('TRACE is proxied where a route lists it', async () => {
    const calls = await upstreamCalls(async () => {
      expect((await request(`${gw.url}/traced/x`, { method: 'TRACE' })).status).toBe(200);
    });
    expect(calls.map((c) => c.method)).toEqual(['TRACE']);
  });
});
