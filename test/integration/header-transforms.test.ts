import { afterEach, describe, expect, it } from 'vitest';
import { startGateway } from '../helpers/gateway.js';
import { request } from '../helpers/http.js';
import { startUpstream } from '../helpers/upstream.js';
import { expectProblem } from '../helpers/problem.js';

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

async function setup() {
  const up = await startUpstream((req, res) => {
    res.writeHead(200, {
      'content-type': 'application/json',
      'x-backend-node': 'node-7.internal',
      'cache-control': 'private',
      'x-kept': 'yes',
    });
    res.end(JSON.stringify({ headers: req.headers }));
  });
  cleanup.push(() => up.close());
  const config = {
    routes: [
      {
        id: 'orders',
        path: '/v1/orders',
        auth: { methods: ['apiKey'] },
        headers: {
          request: {
            set: { 'X-Api-Version': '2', Authorization: 'Basic dXA6c2VjcmV0' },
            remove: ['Cookie', 'X-Debug'],
          },
          response: {
            set: { 'Cache-Control': 'no-store, max-age=0', 'X-Served-By': 'tollgate' },
            remove: ['X-Backend-Node'],
          },
        },
        upstream: { targets: [up.url] },
      },
      { id: 'plain', path: '/v1/plain', auth: 'none', upstream: { targets: [up.url] } },
      {
        id: 'demo',
        path: '/demo',
        headers: { response: { set: { 'X-Served-By': 'mock' } } },
        mock: { body: { ok: true } },
      },
    ],
  };
  const gw = await startGateway(config as any);
  cleanup.push(() => gw.close());
  const { key } = await gw.gateway.services.keys.create({ name: 'h', ownerId: 'alice' });
  return { gw, up, config, key };
}

describe('header transforms through real sockets (SPEC §9)', () => {
  it('request: set replaces the client copies in every spelling, remove drops them; the identity headers stay the gateway’s', async () => {
    const { gw, up, key } = await setup();
    const res = await request(`${gw.url}/v1/orders`, {
      headers: {
        'x-api-key': key,
        cookie: 'session=secret',
        'x-debug': '1',
        x_debug: '1',
        x_api_version: '1',
        'x-api-version': '1',
        x_consumer_id: 'mallory',
      },
    });
    expect(res.status).toBe(200);
    const seen = up.calls[0]!.headers;
    expect(seen['x-api-version']).toBe('2');
    expect(seen.x_api_version).toBeUndefined();
    expect(seen.cookie).toBeUndefined();
    expect(seen['x-debug']).toBeUndefined();
    expect(seen.x_debug).toBeUndefined();
    // The API key never goes upstream; the upstream's own credential does.
    expect(seen['x-api-key']).toBeUndefined();
    expect(seen.authorization).toBe('Basic dXA6c2VjcmV0');
    expect(seen['x-consumer-id']).toBe('alice');
    expect(seen.x_consumer_id).toBeUndefined();
  });

  it('response: set replaces the upstream’s value, remove drops it; others pass; a route without transforms is untouched', async () => {
    const { gw, key } = await setup();
    const res = await request(`${gw.url}/v1/orders`, { headers: { 'x-api-key': key } });
    expect(res.headers['cache-control']).toBe('no-store, max-age=0');
    expect(res.headers['x-served-by']).toBe('tollgate');
    expect(res.headers['x-backend-node']).toBeUndefined();
    expect(res.headers['x-kept']).toBe('yes');
    expect(res.rawHeaders.filter((h) => h.toLowerCase() === 'cache-control')).toHaveLength(1);
    const plain = await request(`${gw.url}/v1/plain`, { headers: { cookie: 'c=1' } });
    expect(plain.headers['x-backend-node']).toBe('node-7.internal');
    expect(plain.headers['cache-control']).toBe('private');
    expect(plain.json().headers.cookie).toBe('c=1');
    expect((await request(`${gw.url}/demo`)).headers['x-served-by']).toBe('mock');
  });

  it('the gateway’s own refusals before the transforms carry none, and keep problem+json', async () => {
    const { gw } = await setup();
    const res = await request(`${gw.url}/v1/orders`);
    expectProblem(res, 'missing-credentials');
    expect(res.headers['x-served-by']).toBeUndefined();
    expect(res.headers['cache-control']).toBe('no-store');
  });

  it('reload with a protected or malformed header is refused with its path and keeps the old transforms', async () => {
    const { gw, config, key } = await setup();
    const cases: Array<[unknown, string]> = [
      [{ request: { set: { 'X-Consumer-Id': 'admin' } } }, 'routes[0].headers.request.set.X-Consumer-Id'],
      [{ request: { remove: ['X_Request_Id'] } }, 'routes[0].headers.request.remove[0]'],
      [{ response: { remove: ['RateLimit'] } }, 'routes[0].headers.response.remove[0]'],
      [{ response: { set: { 'X Bad': '1' } } }, 'routes[0].headers.response.set["X Bad"]'],
      [{ request: { set: { 'X-A': 'a\r\nX-Consumer-Id: admin' } } }, 'routes[0].headers.request.set.X-A'],
    ];
    for (const [headers, path] of cases) {
      const bad = structuredClone(config);
      (bad.routes[0] as any).headers = headers;
      const result = gw.gateway.reload(bad);
      expect(result.ok, path).toBe(false);
      if (!result.ok) expect(result.issues.map((i) => i.path)).toEqual([path]);
    }
    const res = await request(`${gw.url}/v1/orders`, { headers: { 'x-api-key': key } });
    expect(res.headers['x-served-by']).toBe('tollgate');
  });
});
