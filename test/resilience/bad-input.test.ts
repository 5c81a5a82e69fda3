import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import http from 'node:http';
import fc from 'fast-check';
import { startGateway, type RunningGateway } from '../helpers/gateway.js';
import { parseRaw, rawExchange, request, waitFor } from '../helpers/http.js';
import { startUpstream, type Upstream } from '../helpers/upstream.js';
import { signingKey, startJwksServer, token } from '../helpers/jwks.js';

const TOKEN = 'bad-input-admin-token-1';
let up: Upstream;
let gw: RunningGateway;

beforeAll(async () => {
  up = await startUpstream();
  gw = await startGateway({
    admin: { host: '127.0.0.1', port: 0, tokens: [TOKEN] },
    limits: { bodyBytes: 4096 },
    auth: { jwt: [{ issuer: 'https://idp.test/', secret: 'a-shared-hs256-secret-of-32-chars-or-more!!' }] },
    routes: [
      {
        id: 'files',
        path: '/v1/files',
        auth: 'none',
        upstream: { targets: [`${up.url}/svc/files`], stripPrefix: '/v1/files' },
      },
      {
        id: 'private',
        path: '/v1/private',
        auth: { methods: ['apiKey', 'jwt'] },
        upstream: { targets: [up.url] },
      },
      {
        id: 'limited',
        path: '/v1/limited',
        auth: 'none',
        upstream: { targets: [up.url] },
        rateLimits: [{ name: 'ip', by: 'ip', limit: 3, windowSec: 3600 }],
      },
      { id: 'pay', path: '/v1/pay', auth: 'none', upstream: { targets: [up.url] }, idempotency: {} },
    ],
  });
});
afterAll(async () => {
  await gw.close();
  await up.close();
});

const isProblem = (res: { status: number; headers: http.IncomingHttpHeaders; json(): any }) =>
  String(res.headers['content-type']).startsWith('application/problem+json') &&
  res.json().request_id === res.headers['x-request-id'];

describe('bad input is answered, never crashes', () => {
  it('any JSON-ish body on the admin API gets 201 or a 400 problem, never a 500 (property)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.string({ maxLength: 200 }),
          fc.json({ maxDepth: 4 }),
          fc.constantFrom('{"name":', '[', 'null', '{"name":"x","scopes":[1,2]}', '{"__proto__":{"x":1}}'),
        ),
        async (body) => {
          const res = await request(`${gw.adminUrl}/keys`, {
            method: 'POST',
            body,
            headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
          });
          expect([201, 400, 413]).toContain(res.status);
          if (res.status !== 201) expect(isProblem(res)).toBe(true);
        },
      ),
      { numRuns: 60 },
    );
  });

  it('huge JSON is refused with 413 before it is read', async () => {
    const res = await request(`${gw.adminUrl}/keys`, {
      method: 'POST',
      body: JSON.stringify({ name: 'x', meta: { blob: 'y'.repeat(200_000) } }),
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    });
    expect(res.status).toBe(413);
    expect(isProblem(res)).toBe(true);
  });

  it('a body over limits.bodyBytes gets 413 from its Content-Length, without sending it', async () => {
    const { response } = await rawExchange(
      gw.port,
      'POST /v1/files/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\nonly-a-little',
      5000,
    );
    const parsed = parseRaw(response);
    expect(parsed.status).toBe(413);
    expect(JSON.parse(parsed.body).type).toMatch(/payload-too-large$/);
  });

  it('malformed Authorization values get 401 problems (property)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.stringMatching(/^[\x21-\x7e ]{0,120}$/),
          fc
            .stringMatching(/^[A-Za-z0-9_-]{1,60}\.[A-Za-z0-9_-]{1,80}\.[A-Za-z0-9_-]{0,80}$/)
            .map((t) => `Bearer ${t}`),
          fc.constantFrom('Bearer', 'Bearer ', 'Basic Zm9vOmJhcg==', 'Bearer tg_live_', 'bearer  a b c'),
        ),
        async (value) => {
          const res = await request(`${gw.url}/v1/private`, { headers: { authorization: value } });
          expect([400, 401]).toContain(res.status);
          expect(isProblem(res)).toBe(true);
        },
      ),
      { numRuns: 80 },
    );
  });

  it('an oversized token is refused cleanly (431 or 401)', async () => {
    const res = await request(`${gw.url}/v1/private`, {
      headers: { authorization: `Bearer ${'a'.repeat(8000)}.${'b'.repeat(8000)}.c` },
    });
    expect([401, 431]).toContain(res.status);
    expect(isProblem(res)).toBe(true);
  });

  it('non-ASCII, over-long and CRLF-laden request ids are replaced, never echoed (property)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.string({ minLength: 129, maxLength: 300 }),
          fc.stringMatching(/^[^A-Za-z0-9._:-]{1,20}$/),
          fc.constant('abc%0d%0aSet-Cookie:x=1'),
        ),
        async (id) => {
          // Node refuses raw CR/LF and most control characters itself; what it lets through must not come back.
          const safe = id.replace(/[^\x20-\x7e]/g, '?');
          const res = await request(`${gw.url}/nowhere`, { headers: { 'x-request-id': safe } });
          expect(res.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
          expect(res.headers['set-cookie']).toBeUndefined();
        },
      ),
      { numRuns: 60 },
    );
    const { response } = await rawExchange(
      gw.port,
      'GET /nowhere HTTP/1.1\r\nHost: x\r\nX-Request-Id: a\rInjected: yes\r\n\r\n',
    );
    expect(parseRaw(response).status).toBe(400);
  });

  it('dot segments and encoded slashes never take a path out of its route upstream (property)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.constantFrom('..', '.', '%2e%2e', '%2E.', 'a', 'b', '', '%2f', '%5c', '..%2f', 'x%00y'), {
          minLength: 1,
          maxLength: 8,
        }),
        async (segments) => {
          const before = up.calls.length;
          const res = await request(`${gw.url}/v1/files/${segments.join('/')}`);
          if (up.calls.length > before) {
            const seen = up.calls.at(-1)!.url;
            expect(seen.startsWith('/svc/files')).toBe(true);
            expect(seen.split('?')[0]!.split('/')).not.toContain('..');
          } else {
            expect([400, 404]).toContain(res.status);
            expect(isProblem(res)).toBe(true);
          }
        },
      ),
      { numRuns: 120 },
    );
  });

  it('a spoofed X-Forwarded-For does not buy more of a per-IP limit when no proxy is trusted', async () => {
    const statuses = [];
    for (let i = 0; i < 6; i++)
      statuses.push(
        (await request(`${gw.url}/v1/limited`, { headers: { 'x-forwarded-for': `10.0.0.${i}` } })).status,
      );
    expect(statuses).toEqual([200, 200, 200, 429, 429, 429]);
  });

  it('duplicated Content-Length is refused by the parser with a problem', async () => {
    const { response } = await rawExchange(
      gw.port,
      'POST /v1/files/x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabc',
    );
    const parsed = parseRaw(response);
    expect(parsed.status).toBe(400);
    expect(parsed.headers['content-type']).toBe('application/problem+json');
  });

  it('a malformed chunk mid-body closes the connection rather than answer 400 under another request id', async () => {
    const port = Number(new URL(gw.url).port);
    const { response, closed } = await rawExchange(
      port,
      'POST /v1/files/x HTTP/1.1\r\nHost: a\r\nX-Request-Id: chunk-1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZZ\r\n',
      3000,
    );
    expect(closed).toBe(true);
    if (response !== '') expect(parseRaw(response).headers['x-request-id']).toBe('chunk-1');
  });

  it('a client that aborts mid-upload frees its idempotency key; one that aborts mid-download frees the upstream', async () => {
    const req = http.request(`${gw.url}/v1/pay`, {
      method: 'POST',
      headers: { 'idempotency-key': 'abort-upload', 'content-length': '1000' },
    });
    req.on('error', () => undefined);
    req.write('x'.repeat(100));
    await new Promise((r) => setTimeout(r, 100));
    req.destroy();
    await waitFor(
      async () =>
        (
          await request(`${gw.url}/v1/pay`, {
            method: 'POST',
            body: '{}',
            headers: { 'idempotency-key': 'abort-upload' },
          })
        ).status === 200,
      3000,
      50,
    );

    let upstreamClosed = false;
    const slowUp = await startUpstream((_req, res) => {
      res.writeHead(200);
      const timer = setInterval(() => res.write('x'.repeat(1024)), 5);
      res.on('close', () => {
        clearInterval(timer);
        upstreamClosed = true;
      });
    });
    const g2 = await startGateway({
      routes: [{ id: 's', path: '/s', auth: 'none', upstream: { targets: [slowUp.url] } }],
    });
    await new Promise<void>((resolve) => {
      const d = http.get(`${g2.url}/s`, (res) => {
        res.once('data', () => {
          d.destroy();
          resolve();
        });
      });
      d.on('error', () => undefined);
    });
    await waitFor(() => upstreamClosed, 3000);
    await g2.close();
    await slowUp.close();
  });

  it('a client that leaves while an earlier stage runs (a slow JWKS fetch) is never proxied', async () => {
    const key = await signingKey('slow');
    const jwks = await startJwksServer([key]);
    const release = jwks.hold();
    const seen = await startUpstream();
    const g = await startGateway({
      auth: { jwt: [{ issuer: 'https://idp.test/', audience: 'api://orders', jwksUri: jwks.url }] },
      routes: [{ id: 'o', path: '/orders', auth: { methods: ['jwt'] }, upstream: { targets: [seen.url] } }],
    });
    try {
      const bearer = { authorization: `Bearer ${await token(key)}` };
      // Leaves while the gateway is still fetching the JWKS, which answers only once the gateway has
      // seen the client go (a 500 ms JWKS delay against a 100 ms sleep raced on a busy machine).
      const gone = http.request(`${g.url}/orders/abandoned`, { method: 'DELETE', headers: bearer });
      gone.on('error', () => undefined);
      gone.end();
      await waitFor(() => jwks.fetches === 1, 10_000, 10);
      gone.destroy();
      await waitFor(
        () => new Promise<boolean>((r) => g.server.getConnections((err, n) => r(!err && n === 0))),
        10_000,
        10,
      );
      release();
      // A second request waits on the same fetch; once it is through, the first would have been too.
      const kept = await request(`${g.url}/orders/kept`, {
        method: 'DELETE',
        headers: bearer,
        timeoutMs: 5000,
      });
      expect(kept.status).toBe(200);
      expect(seen.calls.map((c) => c.url)).toEqual(['/orders/kept']);
    } finally {
      await g.close();
      await seen.close();
      await jwks.close();
    }
  });
});
