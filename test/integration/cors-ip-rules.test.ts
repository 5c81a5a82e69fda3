import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, type RunningGateway } from '../helpers/gateway.js';
import { request, type Reply, type RequestOptions } from '../helpers/http.js';
import { expectProblem } from '../helpers/problem.js';
import { startUpstream, type Upstream } from '../helpers/upstream.js';

const APP = 'http://app.test:3000';
const EVIL = 'https://evil.test';

/** `request`, from a chosen loopback source address (Linux routes all of 127/8 to lo). */
function requestFrom(localAddress: string, url: string, options: RequestOptions = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      url,
      { method: options.method ?? 'GET', headers: options.headers, agent: false, localAddress },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          clearTimeout(timer);
          const body = Buffer.concat(chunks);
          const text = body.toString('utf8');
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            rawHeaders: res.rawHeaders,
            body,
            text,
            json: () => JSON.parse(text),
          });
        });
      },
    );
    const timer = setTimeout(() => req.destroy(new Error('timed out')), 10_000);
    req.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    req.end(options.body);
  });
}

/** How many times a header name occurs in a raw response head. */
const occurrences = (res: Reply, name: string) =>
  res.rawHeaders.filter((h, i) => i % 2 === 0 && h.toLowerCase() === name).length;

const expectCors = (res: Reply, origin = APP) => {
  expect(res.headers['access-control-allow-origin']).toBe(origin);
  expect(String(res.headers['access-control-expose-headers'])).toContain('X-Request-Id');
  expect(occurrences(res, 'access-control-allow-origin')).toBe(1);
};

describe('CORS through real sockets', () => {
  let gw: RunningGateway;
  let upstream: Upstream;
  let dead: string;

  beforeAll(async () => {
    upstream = await startUpstream((req, res) => {
      if (req.url?.endsWith('/boom')) {
        res.writeHead(500, { 'content-type': 'application/json', 'access-control-allow-origin': '*' });
        res.end('{"error":"stack trace here"}');
        return;
      }
      // An upstream with CORS of its own: the gateway's replaces it on CORS routes.
      res.writeHead(200, {
        'content-type': 'text/plain',
        'access-control-allow-origin': '*',
        'access-control-allow-credentials': 'true',
        'access-control-expose-headers': 'x-secret',
        vary: 'Accept-Encoding',
      });
      res.end('ok');
    });
    const gone = await startUpstream();
    dead = gone.url;
    await gone.close();
    gw = await startGateway({
      cors: { origins: [APP], exposeHeaders: ['X-Total'] },
      routes: [
        {
          id: 'keyed',
          path: '/keyed',
          methods: ['GET', 'POST'],
          upstream: { targets: [upstream.url] },
          auth: { methods: ['apiKey'] },
        },
        {
          id: 'limited',
          path: '/limited',
          auth: 'none',
          rateLimits: [{ name: 'tiny', by: 'ip', limit: 1, windowSec: 3600 }],
          mock: { body: { ok: true } },
        },
        { id: 'open', path: '/open', upstream: { targets: [upstream.url] }, auth: 'none' },
        { id: 'dead', path: '/dead', upstream: { targets: [dead] }, auth: 'none' },
        { id: 'own', path: '/own', upstream: { targets: [upstream.url] }, auth: 'none', cors: 'off' },
        {
          id: 'star',
          path: '/star',
          mock: { body: { ok: true } },
          cors: { origins: '*', methods: ['GET'], maxAgeSec: 60 },
        },
      ],
    });
  });
  afterAll(async () => {
    await gw.close();
    await upstream.close();
  });

  it('answers a preflight before authentication and the method check: 204, no upstream call', async () => {
    const before = upstream.calls.length;
    const res = await request(`${gw.url}/keyed/7`, {
      method: 'OPTIONS',
      headers: {
        origin: APP,
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'x-api-key, content-type',
      },
    });
    expect(res.status).toBe(204);
    expect(res.headers).toMatchObject({
      'access-control-allow-origin': APP,
      'access-control-allow-methods': 'GET, POST',
      'access-control-allow-headers': 'x-api-key, content-type',
      'access-control-max-age': '600',
      vary: 'Origin, Access-Control-Request-Headers',
    });
    expect(typeof res.headers['x-request-id']).toBe('string');
    expect(upstream.calls.length).toBe(before);
  });

  it("refuses an unlisted origin's preflight with 403 forbidden", async () => {
    const res = await request(`${gw.url}/keyed`, {
      method: 'OPTIONS',
      headers: { origin: EVIL, 'access-control-request-method': 'GET' },
    });
    expectProblem(res, 'forbidden');
    expect(res.headers['access-control-allow-origin']).toBeUndefined();
  });

  it("the gateway's own problems carry CORS: 401, 405, 404 (top level), 429, 502, a rewritten 5xx", async () => {
    const h = { origin: APP };
    const unauth = await request(`${gw.url}/keyed`, { headers: h });
    expectProblem(unauth, 'missing-credentials');
    expectCors(unauth);
    expect(unauth.headers['access-control-expose-headers']).toBe(
      'X-Request-Id, RateLimit, RateLimit-Policy, Retry-After, X-Total',
    );
    const notAllowed = await request(`${gw.url}/keyed`, { method: 'DELETE', headers: h });
    expectProblem(notAllowed, 'method-not-allowed');
    expectCors(notAllowed);
    const noRoute = await request(`${gw.url}/nowhere`, { headers: h });
    expectProblem(noRoute, 'not-found');
    expectCors(noRoute);
    expect((await request(`${gw.url}/limited`, { headers: h })).status).toBe(200);
    const limited = await request(`${gw.url}/limited`, { headers: h });
    expectProblem(limited, 'rate-limit-exceeded');
    expectCors(limited);
    expect(limited.headers['retry-after']).toBeDefined();
    const badGateway = await request(`${gw.url}/dead`, { headers: h });
    expectProblem(badGateway, 'bad-gateway');
    expectCors(badGateway);
    const boom = await request(`${gw.url}/open/boom`, { headers: h });
    expect(boom.status).toBe(500);
    expectCors(boom);
    expect(boom.text).not.toContain('stack trace');
  });

  it("replaces an upstream's CORS headers (never doubled) and merges its Vary with Origin", async () => {
    const res = await request(`${gw.url}/open`, { headers: { origin: APP } });
    expect(res.status).toBe(200);
    expectCors(res);
    expect(res.headers['access-control-allow-credentials']).toBeUndefined();
    expect(res.headers['access-control-expose-headers']).not.toContain('x-secret');
    expect(occurrences(res, 'vary')).toBe(1);
    expect(res.headers.vary).toBe('Origin, Accept-Encoding');
    // An unlisted origin gets nothing from the upstream's `*` either: the gateway's policy holds.
    const evil = await request(`${gw.url}/open`, { headers: { origin: EVIL } });
    expect(evil.status).toBe(200);
    expect(evil.headers['access-control-allow-origin']).toBeUndefined();
    expect(evil.headers['access-control-allow-credentials']).toBeUndefined();
    expect(evil.headers.vary).toBe('Origin, Accept-Encoding');
  });

  it('cors: off leaves the route to its upstream; "*" answers any origin with *', async () => {
    const own = await request(`${gw.url}/own`, { headers: { origin: EVIL } });
    expect(own.headers['access-control-allow-origin']).toBe('*');
    expect(own.headers.vary).toBe('Accept-Encoding');
    const star = await request(`${gw.url}/star`, {
      method: 'OPTIONS',
      headers: { origin: EVIL, 'access-control-request-method': 'GET' },
    });
    expect(star.status).toBe(204);
    expect(star.headers).toMatchObject({
      'access-control-allow-origin': '*',
      'access-control-max-age': '60',
    });
    const actual = await request(`${gw.url}/star`, { headers: { origin: EVIL } });
    expect(actual.headers['access-control-allow-origin']).toBe('*');
    expect(actual.headers.vary).toBeUndefined();
  });
});

describe('IP rules through real sockets', () => {
  let gw: RunningGateway;
  let upstream: Upstream;

  beforeAll(async () => {
    upstream = await startUpstream();
    gw = await startGateway({
      trustProxy: '127.0.0.1', // only this peer's X-Forwarded-For is believed
      cors: { origins: [APP] },
      ipRules: { deny: ['127.0.0.2', '203.0.113.0/24'] },
      routes: [
        {
          id: 'keyed',
          path: '/keyed',
          methods: ['GET'],
          upstream: { targets: [upstream.url] },
          auth: { methods: ['apiKey'] },
        },
        {
          id: 'office',
          path: '/office',
          mock: { body: { ok: true } },
          ipRules: { allow: ['10.0.0.0/8', '::1'] },
        },
        { id: 'free', path: '/free', mock: { body: { ok: true } } },
      ],
    });
  });
  afterAll(async () => {
    await gw.close();
    await upstream.close();
  });

  it('a denied client gets 403 forbidden before authentication, the method check, routing and CORS', async () => {
    for (const [method, path] of [
      ['GET', '/keyed'],
      ['DELETE', '/keyed'],
      ['GET', '/nowhere'],
      ['GET', '/free'],
    ] as const) {
      const res = await requestFrom('127.0.0.2', `${gw.url}${path}`, { method, headers: { origin: APP } });
      expectProblem(res, 'forbidden');
      expect(res.headers['access-control-allow-origin']).toBeUndefined();
      expect(res.headers.allow).toBeUndefined();
    }
    const preflight = await requestFrom('127.0.0.2', `${gw.url}/keyed`, {
      method: 'OPTIONS',
      headers: { origin: APP, 'access-control-request-method': 'GET' },
    });
    expectProblem(preflight, 'forbidden');
    expect(upstream.calls).toHaveLength(0);
    // Others are unaffected: 401 for a missing key, 200 on a public route.
    expectProblem(await requestFrom('127.0.0.3', `${gw.url}/keyed`), 'missing-credentials');
    expect((await requestFrom('127.0.0.3', `${gw.url}/free`)).status).toBe(200);
  });

  it('a spoofed X-Forwarded-For from an untrusted peer never lets a denied client in', async () => {
    // 127.0.0.2 is not a trusted proxy: its header is ignored, its own address is judged.
    for (const xff of ['10.1.1.1', '127.0.0.1', '10.1.1.1, 127.0.0.3'])
      expectProblem(
        await requestFrom('127.0.0.2', `${gw.url}/free`, { headers: { 'x-forwarded-for': xff } }),
        'forbidden',
      );
    // Nor does it reach an allow list through it.
    expectProblem(
      await requestFrom('127.0.0.3', `${gw.url}/office`, { headers: { 'x-forwarded-for': '10.1.1.1' } }),
      'forbidden',
    );
  });

  it('through the trusted proxy, the forwarded client address is the one judged', async () => {
    const via = (xff: string, path = '/office') =>
      requestFrom('127.0.0.1', `${gw.url}${path}`, { headers: { 'x-forwarded-for': xff } });
    expect((await via('10.1.1.1')).status).toBe(200);
    expect((await via('::ffff:10.2.3.4')).status).toBe(200);
    expectProblem(await via('192.0.2.1'), 'forbidden');
    // The top-level deny holds on a route with its own allow list (route rules combine).
    expectProblem(await via('203.0.113.5', '/free'), 'forbidden');
    // Prepending an allowed address to a denied one changes nothing: the right-most untrusted wins.
    expectProblem(await via('10.1.1.1, 203.0.113.5', '/free'), 'forbidden');
  });

  it('reload with a bad IP rule or CORS origin keeps the old config and names the path', () => {
    const config = gw.gateway.config;
    const bad = (patch: object) => {
      const result = gw.gateway.reload({ routes: [{ id: 'x', path: '/x', mock: {} }], ...patch });
      expect(result.ok).toBe(false);
      return result.ok ? [] : result.issues.map((i) => `${i.path}: ${i.message}`);
    };
    expect(bad({ ipRules: { deny: ['10.0.0/8'] } })[0]).toMatch(/^ipRules\.deny\[0\]: /);
    expect(bad({ ipRules: { allow: ['10.0.0.0/40'] } })[0]).toMatch(/^ipRules\.allow\[0\]: .*0 to 32/);
    expect(bad({ routes: [{ id: 'x', path: '/x', mock: {}, ipRules: { deny: ['not-an-ip'] } }] })[0]).toMatch(
      /^routes\[0\]\.ipRules\.deny\[0\]: /,
    );
    expect(bad({ cors: { origins: ['https://app.example.com/'] } })[0]).toMatch(
      /^cors\.origins\[0\]: .*slash/,
    );
    expect(
      bad({ routes: [{ id: 'x', path: '/x', mock: {}, cors: { origins: ['app.example.com'] } }] })[0],
    ).toMatch(/^routes\[0\]\.cors\.origins\[0\]: /);
    expect(bad({ cors: { origins: '*', credentials: true } })[0]).toMatch(/^cors\.credentials: /);
    expect(gw.gateway.config).toBe(config);
  });
});
