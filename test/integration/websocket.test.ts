import { afterEach, describe, expect, it } from 'vitest';
import net from 'node:net';
import type WebSocket from 'ws';
import { startGateway, type RunningGateway } from '../helpers/gateway.js';
import { parseRaw, request, waitFor } from '../helpers/http.js';
import { expectProblem } from '../helpers/problem.js';
import {
  closed,
  nextMessage,
  openWs,
  refused,
  startWsUpstream,
  type WsUpstream,
} from '../helpers/websocket.js';
import type { ConfigInput } from '../../src/config/schema.js';

const cleanup: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

async function setup(
  route: Record<string, unknown> = {},
  up?: WsUpstream,
  extra: Partial<ConfigInput> = {},
): Promise<{ gw: RunningGateway; up: WsUpstream; ws: string }> {
  const upstream = up ?? (await startWsUpstream());
  if (!up) cleanup.push(() => upstream.close());
  const gw = await startGateway({
    routes: [
      {
        id: 'chat',
        path: '/chat',
        auth: { methods: ['apiKey'] },
        websocket: true,
        upstream: { targets: [upstream.url] },
        ...route,
      },
      { id: 'plain', path: '/plain', auth: 'none', upstream: { targets: [upstream.url] } },
    ],
    ...extra,
  });
  cleanup.push(() => gw.close());
  return { gw, up: upstream, ws: gw.url.replace('http:', 'ws:') };
}

/** Opens a client and registers it for cleanup. */
async function open(url: string, headers?: Record<string, string>): Promise<WebSocket> {
  const ws = await openWs(url, { headers });
  cleanup.push(() => ws.terminate());
  return ws;
}

/** Sends a raw handshake and reads the answer until the gateway closes the socket (bounded). */
function rawHandshake(port: number, text: string, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error('the gateway did not close the socket'));
    }, timeoutMs);
    socket.on('data', (c) => chunks.push(c));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks).toString('latin1'));
    });
    socket.write(text);
  });
}

const KEY = 'dGhlIHNhbXBsZSBub25jZQ==';

describe('WebSocket proxying (SPEC §9)', () => {
  it('refuses a handshake without a credential with a 401 problem, and no upstream connection is made', async () => {
    const { ws, up } = await setup();
    const r = await refused(openWs(`${ws}/chat`));
    const body = expectProblem(
      { status: r.status, headers: r.headers, json: () => r.json() },
      'missing-credentials',
    );
    expect(body.request_id).toBe(r.headers['x-request-id']);
    expect(up.handshakes).toHaveLength(0);
    expect(up.wss.clients.size).toBe(0);
  });

  it('echoes text and binary messages both ways, with identity and correlation headers upstream', async () => {
    const { gw, ws, up } = await setup();
    const { key } = await gw.gateway.services.keys.create({ name: 'chat', ownerId: 'alice' });
    const client = await open(`${ws}/chat?room=1`, {
      'x-api-key': key,
      'x-request-id': 'ws-req-1',
      'x-consumer-id': 'forged',
    });
    client.send('hello');
    const text = await nextMessage(client);
    expect(text.isBinary).toBe(false);
    expect(text.data.toString()).toBe('hello');
    const bytes = Buffer.from([0, 1, 2, 250, 255]);
    client.send(bytes);
    const binary = await nextMessage(client);
    expect(binary.isBinary).toBe(true);
    expect(binary.data.equals(bytes)).toBe(true);
    // A message the upstream starts.
    up.clients[0]!.send('from upstream');
    expect((await nextMessage(client)).data.toString()).toBe('from upstream');

    const h = up.handshakes[0]!;
    expect(h.url).toBe('/chat?room=1');
    expect(h.headers['x-request-id']).toBe('ws-req-1');
    expect(h.headers.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    expect(h.headers.via).toBe('1.1 tollgate');
    expect(h.headers['x-forwarded-for']).toBe('127.0.0.1');
    expect(h.headers['x-forwarded-proto']).toBe('http');
    expect(h.headers['x-consumer-id']).toBe('alice');
    expect(h.headers['x-auth-method']).toBe('api-key');
    expect(h.headers['x-api-key']).toBeUndefined();
    expect(h.headers.upgrade).toBe('websocket');
    expect(h.headers.connection).toBe('Upgrade');

    client.close(1000, 'bye');
    expect(await closed(client)).toBe(1000);
    await waitFor(() => up.closes.length === 1);
    expect(up.closes[0]).toBe(1000);
    // One audit record: status 101, its duration, the bytes each way, the close code.
    await waitFor(async () => (await gw.gateway.services.audit.get('ws-req-1')) !== undefined);
    const record = (await gw.gateway.services.audit.get('ws-req-1'))!;
    expect(record).toMatchObject({ status: 101, route: 'chat', upstream_status: 101, close_code: 1000 });
    expect(record.bytes_in).toBeGreaterThan(0);
    expect(record.bytes_out).toBeGreaterThan(0);
    expect(record.latency_ms).toBeGreaterThan(0);
    const metrics = await gw.gateway.services.metrics.text();
    expect(metrics).toContain('tollgate_websocket_handshakes_total{route="chat",outcome="accepted"} 1');
  });

  it('takes the credential from access_token, and it reaches no upstream URL, header, audit record or metric', async () => {
    const { gw, ws, up } = await setup();
    const { key } = await gw.gateway.services.keys.create({ name: 'browser' });
    const client = await open(`${ws}/chat?a=1&access_token=${encodeURIComponent(key)}&b=2`, {
      'x-request-id': 'ws-token-1',
    });
    client.send('ping');
    expect((await nextMessage(client)).data.toString()).toBe('ping');
    const h = up.handshakes[0]!;
    expect(h.url).toBe('/chat?a=1&b=2');
    expect(h.headers.authorization).toBeUndefined();
    expect(JSON.stringify(h)).not.toContain(key);
    client.close();
    await closed(client);
    await waitFor(async () => (await gw.gateway.services.audit.get('ws-token-1')) !== undefined);
    expect(JSON.stringify(await gw.gateway.services.audit.get('ws-token-1'))).not.toContain(key);
    expect(await gw.gateway.services.metrics.text()).not.toContain(key.slice(0, 12));

    const wrong = key.slice(0, -2) + (key.endsWith('AA') ? 'BB' : 'AA');
    const bad = await refused(openWs(`${ws}/chat?access_token=${encodeURIComponent(wrong)}`));
    expect(bad.status).toBe(401);
    const twice = await refused(openWs(`${ws}/chat?access_token=${key}&access_token=${key}`));
    expect(twice.status).toBe(400);
  });

  it('answers an upgrade on a route without websocket: true, and malformed handshakes, with 400 problems', async () => {
    const { gw, up } = await setup({ auth: 'none' });
    const handshake = (path: string, headers: string) =>
      rawHandshake(
        gw.port,
        `GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n${headers}\r\n`,
      );
    for (const [path, headers, detail] of [
      ['/plain', `Sec-WebSocket-Key: ${KEY}\r\nSec-WebSocket-Version: 13\r\n`, 'does not accept'],
      ['/chat', 'Sec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n', 'Sec-WebSocket-Key'],
      ['/chat', 'Sec-WebSocket-Version: 13\r\n', 'Sec-WebSocket-Key'],
      ['/chat', `Sec-WebSocket-Key: ${KEY}\r\nSec-WebSocket-Version: 8\r\n`, 'version 13'],
    ] as const) {
      const text = await handshake(path, headers);
      const reply = parseRaw(text);
      expect(reply.status, `${path} ${headers}`).toBe(400);
      expect(reply.headers['content-type']).toBe('application/problem+json');
      expect(reply.headers['x-request-id']).toBeTruthy();
      expect(JSON.parse(reply.body).detail).toContain(detail);
    }
    const version = parseRaw(
      await handshake('/chat', `Sec-WebSocket-Key: ${KEY}\r\nSec-WebSocket-Version: 8\r\n`),
    );
    expect(version.headers['sec-websocket-version']).toBe('13');
    // Another protocol on the websocket route.
    const h2c = parseRaw(
      await rawHandshake(
        gw.port,
        `GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nSec-WebSocket-Key: ${KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
      ),
    );
    expect(h2c.status).toBe(400);
    expect(up.handshakes).toHaveLength(0);
    // A plain request to the websocket route is proxied as HTTP.
    const plain = await request(`${gw.url}/chat`);
    expect(plain.status).toBe(404);
  });

  it("rewrites an upstream's refusal of the handshake as a problem", async () => {
    const up = await startWsUpstream();
    cleanup.push(() => up.close());
    up.wss.options.verifyClient = (_info: unknown, cb: (ok: boolean, code?: number) => void) =>
      cb(false, 403);
    const { ws } = await setup({ auth: 'none' }, up);
    const r = await refused(openWs(`${ws}/chat`));
    expect(r.status).toBe(403);
    expect(r.headers['content-type']).toBe('application/problem+json');
    expect(r.json()).toMatchObject({ status: 403, request_id: r.headers['x-request-id'] });
  });

  it('answers 502 when the upstream cannot be reached, and 503 when every target is out', async () => {
    const up = await startWsUpstream();
    const url = up.url;
    await up.close();
    const gw = await startGateway({
      routes: [
        {
          id: 'chat',
          path: '/chat',
          auth: 'none',
          websocket: true,
          upstream: { targets: [url], retries: 0, passiveHealth: { failures: 1, cooldownSec: 30 } },
        },
      ],
    });
    cleanup.push(() => gw.close());
    const ws = gw.url.replace('http:', 'ws:');
    expect((await refused(openWs(`${ws}/chat`))).status).toBe(502);
    const out = await refused(openWs(`${ws}/chat`));
    expect(out.status).toBe(503);
    expect(out.headers['retry-after']).toBeTruthy();
  });

  it('picks targets round robin and skips one that refuses connections', async () => {
    const a = await startWsUpstream();
    const b = await startWsUpstream();
    const dead = await startWsUpstream();
    const deadUrl = dead.url;
    await dead.close();
    cleanup.push(
      () => a.close(),
      () => b.close(),
    );
    const gw = await startGateway({
      routes: [
        {
          id: 'chat',
          path: '/chat',
          auth: 'none',
          websocket: true,
          upstream: { targets: [a.url, deadUrl, b.url], retries: 1 },
        },
      ],
    });
    cleanup.push(() => gw.close());
    const ws = gw.url.replace('http:', 'ws:');
    for (let i = 0; i < 4; i++) {
      const c = await open(`${ws}/chat`);
      c.close();
      await closed(c);
    }
    expect(a.handshakes.length + b.handshakes.length).toBe(4);
    expect(a.handshakes.length).toBeGreaterThan(0);
    expect(b.handshakes.length).toBeGreaterThan(0);
  });

  it('carries a large message both ways with backpressure', async () => {
    const { ws } = await setup({ auth: 'none' });
    const client = await open(`${ws}/chat`);
    const big = Buffer.alloc(8 * 1024 * 1024, 7);
    big[big.length - 1] = 9;
    const back = nextMessage(client, 20_000);
    client.send(big);
    const got = await back;
    expect(got.data.length).toBe(big.length);
    expect(got.data.equals(big)).toBe(true);
  });

  it('closes the client when the upstream dies mid-connection, and the upstream when the client leaves', async () => {
    const { ws, up, gw } = await setup({ auth: 'none' });
    const client = await open(`${ws}/chat`);
    client.send('x');
    await nextMessage(client);
    up.clients[0]!.terminate(); // the upstream process dies: TCP closes without a close frame
    expect(await closed(client)).toBe(1006);
    await waitFor(() => gw.gateway.openWebSockets === 0);

    const second = await open(`${ws}/chat`);
    second.send('y');
    await nextMessage(second);
    second.terminate(); // the client leaves without a close frame
    await waitFor(() => up.closes.length === 2);
    expect(up.closes[1]).toBe(1006);
    await waitFor(() => gw.gateway.openWebSockets === 0);
  });

  it('closes a silent WebSocket with 1001 after idleTimeoutSec, to both sides', async () => {
    const { ws, up } = await setup({ auth: 'none', websocket: { idleTimeoutSec: 1 } });
    const client = await open(`${ws}/chat`);
    client.send('x');
    await nextMessage(client);
    expect(await closed(client, 5000)).toBe(1001);
    await waitFor(() => up.closes.length === 1);
    expect(up.closes[0]).toBe(1001);
  });

  it('keeps an open WebSocket on its config across a reload that removes its route', async () => {
    const { gw, ws, up } = await setup({ auth: 'none' });
    const client = await open(`${ws}/chat`);
    const result = gw.gateway.reload({
      listen: { host: '127.0.0.1', port: 0 },
      routes: [{ id: 'plain', path: '/plain', auth: 'none', upstream: { targets: [up.url] } }],
    });
    expect(result.ok).toBe(true);
    client.send('still here');
    expect((await nextMessage(client)).data.toString()).toBe('still here');
    // New handshakes see the new config.
    expect((await refused(openWs(`${ws}/chat`))).status).toBe(404);
  });

  it('closes open WebSockets with 1001 on demand (the drain), and counts them in the gauge', async () => {
    const { gw, ws, up } = await setup({ auth: 'none' });
    const a = await open(`${ws}/chat`);
    const b = await open(`${ws}/chat`);
    await waitFor(() => gw.gateway.openWebSockets === 2);
    expect(await gw.gateway.services.metrics.text()).toContain(
      'tollgate_websocket_connections{route="chat"} 2',
    );
    gw.gateway.closeWebSockets(1001);
    expect(await closed(a)).toBe(1001);
    expect(await closed(b)).toBe(1001);
    await waitFor(() => up.closes.length === 2);
    expect(up.closes).toEqual([1001, 1001]);
  });
});

describe('Express library: proxy() WebSocket path', () => {
  it("proxies handshakes from the app server's upgrade event, and answers a malformed one with a problem", async () => {
    const { default: express } = await import('express');
    const { proxy } = await import('../../src/index.js');
    const { createServer } = await import('node:http');
    const up = await startWsUpstream();
    cleanup.push(() => up.close());
    const app = express();
    const chat = proxy({ targets: [up.url] });
    app.use('/chat', chat);
    const server = createServer(app);
    server.on('upgrade', chat.upgrade);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanup.push(
      () =>
        new Promise<void>((resolve) => {
          chat.websockets.closeAll();
          server.closeAllConnections();
          server.close(() => resolve());
        }),
    );
    const port = (server.address() as net.AddressInfo).port;
    const client = await open(`ws://127.0.0.1:${port}/chat?x=1`);
    client.send('via express');
    expect((await nextMessage(client)).data.toString()).toBe('via express');
    expect(up.handshakes[0]!.url).toBe('/chat?x=1');
    expect(up.handshakes[0]!.headers.via).toBe('1.1 tollgate');
    const bad = parseRaw(
      await rawHandshake(
        port,
        'GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n',
      ),
    );
    expect(bad.status).toBe(400);
    expect(bad.headers['content-type']).toBe('application/problem+json');
  });
});

describe('WebSocket and concurrency config', () => {
  it('names the path of invalid fields, and a reload with them keeps the old config', async () => {
    const { validateConfig } = await import('../../src/config/load.js');
    const bad = validateConfig(
      {
        routes: [
          { id: 'a', path: '/a', mock: { body: {} }, websocket: true },
          {
            id: 'b',
            path: '/b',
            auth: 'none',
            upstream: { targets: ['http://127.0.0.1:1'] },
            websocket: { idleTimeoutSec: 0 },
            concurrency: { limit: 0, by: 'key' },
          },
        ],
      },
      {},
    );
    expect(bad.ok).toBe(false);
    const paths = bad.ok ? [] : bad.issues.map((i) => i.path);
    expect(paths).toEqual(
      expect.arrayContaining([
        'routes[0].websocket',
        'routes[1].websocket.idleTimeoutSec',
        'routes[1].concurrency.limit',
      ]),
    );
    const { gw, ws } = await setup({ auth: 'none' });
    const reload = gw.gateway.reload({
      listen: { host: '127.0.0.1', port: 0 },
      routes: [
        {
          id: 'chat',
          path: '/chat',
          auth: 'none',
          websocket: 'yes',
          upstream: { targets: ['http://127.0.0.1:1'] },
        },
      ],
    });
    expect(reload.ok).toBe(false);
    const client = await open(`${ws}/chat`);
    client.send('old config');
    expect((await nextMessage(client)).data.toString()).toBe('old config');
  });
});
