import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import http from 'node:http';
import { createHash } from 'node:crypto';
import { startGateway, type RunningGateway } from '../helpers/gateway.js';
import { freePort, rawExchange, request, waitFor } from '../helpers/http.js';
import { echo, startUpstream, type Upstream } from '../helpers/upstream.js';
import { expectProblem } from '../helpers/problem.js';

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

async function upstream(handler = echo, options: { streaming?: boolean } = {}): Promise<Upstream> {
  const u = await startUpstream(handler, options);
  cleanup.push(() => u.close());
  return u;
}

async function gateway(routes: any[], extra: Record<string, unknown> = {}): Promise<RunningGateway> {
  const gw = await startGateway({ routes, ...extra });
  cleanup.push(() => gw.close());
  return gw;
}

const route = (targets: string[], more: Record<string, unknown> = {}): any => ({
  id: 'r',
  path: '/v1/orders',
  auth: 'none',
  upstream: { targets, stripPrefix: '/v1', timeoutMs: 2000, ...((more.upstream as object) ?? {}) },
  ...Object.fromEntries(Object.entries(more).filter(([k]) => k !== 'upstream')),
});

describe('proxy: forwarding', () => {
  it('forwards method, stripped path, query and body; sets correlation and forwarding headers', async () => {
    const up = await upstream();
    const gw = await gateway([route([up.url + '/base'])]);
    const res = await request(`${gw.url}/v1/orders/7?expand=items&x=%20`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-request-id': 'req-123', host: 'api.example.com' },
      body: '{"a":1}',
    });
    expect(res.status).toBe(200);
    const seen = up.calls[0]!;
    expect(seen.method).toBe('POST');
    expect(seen.url).toBe('/base/orders/7?expand=items&x=%20');
    expect(seen.body.toString()).toBe('{"a":1}');
    expect(seen.headers['x-request-id']).toBe('req-123');
    expect(res.headers['x-request-id']).toBe('req-123');
    expect(seen.headers.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    expect(seen.headers.via).toBe('1.1 tollgate');
    expect(res.headers.via).toBe('1.1 tollgate');
    expect(seen.headers['x-forwarded-for']).toBe('127.0.0.1');
    expect(seen.headers['x-forwarded-proto']).toBe('http');
    expect(seen.headers['x-forwarded-host']).toBe('api.example.com');
    expect(seen.headers.host).toBe(`127.0.0.1:${up.port}`);
  });

  it('strips an exact prefix to the base path itself, and names the client protocol in Via', async () => {
    const up = await upstream();
    const gw = await gateway([
      {
        id: 'exact',
        path: '/v1',
        auth: 'none',
        upstream: { targets: [up.url + '/base'], stripPrefix: '/v1' },
      },
    ]);
    expect((await request(`${gw.url}/v1?q=1`)).status).toBe(200);
    expect((await request(`${gw.url}/v1/?q=2`)).status).toBe(200);
    const port = Number(new URL(gw.url).port);
    const { response } = await rawExchange(port, 'GET /v1/x HTTP/1.0\r\nHost: a.test\r\n\r\n');
    expect(response.startsWith('HTTP/1.1 200')).toBe(true);
    expect(up.calls.map((c) => c.url)).toEqual(['/base?q=1', '/base/?q=2', '/base/x']);
    expect(up.calls[2]!.headers.via).toBe('1.0 tollgate');
  });

  it('refuses a request looping through the gateway with 502 after a bounded number of hops', async () => {
    let gatewayUrl = '';
    let hops = 0;
    // An upstream that sends every request back to the gateway, headers and all: a routing loop.
    const loop = await upstream((req, res) => {
      hops++;
      const back = http.request(`${gatewayUrl}${req.url}`, { headers: req.headers }, (answer) => {
        res.writeHead(answer.statusCode!, answer.headers);
        answer.pipe(res);
      });
      back.on('error', () => res.destroy());
      back.end();
    });
    const gw = await gateway([
      { id: 'loop', path: '/loop', auth: 'none', upstream: { targets: [loop.url], timeoutMs: 10_000 } },
    ]);
    gatewayUrl = gw.url;
    const res = await request(`${gw.url}/loop/x`, { timeoutMs: 10_000 });
    expectProblem(res, 'bad-gateway');
    expect(hops).toBe(10);
  });

  it('forwards a valid traceparent unchanged and replaces an invalid one', async () => {
    const up = await upstream();
    const gw = await gateway([route([up.url])]);
    const valid = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    await request(`${gw.url}/v1/orders`, { headers: { traceparent: valid } });
    expect(up.calls[0]!.headers.traceparent).toBe(valid);
    await request(`${gw.url}/v1/orders`, {
      headers: { traceparent: '00-00000000000000000000000000000000-b7ad6b7169203331-01' },
    });
    expect(up.calls[1]!.headers.traceparent).not.toContain('00000000000000000000000000000000');
  });

  it('removes hop-by-hop headers, those named in Connection, and client copies of identity headers', async () => {
    const up = await upstream((_req, res) => {
      res.writeHead(200, {
        connection: 'keep-alive, x-upstream-hop',
        'x-upstream-hop': 'secret',
        'keep-alive': 'timeout=5',
        'x-kept': 'yes',
      });
      res.end('ok');
    });
    const gw = await gateway([route([up.url])]);
    const res = await request(`${gw.url}/v1/orders`, {
      headers: {
        connection: 'keep-alive, x-hop-custom',
        'x-hop-custom': '1',
        'keep-alive': 'timeout=5',
        te: 'trailers',
        'proxy-authorization': 'Basic abc',
        'x-consumer-id': 'admin',
        'x-tenant-id': 'other-tenant',
        'x-credential-id': 'spoof',
        'x-auth-method': 'jwt',
        'x-scopes': 'everything',
        'x-api-key': 'tg_live_notforwarded',
        'x-signature': 'v1=00',
        'x-end-to-end': 'kept',
      },
    });
    expect(res.status).toBe(200);
    const h = up.calls[0]!.headers;
    for (const name of [
      'x-hop-custom',
      'keep-alive',
      'te',
      'proxy-authorization',
      'x-consumer-id',
      'x-tenant-id',
      'x-credential-id',
      'x-auth-method',
      'x-scopes',
      'x-api-key',
      'x-signature',
    ])
      expect(h[name], name).toBeUndefined();
    expect(h['x-end-to-end']).toBe('kept');
    expect(res.headers['x-upstream-hop']).toBeUndefined();
    expect(res.headers['x-kept']).toBe('yes');
  });

  it('keeps repeated response headers such as Set-Cookie', async () => {
    const up = await upstream((_req, res) => {
      res.setHeader('set-cookie', ['a=1', 'b=2']);
      res.end('ok');
    });
    const gw = await gateway([route([up.url])]);
    const res = await request(`${gw.url}/v1/orders`);
    expect(res.headers['set-cookie']).toEqual(['a=1', 'b=2']);
  });

  it('trusts X-Forwarded-For (and Forwarded, X-Real-IP) only from a trusted proxy', async () => {
    const up = await upstream();
    const untrusting = await gateway([route([up.url])]);
    const claims = { forwarded: 'for=6.6.6.6;proto=https', 'x-real-ip': '6.6.6.6' };
    await request(`${untrusting.url}/v1/orders`, {
      headers: { 'x-forwarded-for': '6.6.6.6', 'x-forwarded-proto': 'https', ...claims },
    });
    expect(up.calls[0]!.headers['x-forwarded-for']).toBe('127.0.0.1');
    expect(up.calls[0]!.headers['x-forwarded-proto']).toBe('http');
    expect(up.calls[0]!.headers.forwarded).toBeUndefined();
    expect(up.calls[0]!.headers['x-real-ip']).toBeUndefined();
    const trusting = await gateway([route([up.url])], { trustProxy: 'loopback' });
    await request(`${trusting.url}/v1/orders`, {
      headers: { 'x-forwarded-for': '203.0.113.9', 'x-forwarded-proto': 'https', ...claims },
    });
    expect(up.calls[1]!.headers['x-forwarded-for']).toBe('203.0.113.9, 127.0.0.1');
    expect(up.calls[1]!.headers['x-forwarded-proto']).toBe('https');
    expect(up.calls[1]!.headers.forwarded).toBe(claims.forwarded);
    expect(up.calls[1]!.headers['x-real-ip']).toBe(claims['x-real-ip']);
  });

  it('spreads requests over targets round-robin', async () => {
    const a = await upstream();
    const b = await upstream();
    const gw = await gateway([route([a.url, b.url])]);
    for (let i = 0; i < 6; i++) expect((await request(`${gw.url}/v1/orders`)).status).toBe(200);
    expect(a.calls.length).toBe(3);
    expect(b.calls.length).toBe(3);
  });

  it('streams a 10 MB request body and a 10 MB response body intact', async () => {
    const big = Buffer.alloc(10 * 1024 * 1024, 7);
    big.write('start');
    const digest = createHash('sha256').update(big).digest('hex');
    const up = await upstream((_req, res, body) => {
      res.writeHead(200, { 'x-body-sha': createHash('sha256').update(body).digest('hex') });
      res.end(big);
    });
    const gw = await gateway([route([up.url])], { limits: { bodyBytes: 20 * 1024 * 1024 } });
    const res = await request(`${gw.url}/v1/orders`, { method: 'PUT', body: big });
    expect(res.status).toBe(200);
    expect(res.headers['x-body-sha']).toBe(digest);
    expect(createHash('sha256').update(res.body).digest('hex')).toBe(digest);
  });

  it('streams a response as it comes: the first bytes reach the client before the upstream finishes', async () => {
    let finish: () => void = () => undefined;
    const up = await upstream((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('first chunk;');
      finish = () => res.end('last chunk');
    });
    const gw = await gateway([route([up.url])]);
    const text = await new Promise<string>((resolve, reject) => {
      const req = http.get(`${gw.url}/v1/orders`, (res) => {
        let body = '';
        res.on('data', (c: Buffer) => {
          body += c.toString();
          if (body === 'first chunk;') finish();
        });
        res.on('end', () => resolve(body));
        res.on('error', reject);
      });
      req.on('error', reject);
      req.setTimeout(5000, () => req.destroy(new Error('timed out')));
    });
    expect(text).toBe('first chunk;last chunk');
  });
});

describe('proxy: failures', () => {
  it('502 bad-gateway when the only target refuses the connection', async () => {
    const port = await freePort();
    const gw = await gateway([route([`http://127.0.0.1:${port}`])]);
    const res = await request(`${gw.url}/v1/orders`);
    const body = expectProblem(res, 'bad-gateway');
    expect(JSON.stringify(body)).not.toContain(String(port));
  });

  it('retries an idempotent request on another target when the connection failed, but not a POST', async () => {
    const port = await freePort();
    const good = await upstream();
    const gw = await gateway([
      route([`http://127.0.0.1:${port}`, good.url], { upstream: { passiveHealth: { failures: 100 } } }),
    ]);
    for (let i = 0; i < 4; i++) expect((await request(`${gw.url}/v1/orders`)).status).toBe(200);
    expect(good.calls.length).toBe(4);
    // Round-robin puts every other request on the dead target: a POST there is not retried.
    const statuses = [];
    for (let i = 0; i < 4; i++)
      statuses.push((await request(`${gw.url}/v1/orders`, { method: 'POST', body: 'x' })).status);
    expect(statuses.filter((s) => s === 502).length).toBe(2);
    expect(statuses.filter((s) => s === 200).length).toBe(2);
  });

  it('retries a GET on the same target when a kept-alive socket was closed under it (one target)', async () => {
    // The upstream drops the connection on the second request it carries, without a word, as a
    // server closing an idle keep-alive socket does in a race. Once only.
    const served = new WeakMap<object, number>();
    let dropped = 0;
    const up = await upstream((req, res) => {
      const n = (served.get(req.socket) ?? 0) + 1;
      served.set(req.socket, n);
      if (n === 2 && dropped === 0) {
        dropped++;
        req.socket.destroy();
        return;
      }
      res.end('ok');
    });
    const gw = await gateway([route([up.url])]); // one target, retries: 1 (default)
    for (let i = 0; i < 3; i++) expect((await request(`${gw.url}/v1/orders`)).status).toBe(200);
    expect(dropped).toBe(1);
    expect(up.calls).toHaveLength(4); // three answered, one dropped and retried
  });

  it('takes a failing target out of rotation, then answers 503 with Retry-After when none is left', async () => {
    const port = await freePort();
    const gw = await gateway([
      route([`http://127.0.0.1:${port}`], {
        upstream: { retries: 0, passiveHealth: { failures: 2, cooldownSec: 30 } },
      }),
    ]);
    expectProblem(await request(`${gw.url}/v1/orders`), 'bad-gateway');
    expectProblem(await request(`${gw.url}/v1/orders`), 'bad-gateway');
    const res = await request(`${gw.url}/v1/orders`);
    expectProblem(res, 'service-unavailable');
    expect(Number(res.headers['retry-after'])).toBeGreaterThanOrEqual(29);
  });

  it('504 gateway-timeout when the upstream is slower than timeoutMs, and the upstream request is abandoned', async () => {
    let closed = false;
    const up = await upstream(
      (req) => {
        req.on('close', () => {
          closed = true;
        });
      },
      { streaming: true },
    );
    const gw = await gateway([route([up.url], { upstream: { timeoutMs: 150 } })]);
    expectProblem(await request(`${gw.url}/v1/orders`), 'gateway-timeout');
    await waitFor(() => closed, 2000);
  });

  it('cuts the client connection when the upstream body is truncated', async () => {
    const up = await upstream((_req, res) => {
      res.writeHead(200, { 'content-length': '1000' });
      res.write('only a little');
      setTimeout(() => res.socket?.destroy(), 20);
    });
    const gw = await gateway([route([up.url])]);
    const outcome = await new Promise<string>((resolve) => {
      const req = http.get(`${gw.url}/v1/orders`, (res) => {
        res.on('data', () => undefined);
        res.on('end', () => resolve('complete'));
        res.on('error', () => resolve('cut'));
        res.on('aborted', () => resolve('cut'));
      });
      req.on('error', () => resolve('cut'));
      req.setTimeout(5000, () => req.destroy());
    });
    expect(outcome).toBe('cut');
  });

  it('stops the upstream request when the client goes away', async () => {
    let upstreamSawClose = false;
    const up = await upstream(
      (req) => {
        req.on('close', () => {
          upstreamSawClose = true;
        });
      },
      { streaming: true },
    );
    const gw = await gateway([route([up.url], { upstream: { timeoutMs: 10_000 } })]);
    const req = http.get(`${gw.url}/v1/orders`);
    req.on('error', () => undefined);
    await waitFor(() => up.calls.length === 1, 2000);
    req.destroy();
    await waitFor(() => upstreamSawClose, 2000);
    expect(upstreamSawClose).toBe(true);
  });
});

describe('proxy: body limits', () => {
  it('413 from Content-Length before the body is read; the upstream is never called', async () => {
    const up = await upstream();
    const gw = await gateway([route([up.url])], { limits: { bodyBytes: 1000 } });
    const res = await request(`${gw.url}/v1/orders`, { method: 'POST', body: Buffer.alloc(5000) });
    expectProblem(res, 'payload-too-large');
    expect(res.headers.connection).toBe('close');
    expect(up.calls.length).toBe(0);
  });

  it('413 for a chunked body that grows over the limit', async () => {
    const up = await upstream(undefined, { streaming: true });
    const gw = await gateway([route([up.url])], { limits: { bodyBytes: 1000 } });
    const res = await new Promise<{ status: number; body: string; headers: http.IncomingHttpHeaders }>(
      (resolve, reject) => {
        const req = http.request(
          `${gw.url}/v1/orders`,
          { method: 'POST', headers: { 'transfer-encoding': 'chunked' } },
          (r) => {
            let body = '';
            r.on('data', (c: Buffer) => (body += c.toString()));
            r.on('end', () => resolve({ status: r.statusCode ?? 0, body, headers: r.headers }));
          },
        );
        req.on('error', reject);
        for (let i = 0; i < 5; i++) req.write(Buffer.alloc(400));
        req.end();
      },
    );
    expect(res.status).toBe(413);
    expect(JSON.parse(res.body).type).toMatch(/payload-too-large$/);
  });
});

describe('proxy: upstream errors', () => {
  const errorRoute = (targets: string[], mode?: 'passthrough') =>
    route(targets, mode ? { upstreamErrors: mode } : {});

  it('keeps an upstream problem and adds instance and request_id', async () => {
    const up = await upstream((_req, res) => {
      res.writeHead(409, { 'content-type': 'application/problem+json' });
      res.end(
        JSON.stringify({
          type: 'https://orders.example/out-of-stock',
          title: 'Out of stock',
          status: 409,
          sku: 'A1',
        }),
      );
    });
    const gw = await gateway([errorRoute([up.url])]);
    const res = await request(`${gw.url}/v1/orders`);
    expect(res.status).toBe(409);
    expect(res.headers['content-type']).toBe('application/problem+json');
    const id = res.headers['x-request-id'];
    expect(res.json()).toEqual({
      type: 'https://orders.example/out-of-stock',
      title: 'Out of stock',
      status: 409,
      sku: 'A1',
      instance: `/requests/${String(id)}`,
      request_id: id,
    });
  });

  it("turns a JSON 4xx into about:blank with the upstream's message and field errors", async () => {
    const up = await upstream((_req, res) => {
      res.writeHead(422, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          message: 'quantity must be positive',
          errors: [{ field: 'items.0.qty', message: 'must be > 0' }],
        }),
      );
    });
    const gw = await gateway([errorRoute([up.url])]);
    const res = await request(`${gw.url}/v1/orders`);
    expect(res.status).toBe(422);
    expect(res.json()).toMatchObject({
      type: 'about:blank',
      title: 'Unprocessable Entity',
      status: 422,
      detail: 'quantity must be positive',
      errors: [{ pointer: '/items/0/qty', message: 'must be > 0' }],
    });
  });

  it('never passes a 5xx body on', async () => {
    const up = await upstream((_req, res) => {
      res.writeHead(500, { 'content-type': 'text/plain' });
      res.end('TypeError at /srv/orders/db.js:42 (host db-internal-7)');
    });
    const gw = await gateway([errorRoute([up.url])]);
    const res = await request(`${gw.url}/v1/orders`);
    expect(res.status).toBe(500);
    const body = res.json();
    expect(body).toMatchObject({ type: 'about:blank', title: 'Internal Server Error', status: 500 });
    expect(res.text).not.toContain('db-internal');
    expect(res.text).not.toContain('TypeError');
  });

  it('decodes a gzip error body before reading it', async () => {
    const { gzipSync } = await import('node:zlib');
    const up = await upstream((_req, res) => {
      res.writeHead(404, { 'content-type': 'application/json', 'content-encoding': 'gzip' });
      res.end(gzipSync(JSON.stringify({ error: 'no such order' })));
    });
    const gw = await gateway([errorRoute([up.url])]);
    const res = await request(`${gw.url}/v1/orders`);
    expect(res.json().detail).toBe('no such order');
    expect(res.headers['content-encoding']).toBeUndefined();
  });

  it('passes errors through untouched with upstreamErrors: passthrough', async () => {
    const up = await upstream((_req, res) => {
      res.writeHead(500, { 'content-type': 'text/plain' });
      res.end('raw upstream error');
    });
    const gw = await gateway([errorRoute([up.url], 'passthrough')]);
    const res = await request(`${gw.url}/v1/orders`);
    expect(res.status).toBe(500);
    expect(res.text).toBe('raw upstream error');
  });

  it('a HEAD error gets problem headers and no body', async () => {
    const up = await upstream((_req, res) => {
      res.writeHead(404);
      res.end();
    });
    const gw = await gateway([errorRoute([up.url])]);
    const res = await request(`${gw.url}/v1/orders`, { method: 'HEAD' });
    expect(res.status).toBe(404);
    expect(res.headers['content-type']).toBe('application/problem+json');
    expect(res.body.length).toBe(0);
  });
});

describe('proxy: success responses are untouched', () => {
  let up: Upstream;
  let gw: RunningGateway;
  beforeAll(async () => {
    up = await startUpstream((_req, res) => {
      res.writeHead(201, { 'content-type': 'application/json', etag: '"v1"' });
      res.end('{"created":true}');
    });
    gw = await startGateway({ routes: [route([up.url])] });
  });
  afterAll(async () => {
    await gw.close();
    await up.close();
  });

  it('keeps status, headers and body', async () => {
    const res = await request(`${gw.url}/v1/orders`, { method: 'POST', body: '{}' });
    expect(res.status).toBe(201);
    expect(res.headers.etag).toBe('"v1"');
    expect(res.text).toBe('{"created":true}');
    expect(res.headers['content-security-policy']).toBeUndefined();
  });
});
