import { afterEach, describe, expect, it } from 'vitest';
import http from 'node:http';
import { startGateway, type RunningGateway } from '../helpers/gateway.js';
import { request, waitFor } from '../helpers/http.js';
import { expectProblem } from '../helpers/problem.js';
import { sharedRedisUrl, uniquePrefix } from '../helpers/redis.js';
import { startGatewayProcess } from '../helpers/process.js';
import { startUpstream } from '../helpers/upstream.js';
import { closed, nextMessage, openWs, refused, startWsUpstream } from '../helpers/websocket.js';
import type { ConfigInput } from '../../src/config/schema.js';

const cleanup: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

async function gateway(config: ConfigInput): Promise<RunningGateway> {
  const gw = await startGateway(config);
  cleanup.push(() => gw.close());
  return gw;
}

describe('concurrency limits (SPEC §9)', () => {
  it('across two instances on Redis: the third WebSocket of a key with limit 2 is refused, a slot is freed on close', async () => {
    const up = await startWsUpstream();
    cleanup.push(() => up.close());
    const keyPrefix = uniquePrefix('concurrency');
    const config: ConfigInput = {
      redis: { url: sharedRedisUrl, keyPrefix, commandTimeoutMs: 2000 },
      routes: [
        {
          id: 'chat',
          path: '/chat',
          auth: { methods: ['apiKey'] },
          websocket: true,
          concurrency: { limit: 2, by: 'key' },
          upstream: { targets: [up.url] },
        },
      ],
    };
    const a = await gateway(config);
    const b = await gateway(config);
    const { key } = await a.gateway.services.keys.create({ name: 'streamer' });
    const { key: other } = await a.gateway.services.keys.create({ name: 'other' });
    const ws = (gw: RunningGateway) => `${gw.url.replace('http:', 'ws:')}/chat`;
    const first = await openWs(ws(a), { headers: { 'x-api-key': key } });
    cleanup.push(() => first.terminate());
    const second = await openWs(ws(b), { headers: { 'x-api-key': key } });
    cleanup.push(() => second.terminate());
    const third = await refused(openWs(ws(a), { headers: { 'x-api-key': key } }));
    const body = expectProblem(
      { status: third.status, headers: third.headers, json: () => third.json() },
      'rate-limit-exceeded',
    );
    expect(body.policy).toBe('concurrency');
    expect(third.headers['retry-after']).toBe('1');
    expect(up.handshakes).toHaveLength(2);
    // Another key has its own slots.
    const others = await openWs(ws(b), { headers: { 'x-api-key': other } });
    others.close();
    await closed(others);
    // The first connection closes: its slot is free for the next handshake, on either instance.
    first.close();
    await closed(first);
    await waitFor(
      async () => {
        try {
          const again = await openWs(ws(b), { headers: { 'x-api-key': key } });
          cleanup.push(() => again.terminate());
          return true;
        } catch {
          return false;
        }
      },
      5000,
      50,
    );
    second.send('still');
    expect((await nextMessage(second)).data.toString()).toBe('still');
    const metrics = await a.gateway.services.metrics.text();
    expect(metrics).toContain('tollgate_rate_limit_rejections_total{route="chat",policy="concurrency"} 1');
  });

  it('limits HTTP requests in flight per instance (memory), freeing the slot when the response ends or the client leaves', async () => {
    const waiting: http.ServerResponse[] = [];
    const up = await startUpstream(
      (req, res) => {
        if (req.url === '/slow/fast') res.end('fast');
        else waiting.push(res);
      },
      { streaming: true },
    );
    cleanup.push(() => up.close());
    const gw = await gateway({
      routes: [
        {
          id: 'slow',
          path: '/slow',
          auth: 'none',
          concurrency: { limit: 1, by: 'ip' },
          upstream: { targets: [up.url], timeoutMs: 10_000 },
        },
      ],
    });
    const held = request(`${gw.url}/slow/1`);
    await waitFor(() => waiting.length === 1);
    const over = await request(`${gw.url}/slow/fast`);
    expectProblem(over, 'rate-limit-exceeded');
    expect(over.json().policy).toBe('concurrency');
    expect(over.headers['retry-after']).toBe('1');
    waiting[0]!.end('done');
    expect((await held).status).toBe(200);
    await waitFor(async () => (await request(`${gw.url}/slow/fast`)).status === 200);

    // A client that leaves mid-request frees its slot too.
    const leaving = http.get(`${gw.url}/slow/2`);
    leaving.on('error', () => undefined);
    await waitFor(() => waiting.length === 2);
    leaving.destroy();
    await waitFor(async () => (await request(`${gw.url}/slow/fast`)).status === 200);
    waiting[1]!.destroy();
  });

  it("frees a killed gateway's slots when their lease expires", async () => {
    const up = await startWsUpstream();
    cleanup.push(() => up.close());
    const keyPrefix = uniquePrefix('lease');
    const route = {
      id: 'chat',
      path: '/chat',
      auth: 'none' as const,
      websocket: true,
      concurrency: { limit: 1, by: 'route' as const, leaseSec: 1 },
      upstream: { targets: [up.url] },
    };
    const proc = await startGatewayProcess(
      [
        'listen: { host: 127.0.0.1, port: 0 }',
        `redis: { url: "${sharedRedisUrl}", keyPrefix: "${keyPrefix}" }`,
        'routes:',
        `  - ${JSON.stringify(route)}`,
      ].join('\n'),
    );
    cleanup.push(() => proc.stop());
    const b = await gateway({
      redis: { url: sharedRedisUrl, keyPrefix, commandTimeoutMs: 2000 },
      routes: [route],
    });
    const held = await openWs(`${proc.url.replace('http:', 'ws:')}/chat`);
    held.on('error', () => undefined);
    cleanup.push(() => held.terminate());
    expect((await refused(openWs(`${b.url.replace('http:', 'ws:')}/chat`))).status).toBe(429);
    proc.cli.child.kill('SIGKILL'); // no release, no renewal: only the lease can free the slot
    await waitFor(
      async () => {
        try {
          const ws = await openWs(`${b.url.replace('http:', 'ws:')}/chat`);
          cleanup.push(() => ws.terminate());
          return true;
        } catch {
          return false;
        }
      },
      10_000,
      100,
    );
  });
});
