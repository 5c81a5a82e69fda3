import { afterEach, describe, expect, it } from 'vitest';
import type http from 'node:http';
import { Redis } from 'ioredis';
import { startGateway, type RunningGateway } from '../helpers/gateway.js';
import { request, waitFor } from '../helpers/http.js';
import { expectProblem } from '../helpers/problem.js';
import { startPrivateRedis, type PrivateRedis } from '../helpers/redis.js';
import { startUpstream } from '../helpers/upstream.js';
import { openWs, refused, startWsUpstream } from '../helpers/websocket.js';
import type { ConfigInput } from '../../src/config/schema.js';
import { ResilientConcurrency } from '../../src/policies/concurrency/store.js';
import { isProblem } from '../../src/problems/problem.js';
import { createRedis } from '../../src/shared/redis.js';

// Concurrency limits while Redis is away follow `redis.onError` (SPEC §7, §9): `closed` answers
// 503, `open` counts slots per instance in memory. Against a private redis-server this file starts,
// freezes and kills — never the shared one.

const cleanup: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

async function setUp(onError: 'closed' | 'open') {
  const redis = await startPrivateRedis();
  cleanup.push(() => redis.stop(true));
  const waiting: http.ServerResponse[] = [];
  const up = await startUpstream(
    (req, res) => {
      if (req.url?.endsWith('/fast')) res.end('fast');
      else waiting.push(res);
    },
    { streaming: true },
  );
  cleanup.push(() => {
    for (const res of waiting) res.destroy();
    return up.close();
  });
  const ws = await startWsUpstream();
  cleanup.push(() => ws.close());
  const config: ConfigInput = {
    redis: { url: redis.url, keyPrefix: `cc-outage-${onError}:`, commandTimeoutMs: 200, onError },
    routes: [
      {
        id: 'slow',
        path: '/slow',
        auth: 'none',
        concurrency: { limit: 1, by: 'ip' },
        upstream: { targets: [up.url], timeoutMs: 10_000 },
      },
      {
        id: 'chat',
        path: '/chat',
        auth: 'none',
        websocket: true,
        concurrency: { limit: 1, by: 'ip' },
        upstream: { targets: [ws.url] },
      },
    ],
  };
  const gw = await startGateway(config);
  cleanup.push(() => gw.close());
  return { redis, gw, waiting };
}

const fast = (gw: RunningGateway) => request(`${gw.url}/slow/fast`, { timeoutMs: 5000 });
const wsUrl = (gw: RunningGateway) => `${gw.url.replace('http:', 'ws:')}/chat`;

async function slotCount(redis: PrivateRedis): Promise<number> {
  const admin = new Redis(redis.url);
  try {
    const keys = await admin.keys('*cc:*');
    let n = 0;
    for (const k of keys) n += await admin.zcard(k);
    return n;
  } finally {
    admin.disconnect();
  }
}

describe('concurrency limits while Redis is away', () => {
  it('redis.onError: closed (the default) answers 503 with Retry-After, for HTTP and WebSocket handshakes, and recovers without a restart', async () => {
    const { redis, gw, waiting } = await setUp('closed');
    expect((await fast(gw)).status).toBe(200);

    // Frozen: every acquisition waits at most redis.commandTimeoutMs, then fails closed.
    redis.freeze();
    const frozen = await fast(gw);
    expectProblem(frozen, 'service-unavailable');
    expect(frozen.headers['retry-after']).toBe('1');
    redis.thaw();
    // The timed-out script ran once Redis thawed; its slot is removed right behind it, so the
    // limit of 1 is free again (a leftover slot would refuse every request for a whole lease).
    await waitFor(async () => (await fast(gw)).status === 200, 10_000, 100);
    // That request's own release is batched (sent within a few ms of its response): then none is left.
    await waitFor(async () => (await slotCount(redis)) === 0, 5000, 20);

    // Dead: the same, at once, on both kinds of route; nothing reaches the upstream.
    await redis.stop(true);
    await waitFor(async () => (await fast(gw)).status === 503, 5000, 50);
    const held = await fast(gw);
    expectProblem(held, 'service-unavailable');
    expect(held.json().detail).toMatch(/concurrency/i);
    const handshake = await refused(openWs(wsUrl(gw)));
    expect(handshake.status).toBe(503);
    expect(handshake.headers['content-type']).toMatch(/application\/problem\+json/);
    expect(handshake.headers['x-request-id']).toBeDefined();
    expect(waiting).toHaveLength(0);

    // Back: slots are taken in Redis again.
    await redis.start();
    await waitFor(() => gw.gateway.services.redis!.ready, 15_000, 100);
    await waitFor(async () => (await fast(gw)).status === 200, 5000, 100);
    const slow = request(`${gw.url}/slow/held`, { timeoutMs: 5000 });
    await waitFor(() => waiting.length === 1);
    expect(await slotCount(redis)).toBe(1);
    waiting[0]!.end('done');
    expect((await slow).status).toBe(200);
  });

  it('redis.onError: open keeps limiting per instance on memory slots, and a slot taken in memory is freed there', async () => {
    const { redis, gw, waiting } = await setUp('open');
    expect((await fast(gw)).status).toBe(200);
    await redis.stop(true);
    await waitFor(() => !gw.gateway.services.redis!.ready, 5000);

    // One slot per IP on this instance: a held request fills it, the next is 429 concurrency.
    const slow = request(`${gw.url}/slow/held`, { timeoutMs: 5000 });
    await waitFor(() => waiting.length === 1);
    const over = await fast(gw);
    expectProblem(over, 'rate-limit-exceeded');
    expect(over.json().policy).toBe('concurrency');
    expect(over.headers['retry-after']).toBe('1');
    waiting[0]!.end('done');
    expect((await slow).status).toBe(200);
    await waitFor(async () => (await fast(gw)).status === 200, 5000, 50);

    // A WebSocket takes a memory slot too.
    const first = await openWs(wsUrl(gw));
    cleanup.push(() => first.terminate());
    expect((await refused(openWs(wsUrl(gw)))).status).toBe(429);
    first.close();
    await waitFor(
      async () => {
        try {
          (await openWs(wsUrl(gw))).terminate();
          return true;
        } catch {
          return false;
        }
      },
      5000,
      50,
    );

    // Redis back: slots live there again.
    await redis.start();
    await waitFor(() => gw.gateway.services.redis!.ready, 15_000, 100);
    const again = request(`${gw.url}/slow/held-again`, { timeoutMs: 5000 });
    await waitFor(() => waiting.length === 2);
    expect(await slotCount(redis)).toBe(1);
    waiting[1]!.end('done');
    expect((await again).status).toBe(200);
  });

  it("the library store (`new ResilientConcurrency(redis)`) follows the handle's onError", async () => {
    const redis = await startPrivateRedis();
    cleanup.push(() => redis.stop(true));
    const closed = createRedis({ url: redis.url, keyPrefix: 'cc-lib-closed:', commandTimeoutMs: 200 });
    const open = createRedis({
      url: redis.url,
      keyPrefix: 'cc-lib-open:',
      commandTimeoutMs: 200,
      onError: 'open',
    });
    cleanup.push(
      () => closed.close(),
      () => open.close(),
    );
    await Promise.all([closed.whenReady(5000), open.whenReady(5000)]);
    const failClosed = new ResilientConcurrency(closed);
    const failOpen = new ResilientConcurrency(open);
    const slot = await failClosed.acquire('k', 1, 5000);
    expect(slot).toBeDefined();
    await failClosed.release(slot!);

    await redis.stop(true);
    await waitFor(() => !closed.ready && !open.ready, 5000);
    let refused: unknown;
    try {
      await failClosed.acquire('k', 1, 5000);
    } catch (err) {
      refused = err;
    }
    expect(isProblem(refused) && refused.slug).toBe('service-unavailable');
    const first = await failOpen.acquire('k', 1, 5000);
    expect(first).toBeDefined();
    expect(await failOpen.acquire('k', 1, 5000)).toBeUndefined(); // limit 1, on this instance
    await failOpen.release(first!);
    expect(await failOpen.acquire('k', 1, 5000)).toBeDefined();
    expect(failClosed.fallbacks).toBe(1);
  });
});
