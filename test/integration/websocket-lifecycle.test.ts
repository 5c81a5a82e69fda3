import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import http from 'node:http';
import net from 'node:net';
import { GatewayProcess } from '../../src/main.js';
import { startGateway } from '../helpers/gateway.js';
import { request, waitFor } from '../helpers/http.js';
import { sharedRedisUrl, uniquePrefix } from '../helpers/redis.js';
import { PROCESS_START_MS, spawnCli } from '../helpers/cli.js';
import { startUpstream } from '../helpers/upstream.js';
import { closed, nextMessage, openWs, startWsUpstream } from '../helpers/websocket.js';

const cleanup: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

describe('WebSocket drain, workers and bad input', () => {
  it('on SIGTERM drain, closes open WebSockets with 1001 (both sides) after server.drainTimeoutMs', async () => {
    const up = await startWsUpstream();
    cleanup.push(() => up.close());
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-ws-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'gateway.json');
    writeFileSync(
      file,
      JSON.stringify({
        listen: { host: '127.0.0.1', port: 0 },
        server: { drainTimeoutMs: 300 },
        logging: { level: 'silent' },
        routes: [
          { id: 'chat', path: '/chat', auth: 'none', websocket: true, upstream: { targets: [up.url] } },
        ],
      }),
    );
    const proc = await GatewayProcess.start({
      configPath: file,
      env: {},
      watch: false,
      serve: { public: true, admin: false },
    });
    const port = proc.addresses().public!.port;
    const client = await openWs(`ws://127.0.0.1:${port}/chat`);
    client.send('before');
    expect((await nextMessage(client)).data.toString()).toBe('before');
    const code = closed(client, 10_000);
    const stopped = proc.shutdown();
    // During the drain the connection still works.
    client.send('during');
    expect((await nextMessage(client)).data.toString()).toBe('during');
    expect(await code).toBe(1001);
    await stopped;
    await waitFor(() => up.closes.length === 1);
    expect(up.closes[0]).toBe(1001);
  });

  it('streams SSE events one by one, unbuffered', async () => {
    let release: (() => void) | undefined;
    const up = await startUpstream(
      (_req, res) => {
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
        res.write('data: one\n\n');
        // The second event is written only once the client has read the first: a gateway that
        // buffered the stream would never let it see the first, and this test would time out.
        release = () => res.end('data: two\n\n');
      },
      { streaming: true },
    );
    cleanup.push(() => up.close());
    const gw = await startGateway({
      routes: [{ id: 'events', path: '/events', auth: 'none', upstream: { targets: [up.url] } }],
    });
    cleanup.push(() => gw.close());
    const events: string[] = [];
    await new Promise<void>((resolve, reject) => {
      const req = http.get(`${gw.url}/events`, { headers: { 'accept-encoding': 'gzip' } }, (res) => {
        expect(res.headers['content-type']).toBe('text/event-stream');
        expect(res.headers['content-encoding']).toBeUndefined();
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          events.push(chunk);
          if (events.length === 1) release!();
        });
        res.on('end', () => resolve());
        res.on('error', reject);
      });
      req.on('error', reject);
      req.setTimeout(5000, () => req.destroy(new Error('no events within 5 s')));
    });
    expect(events).toEqual(['data: one\n\n', 'data: two\n\n']);
  });

  it('bounds abandoned handshakes: partial handshakes are closed after headersTimeoutMs and the gateway keeps serving', async () => {
    const up = await startWsUpstream();
    cleanup.push(() => up.close());
    const gw = await startGateway({
      server: { headersTimeoutMs: 500, requestTimeoutMs: 1000 },
      routes: [{ id: 'chat', path: '/chat', auth: 'none', websocket: true, upstream: { targets: [up.url] } }],
    });
    cleanup.push(() => gw.close());
    const sockets: net.Socket[] = [];
    const closedCount = { n: 0 };
    for (let i = 0; i < 500; i++) {
      const s = net.connect(gw.port, '127.0.0.1');
      s.on('error', () => undefined);
      s.on('close', () => closedCount.n++);
      // The head is never finished: the handshake is abandoned half-way.
      s.write('GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n');
      sockets.push(s);
    }
    cleanup.push(() => sockets.forEach((s) => s.destroy()));
    // Meanwhile the gateway serves.
    const client = await openWs(`${gw.url.replace('http:', 'ws:')}/chat`);
    client.send('alive');
    expect((await nextMessage(client)).data.toString()).toBe('alive');
    client.close();
    await waitFor(() => closedCount.n === 500, 10_000, 50);
    expect(up.handshakes).toHaveLength(1);
    expect((await request(`${gw.url}/nope`)).status).toBe(404);
  });

  it('proxies WebSockets with workers: 2 (node:cluster), through both workers', async () => {
    const up = await startWsUpstream();
    cleanup.push(() => up.close());
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-ws-workers-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'gateway.yaml');
    writeFileSync(
      file,
      [
        'listen: { host: 127.0.0.1, port: 0 }',
        'workers: 2',
        `redis: { url: "${sharedRedisUrl}", keyPrefix: "${uniquePrefix('ws-workers')}" }`,
        'routes:',
        `  - ${JSON.stringify({ id: 'chat', path: '/chat', auth: 'none', websocket: true, upstream: { targets: [up.url] } })}`,
      ].join('\n'),
    );
    const cli = spawnCli(['--config', file]);
    cleanup.push(() => cli.stop());
    const parsed = () =>
      cli.lines.flatMap((l) => {
        try {
          return [JSON.parse(l) as Record<string, any>];
        } catch {
          return [];
        }
      });
    const listening = () => parsed().filter((l) => l.msg === 'tollgate listening' && l.listen !== null);
    await waitFor(() => listening().length === 2, PROCESS_START_MS, 50, cli.log);
    const base = `ws://${String(listening()[0]!.listen)}`;
    for (let i = 0; i < 12; i++) {
      const ws = await openWs(`${base}/chat`);
      ws.send(`m${i}`);
      expect((await nextMessage(ws)).data.toString()).toBe(`m${i}`);
      ws.close();
      await closed(ws);
    }
    expect(up.handshakes).toHaveLength(12);
    // One access-log line per WebSocket, status 101, from both workers.
    await waitFor(
      () => parsed().filter((l) => l.route === 'chat' && l.status === 101).length === 12,
      5000,
      50,
      cli.log,
    );
    const pids = new Set(
      parsed()
        .filter((l) => l.route === 'chat' && l.status === 101)
        .map((l) => l.pid as number),
    );
    expect(pids.size).toBe(2);
  });
});
