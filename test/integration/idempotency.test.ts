import { afterAll, afterEach, describe, expect, it } from 'vitest';
import http from 'node:http';
import express from 'express';
import type { AddressInfo } from 'node:net';
import { startGateway, type RunningGateway } from '../helpers/gateway.js';
import { request, waitFor } from '../helpers/http.js';
import { startUpstream } from '../helpers/upstream.js';
import { expectProblem } from '../helpers/problem.js';
import { sharedRedisUrl, startPrivateRedis, uniquePrefix } from '../helpers/redis.js';
import { ManualClock } from '../../src/core/clock.js';
import {
  MemoryIdempotencyStore,
  RedisIdempotencyStore,
  type IdempotencyStore,
} from '../../src/policies/idempotency/store.js';
import { RedisHandle } from '../../src/shared/redis.js';
import { silentLogger } from '../../src/observability/logger.js';
import { idempotency, problemDetails, requestId } from '../../src/index.js';

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});
const handles: RedisHandle[] = [];
afterAll(async () => {
  await Promise.all(handles.map((h) => h.close()));
});

describe.each([
  ['memory', (clock: ManualClock) => Promise.resolve(new MemoryIdempotencyStore(clock) as IdempotencyStore)],
  [
    'redis',
    async () => {
      const h = new RedisHandle(
        {
          url: sharedRedisUrl,
          keyPrefix: uniquePrefix('idem-store'),
          commandTimeoutMs: 1000,
          connectTimeoutMs: 1000,
          onError: 'closed',
        },
        silentLogger(),
      );
      handles.push(h);
      await waitFor(() => h.ready, 5000);
      return new RedisIdempotencyStore(h) as IdempotencyStore;
    },
  ],
] as const)('IdempotencyStore contract: %s', (name, make) => {
  const response = { status: 201, headers: ['x-a', '1'], body: Buffer.from('done').toString('base64') };

  it('gives a free key to exactly one of many concurrent callers', async () => {
    const store = await make(new ManualClock());
    const results = await Promise.all(
      Array.from({ length: 50 }, () => Promise.resolve(store.begin('k{a}', 'fp', 5000))),
    );
    expect(results.filter((r) => r.state === 'acquired')).toHaveLength(1);
    expect(results.filter((r) => r.state === 'locked')).toHaveLength(49);
  });

  it('keeps the response in place of the lock; a release frees the key; nobody else can touch a lock', async () => {
    const store = await make(new ManualClock());
    const first = await store.begin('k{b}', 'fp1', 5000);
    expect(first.state).toBe('acquired');
    const owner = (first as { owner: string }).owner;
    await store.release('k{b}', 'someone-else');
    expect((await store.begin('k{b}', 'fp1', 5000)).state).toBe('locked');
    await store.complete('k{b}', owner, 'fp1', response, 60_000);
    expect(await store.begin('k{b}', 'fp2', 5000)).toEqual({ state: 'done', fingerprint: 'fp1', response });
    const other = await store.begin('k{c}', 'x', 5000);
    await store.release('k{c}', (other as { owner: string }).owner);
    expect((await store.begin('k{c}', 'x', 5000)).state).toBe('acquired');
  });

  it('extends only its own lock: a long-running first request keeps the key', async () => {
    const clock = new ManualClock();
    const store = await make(clock);
    // On Redis the TTLs run on Redis' clock: the first TTL must outlast the calls that extend it
    // on a busy machine (150 ms did not), and the end of it is awaited, not slept past.
    const mine = await store.begin('k{e}', 'fp', 1000);
    const theirs = await store.begin('k{f}', 'fp', 1000);
    await store.extend('k{e}', (mine as { owner: string }).owner, 60_000);
    await store.extend('k{f}', 'not-the-owner', 60_000);
    if (name === 'memory') {
      clock.advance(1100);
      expect((await store.begin('k{f}', 'fp', 1000)).state).toBe('acquired');
    } else await waitFor(async () => (await store.begin('k{f}', 'fp', 1000)).state === 'acquired', 10_000);
    expect((await store.begin('k{e}', 'fp', 1000)).state).toBe('locked');
    expect(theirs.state).toBe('acquired');
  });

  it('lets a lock whose owner died expire by its TTL', async () => {
    const clock = new ManualClock();
    const store = await make(clock);
    expect((await store.begin('k{d}', 'fp', 150)).state).toBe('acquired');
    if (name === 'memory') clock.advance(200);
    else await new Promise((r) => setTimeout(r, 250)); // Redis expires by its own clock (PX)
    expect((await store.begin('k{d}', 'fp', 150)).state).toBe('acquired');
  });
});

async function setup(
  idem: Record<string, unknown> = {},
  extra: Record<string, unknown> = {},
  handler?: Parameters<typeof startUpstream>[0],
  clock?: ManualClock,
) {
  const up = await startUpstream(
    handler ??
      ((req, res, body) => {
        res.writeHead(201, {
          'content-type': 'application/json',
          'x-order': String(Math.random()),
          'set-cookie': 'session=1',
        });
        res.end(JSON.stringify({ created: true, got: body.toString() }));
      }),
  );
  cleanup.push(() => up.close());
  const gw = await startGateway(
    {
      routes: [
        {
          id: 'orders',
          path: '/orders',
          auth: 'none',
          upstream: { targets: [up.url], timeoutMs: 3000 },
          idempotency: { ...idem },
        },
      ],
      ...extra,
    } as any,
    clock ? { clock } : {},
  );
  cleanup.push(() => gw.close());
  return { gw, up };
}

const post = (
  gw: RunningGateway,
  key: string | undefined,
  body = '{"sku":"A1"}',
  path = '/orders',
  extra: Record<string, string> = {},
) =>
  request(`${gw.url}${path}`, {
    method: 'POST',
    body,
    headers: {
      'content-type': 'application/json',
      ...(key === undefined ? {} : { 'idempotency-key': key }),
      ...extra,
    },
  });

describe.each([
  ['memory', () => ({})],
  [
    'redis',
    () => ({ redis: { url: sharedRedisUrl, keyPrefix: uniquePrefix('idem'), commandTimeoutMs: 1000 } }),
  ],
] as const)('idempotency through the gateway (%s)', (_name, store) => {
  it('runs the first request once and replays its response, marked Idempotent-Replayed', async () => {
    const { gw, up } = await setup({}, store());
    const first = await post(gw, 'order-1');
    const second = await post(gw, 'order-1');
    expect(up.calls).toHaveLength(1);
    expect(second.status).toBe(201);
    expect(second.text).toBe(first.text);
    expect(second.headers['x-order']).toBe(first.headers['x-order']);
    expect(second.headers['idempotent-replayed']).toBe('true');
    expect(second.headers['set-cookie']).toBeUndefined();
    expect(second.headers['x-request-id']).not.toBe(first.headers['x-request-id']);
    expect(first.headers['idempotent-replayed']).toBeUndefined();
  });

  it('keeps the key locked while a long response streams past the lock TTL (no second run)', async () => {
    // ttlSec 2 makes the lock TTL 2 s. The first response streams until the test ends it: a
    // fixed 3 s stream could end before a late second request on a busy machine (a replay, not 409).
    let finish = () => {};
    const { gw, up } = await setup({ ttlSec: 2 }, store(), (_req, res) => {
      res.writeHead(201, { 'content-type': 'text/plain' });
      const timer = setInterval(() => res.write('.'), 300);
      finish = () => {
        clearInterval(timer);
        res.end();
      };
      res.on('close', () => clearInterval(timer));
    });
    const first = post(gw, 'long-1');
    await waitFor(() => up.calls.length === 1, 10_000);
    await new Promise((r) => setTimeout(r, 2500)); // past the lock's own TTL, the first still streaming
    expectProblem(await post(gw, 'long-1'), 'idempotency-conflict');
    finish();
    expect((await first).status).toBe(201);
    expect(up.calls).toHaveLength(1);
  });

  it('replays a kept problem with the replaying request’s own request_id and instance', async () => {
    const { gw } = await setup({}, store(), (_req, res) => {
      res.writeHead(422, { 'content-type': 'application/problem+json' });
      res.end(
        JSON.stringify({ type: 'about:blank', title: 'Unprocessable', status: 422, detail: 'no stock' }),
      );
    });
    const first = await post(gw, 'p-1');
    const again = await post(gw, 'p-1');
    expect(again.headers['idempotent-replayed']).toBe('true');
    for (const res of [first, again]) {
      const body = res.json();
      expect(body.request_id).toBe(res.headers['x-request-id']);
      expect(body.instance).toBe(`/requests/${String(res.headers['x-request-id'])}`);
      expect(body.detail).toBe('no stock');
    }
    expect(again.headers['x-request-id']).not.toBe(first.headers['x-request-id']);
  });

  it('treats the quoted and the bare key as the same key', async () => {
    const { gw, up } = await setup({}, store());
    await post(gw, 'abc');
    expect((await post(gw, '"abc"')).headers['idempotent-replayed']).toBe('true');
    expect(up.calls).toHaveLength(1);
  });

  it('409 payload-mismatch for the same key with another body or path', async () => {
    const { gw } = await setup({}, store());
    await post(gw, 'k1', '{"sku":"A1"}');
    expect(expectProblem(await post(gw, 'k1', '{"sku":"B2"}'), 'idempotency-conflict').reason).toBe(
      'payload-mismatch',
    );
    expect(
      expectProblem(await post(gw, 'k1', '{"sku":"A1"}', '/orders/other'), 'idempotency-conflict').reason,
    ).toBe('payload-mismatch');
  });

  it('409 in-flight with Retry-After while the first request runs', async () => {
    let release: () => void = () => undefined;
    const { gw, up } = await setup({}, store(), (_req, res) => {
      release = () => res.end('late');
    });
    const first = post(gw, 'slow');
    await waitFor(() => up.calls.length === 1, 3000);
    const second = await post(gw, 'slow');
    expect(expectProblem(second, 'idempotency-conflict').reason).toBe('in-flight');
    expect(second.headers['retry-after']).toBe('1');
    release();
    expect((await first).text).toBe('late');
    expect((await post(gw, 'slow')).headers['idempotent-replayed']).toBe('true');
  });

  it('does not keep a 500 (the client may retry), unless storeServerErrors', async () => {
    let n = 0;
    const fail = (_req: http.IncomingMessage, res: http.ServerResponse) => {
      n++;
      res.writeHead(n === 1 ? 500 : 201);
      res.end(`attempt ${n}`);
    };
    const { gw, up } = await setup({}, store(), fail);
    expect((await post(gw, 'r1')).status).toBe(500);
    expect((await post(gw, 'r1')).status).toBe(201);
    expect(up.calls).toHaveLength(2);
    n = 0;
    const kept = await setup({ storeServerErrors: true }, store(), fail);
    expect((await post(kept.gw, 'r2')).status).toBe(500);
    const replayed = await post(kept.gw, 'r2');
    expect(replayed.status).toBe(500);
    expect(replayed.headers['idempotent-replayed']).toBe('true');
    expect(kept.up.calls).toHaveLength(1);
  });

  it('does not keep a 502 from an unreachable upstream', async () => {
    const up = await startUpstream();
    const url = up.url;
    await up.close();
    const gw = await startGateway({
      routes: [
        { id: 'o', path: '/orders', auth: 'none', upstream: { targets: [url], retries: 0 }, idempotency: {} },
      ],
      ...store(),
    } as any);
    cleanup.push(() => gw.close());
    expect((await post(gw, 'gone')).status).toBe(502);
    expect((await post(gw, 'gone')).headers['idempotent-replayed']).toBeUndefined();
  });

  it('keeps the key when the client aborts after the upstream got the request; frees it when the upstream times out', async () => {
    let answer = false;
    const { gw, up } = await setup({}, store(), (_req, res) => {
      if (answer) res.end('ok');
      // else: never answers; the gateway gives up after the route's timeoutMs
    });
    const req = http.request(`${gw.url}/orders`, {
      method: 'POST',
      headers: { 'idempotency-key': 'abort-me', 'content-type': 'application/json' },
    });
    req.on('error', () => undefined);
    req.end('{"sku":"A1"}');
    await waitFor(() => up.calls.length === 1, 3000);
    req.destroy();
    answer = true;
    // The upstream may have acted on it: the key stays taken until its answer or, as it never
    // answers here, until the route's timeoutMs has passed.
    expect(expectProblem(await post(gw, 'abort-me'), 'idempotency-conflict').reason).toBe('in-flight');
    await waitFor(async () => (await post(gw, 'abort-me')).status === 200, 8000, 50);
    expect(up.calls.length).toBe(2);
  });

  it('passes a response over maxResponseBytes through without keeping it', async () => {
    const { gw, up } = await setup({ maxResponseBytes: 100 }, store(), (_req, res) => {
      res.end('x'.repeat(1000));
    });
    expect((await post(gw, 'big')).text).toHaveLength(1000);
    const again = await post(gw, 'big');
    expect(again.text).toHaveLength(1000);
    expect(again.headers['idempotent-replayed']).toBeUndefined();
    expect(up.calls).toHaveLength(2);
  });

  it('scopes keys to the caller: two clients can use the same key string', async () => {
    const { gw, up } = await setup({}, { ...store(), trustProxy: true });
    await post(gw, 'shared', '{}', '/orders', { 'x-forwarded-for': '10.0.0.1' });
    const other = await post(gw, 'shared', '{}', '/orders', { 'x-forwarded-for': '10.0.0.2' });
    expect(other.headers['idempotent-replayed']).toBeUndefined();
    expect(up.calls).toHaveLength(2);
  });

  it('400 validation-failed for bad, repeated or (when required) missing keys; other methods ignore the header', async () => {
    const { gw, up } = await setup({ required: true }, store());
    for (const bad of ['', '"unterminated', 'x'.repeat(256), 'ünïcode', 'has space']) {
      const res = await post(gw, bad);
      const body = expectProblem(res, 'validation-failed');
      expect(body.errors[0].pointer).toBe('/headers/idempotency-key');
    }
    expectProblem(await post(gw, undefined), 'validation-failed');
    const repeated = await request(`${gw.url}/orders`, {
      method: 'POST',
      body: '{}',
      headers: { 'idempotency-key': ['a', 'b'] },
    });
    expectProblem(repeated, 'validation-failed');
    expect((await request(`${gw.url}/orders`)).status).toBe(201); // GET is not an idempotency method here
    expect(up.calls).toHaveLength(1);
  });
});

describe('idempotency: records expire, instances agree, Redis outages fail closed', () => {
  it('runs again once the record is older than ttlSec (injected clock)', async () => {
    const clock = new ManualClock();
    const { gw, up } = await setup({ ttlSec: 60 }, {}, undefined, clock);
    await post(gw, 'ttl');
    await post(gw, 'ttl');
    expect(up.calls).toHaveLength(1);
    clock.advance(61_000);
    expect((await post(gw, 'ttl')).headers['idempotent-replayed']).toBeUndefined();
    expect(up.calls).toHaveLength(2);
  });

  it('two gateways sharing Redis: concurrent identical requests reach the upstream once', async () => {
    const redis = { url: sharedRedisUrl, keyPrefix: uniquePrefix('idem-two'), commandTimeoutMs: 2000 };
    const up = await startUpstream((_req, res) => {
      setTimeout(() => res.end('paid'), 200);
    });
    cleanup.push(() => up.close());
    const config = {
      redis,
      routes: [{ id: 'pay', path: '/pay', auth: 'none', upstream: { targets: [up.url] }, idempotency: {} }],
    } as any;
    const a = await startGateway(config);
    const b = await startGateway(config);
    cleanup.push(
      () => a.close(),
      () => b.close(),
    );
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) => post(i % 2 ? a : b, 'pay-once', '{"amount":100}', '/pay')),
    );
    expect(up.calls).toHaveLength(1);
    expect(results.filter((r) => r.status === 200)).toHaveLength(1);
    expect(results.filter((r) => r.status === 409)).toHaveLength(19);
    await waitFor(
      async () =>
        (await post(a, 'pay-once', '{"amount":100}', '/pay')).headers['idempotent-replayed'] === 'true',
      2000,
    );
    expect((await post(b, 'pay-once', '{"amount":100}', '/pay')).text).toBe('paid');
    expect(up.calls).toHaveLength(1);
  });

  it('answers 503 while Redis is down and works again when it is back', async () => {
    const redis = await startPrivateRedis();
    cleanup.push(() => redis.stop(true));
    const { gw, up } = await setup(
      {},
      { redis: { url: redis.url, keyPrefix: 'idem:', commandTimeoutMs: 200 } },
    );
    expect((await post(gw, 'before')).status).toBe(201);
    await redis.stop(true);
    await waitFor(async () => (await post(gw, 'during')).status === 503, 5000, 50);
    const res = await post(gw, 'during-2');
    expectProblem(res, 'service-unavailable');
    expect(res.headers['retry-after']).toBe('1');
    const callsBefore = up.calls.length;
    await redis.start();
    await waitFor(async () => (await post(gw, 'after')).status === 201, 15_000, 200);
    expect(up.calls.length).toBe(callsBefore + 1);
  });
});

describe('idempotency() in a plain Express app', () => {
  it('replays the handler’s response', async () => {
    let runs = 0;
    const app = express();
    app.use(requestId());
    app.post('/pay', idempotency({ required: true }), (_req, res) => {
      runs++;
      res.status(201).json({ run: runs });
    });
    app.use(problemDetails());
    const server = http.createServer(app);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    cleanup.push(() => new Promise<void>((r) => server.close(() => r())));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/pay`;
    const a = await request(url, { method: 'POST', body: '{}', headers: { 'idempotency-key': 'p1' } });
    const b = await request(url, { method: 'POST', body: '{}', headers: { 'idempotency-key': 'p1' } });
    expect(a.json()).toEqual({ run: 1 });
    expect(b.json()).toEqual({ run: 1 });
    expect(b.headers['idempotent-replayed']).toBe('true');
    expectProblem(await request(url, { method: 'POST', body: '{}' }), 'validation-failed');
  });
});
