import { afterEach, describe, expect, it } from 'vitest';
import http from 'node:http';
import { startGateway, type RunningGateway } from '../helpers/gateway.js';
import { request, waitFor } from '../helpers/http.js';
import { startUpstream, type Upstream, type UpstreamHandler } from '../helpers/upstream.js';
import { expectProblem } from '../helpers/problem.js';
import { sharedRedisUrl, uniquePrefix } from '../helpers/redis.js';
import { deleteRedisKeys } from '../helpers/redis-cleanup.js';
import { validateConfig } from '../../src/config/load.js';

/*
 * Version 2 hardening of idempotency keys: a client that hangs up once its request reached the
 * upstream keeps the key (the answer is read on and stored for its retry), and the in-memory
 * store is bounded.
 */

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

const stores: Array<[string, () => Record<string, unknown>]> = [
  ['memory store', () => ({})],
  [
    'Redis store (RedisIdempotencyStore)',
    () => {
      const keyPrefix = uniquePrefix('idem-hardening');
      cleanup.push(() => deleteRedisKeys(keyPrefix));
      return { redis: { url: sharedRedisUrl, keyPrefix, commandTimeoutMs: 1000 } };
    },
  ],
];

/**
 * An upstream that holds its answers while `holding` (the first request, typically) and answers
 * at once after `release()`. `upstreamClosed()` says whether a held request's connection was cut.
 */
async function heldUpstream(
  answer: (res: http.ServerResponse, n: number) => void,
): Promise<{ up: Upstream; release: () => void; upstreamClosed: () => boolean }> {
  const waiting: Array<() => void> = [];
  let holding = true;
  let closedEarly = false;
  const handler: UpstreamHandler = (_req, res) => {
    const n = up.calls.length;
    res.on('close', () => {
      if (!res.writableFinished) closedEarly = true;
    });
    if (holding) waiting.push(() => answer(res, n));
    else answer(res, n);
  };
  const up = await startUpstream(handler);
  cleanup.push(() => up.close());
  return {
    up,
    release: () => {
      holding = false;
      for (const go of waiting.splice(0)) go();
    },
    upstreamClosed: () => closedEarly,
  };
}

async function gatewayFor(
  up: Upstream,
  store: Record<string, unknown>,
  route: Record<string, unknown> = {},
  extra: Record<string, unknown> = {},
): Promise<RunningGateway> {
  const { upstream, ...rest } = route as { upstream?: object };
  const gw = await startGateway({
    ...store,
    ...extra,
    routes: [
      {
        id: 'payments',
        path: '/payments',
        auth: 'none',
        idempotency: {},
        ...rest,
        upstream: { targets: [up.url], timeoutMs: 5000, ...upstream },
      } as never,
    ],
  });
  cleanup.push(() => gw.close());
  return gw;
}

const openConnections = (gw: RunningGateway) =>
  new Promise<number>((resolve, reject) =>
    gw.server.getConnections((err, n) => (err ? reject(err) : resolve(n))),
  );

/**
 * Sends a POST with an Idempotency-Key, waits until the upstream has received it (`sent`), then
 * destroys the client and waits until the gateway has seen the connection go.
 */
async function postAndHangUp(
  gw: RunningGateway,
  key: string | undefined,
  sent: () => boolean,
  onResponse?: (res: http.IncomingMessage) => void,
): Promise<void> {
  const req = http.request(`${gw.url}/payments`, {
    method: 'POST',
    agent: false,
    headers: { 'content-type': 'application/json', ...(key ? { 'idempotency-key': key } : {}) },
  });
  req.on('error', () => undefined);
  if (onResponse) req.on('response', onResponse);
  req.end('{"amount":100}');
  await waitFor(sent, 5000);
  const before = await openConnections(gw);
  req.destroy();
  await waitFor(async () => (await openConnections(gw)) < before, 5000);
}

const post = (gw: RunningGateway, key: string, body = '{"amount":100}') =>
  request(`${gw.url}/payments`, {
    method: 'POST',
    body,
    headers: { 'content-type': 'application/json', 'idempotency-key': key },
  });

/** The client's retry, repeated (bounded) while the first request is still in flight (409). */
async function retryUntilSettled(gw: RunningGateway, key: string, timeoutMs = 5000) {
  let reply = await post(gw, key);
  await waitFor(
    async () => reply.status !== 409 || (reply = await post(gw, key)).status !== 409,
    timeoutMs,
    25,
  );
  return reply;
}

describe.each(stores)(
  'idempotency: a client that hangs up after the upstream got its request (%s)',
  (_n, store) => {
    it('keeps the key, stores the answer that arrives after the hang-up, and replays it: the upstream runs once', async () => {
      const { up, release } = await heldUpstream((res, n) => {
        res.writeHead(201, { 'content-type': 'application/json', 'x-charge': `ch_${n}` });
        res.end(JSON.stringify({ charged: true, charge: n }));
      });
      const gw = await gatewayFor(up, store());
      await postAndHangUp(gw, 'pay-1', () => up.calls.length === 1);
      // The upstream is still working on it: the retry waits, it does not run a second time.
      const early = await post(gw, 'pay-1');
      expect(expectProblem(early, 'idempotency-conflict').reason).toBe('in-flight');
      release();
      const retry = await retryUntilSettled(gw, 'pay-1');
      expect(retry.status).toBe(201);
      expect(retry.headers['idempotent-replayed']).toBe('true');
      expect(retry.headers['x-charge']).toBe('ch_1');
      expect(retry.json()).toEqual({ charged: true, charge: 1 });
      expect(up.calls).toHaveLength(1);
    });

    it('reads on a body cut off mid-stream and stores all of it', async () => {
      let sendRest: () => void = () => undefined;
      const up = await startUpstream((_req, res) => {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.write('first part;');
        sendRest = () => res.end('second part');
      });
      cleanup.push(() => up.close());
      const gw = await gatewayFor(up, store());
      let gotFirst = false;
      await postAndHangUp(
        gw,
        'stream-1',
        () => gotFirst,
        (res) => res.once('data', () => (gotFirst = true)),
      );
      sendRest();
      const retry = await retryUntilSettled(gw, 'stream-1', 5000);
      expect(retry.headers['idempotent-replayed']).toBe('true');
      expect(retry.text).toBe('first part;second part');
      expect(up.calls).toHaveLength(1);
    });

    it('stores an upstream error rewritten as a problem after the hang-up, replayed with the retry’s own request_id', async () => {
      const { up, release } = await heldUpstream((res) => {
        res.writeHead(402, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ message: 'card declined', code: 'card_declined' }));
      });
      const gw = await gatewayFor(up, store());
      await postAndHangUp(gw, 'declined-1', () => up.calls.length === 1);
      release();
      const retry = await retryUntilSettled(gw, 'declined-1', 5000);
      expect(retry.headers['idempotent-replayed']).toBe('true');
      expect(retry.headers['content-type']).toBe('application/problem+json');
      const body = retry.json();
      expect(body.request_id).toBe(retry.headers['x-request-id']);
      expect(body.instance).toBe(`/requests/${String(retry.headers['x-request-id'])}`);
      expect(body.detail).toBe('card declined');
      expect(up.calls).toHaveLength(1);
    });

    it('releases the key when the answer after the hang-up is a 5xx (not kept), so the retry runs', async () => {
      const { up, release } = await heldUpstream((res, n) => {
        res.writeHead(n === 1 ? 503 : 201);
        res.end(`attempt ${n}`);
      });
      const gw = await gatewayFor(up, store());
      await postAndHangUp(gw, 'flaky-1', () => up.calls.length === 1);
      release();
      const retry = await retryUntilSettled(gw, 'flaky-1', 5000);
      expect(retry.headers['idempotent-replayed']).toBeUndefined();
      expect(retry.text).toBe('attempt 2');
      expect(up.calls).toHaveLength(2);
    });

    it('keeps a 5xx answered after the hang-up with storeServerErrors', async () => {
      const { up, release } = await heldUpstream((res) => {
        res.writeHead(500, { 'content-type': 'text/plain' });
        res.end('exploded');
      });
      const gw = await gatewayFor(up, store(), { idempotency: { storeServerErrors: true } });
      await postAndHangUp(gw, 'boom-1', () => up.calls.length === 1);
      release();
      const retry = await retryUntilSettled(gw, 'boom-1', 5000);
      expect(retry.headers['idempotent-replayed']).toBe('true');
      expect(up.calls).toHaveLength(1);
    });
  },
);

describe('idempotency: after a hang-up', () => {
  it('reads on a large body under backpressure (the dead socket never drains) and stores all of it', async () => {
    const chunk = Buffer.alloc(64 * 1024, 'a');
    const total = 256; // 16 MiB: far more than the sockets between upstream and client can buffer
    let blocked = false;
    const up = await startUpstream((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      let n = 0;
      const more = () => {
        while (n < total) {
          n++;
          if (!res.write(chunk)) {
            blocked = true;
            res.once('drain', more);
            return;
          }
        }
        res.end();
      };
      more();
    });
    cleanup.push(() => up.close());
    const gw = await gatewayFor(up, {}, { idempotency: { maxResponseBytes: 32 * 1024 * 1024 } });
    let paused = false;
    await postAndHangUp(
      gw,
      'big-1',
      () => paused && blocked,
      (res) => {
        res.pause(); // the client stops reading: the gateway's writes back up, then the upstream's
        paused = true;
      },
    );
    const retry = await retryUntilSettled(gw, 'big-1', 15_000);
    expect(retry.headers['idempotent-replayed']).toBe('true');
    expect(retry.body.length).toBe(total * chunk.length);
    expect(retry.body.equals(Buffer.alloc(total * chunk.length, 'a'))).toBe(true);
    expect(up.calls).toHaveLength(1);
  });

  it('releases the key at once when the client hangs up before the request reached the upstream', async () => {
    // One socket to the upstream, taken by a first request: the keyed one waits in the queue.
    const { up, release } = await heldUpstream((res, n) => res.end(`answer ${n}`));
    const gw = await gatewayFor(up, {}, { upstream: { maxSockets: 1 } });
    const blocker = request(`${gw.url}/payments`, { method: 'POST', body: '{}' });
    await waitFor(() => up.calls.length === 1, 5000);
    const pool = gw.gateway.services.upstreams.all()[0]!.targets[0]!.pool;
    await postAndHangUp(gw, 'queued-1', () => pool.stats.pending === 1);
    // Not in flight any more: the retry is no conflict, and runs once the socket is free.
    const retry = post(gw, 'queued-1');
    release();
    expect((await blocker).text).toBe('answer 1');
    const answered = await retry;
    expect(answered.status).toBe(200);
    expect(answered.headers['idempotent-replayed']).toBeUndefined();
    expect(answered.text).toBe('answer 2');
    expect(up.calls).toHaveLength(2); // the abandoned request never reached the upstream
  });

  it('releases the key when the answer after the hang-up is over maxResponseBytes', async () => {
    const { up, release } = await heldUpstream((res) => res.end('x'.repeat(5000)));
    const gw = await gatewayFor(up, {}, { idempotency: { maxResponseBytes: 1000 } });
    await postAndHangUp(gw, 'huge-1', () => up.calls.length === 1);
    release();
    const retry = await retryUntilSettled(gw, 'huge-1', 5000);
    expect(retry.headers['idempotent-replayed']).toBeUndefined();
    expect(retry.text).toHaveLength(5000);
    expect(up.calls).toHaveLength(2);
  });

  it('bounds the background read by the route’s upstream timeout: an upstream that never answers frees the key', async () => {
    let answering = false;
    const up = await startUpstream((_req, res) => {
      if (answering) res.end('second run');
    });
    cleanup.push(() => up.close());
    const gw = await gatewayFor(up, {}, { upstream: { timeoutMs: 400 } });
    await postAndHangUp(gw, 'stuck-1', () => up.calls.length === 1);
    expect(expectProblem(await post(gw, 'stuck-1'), 'idempotency-conflict').reason).toBe('in-flight');
    answering = true;
    const retry = await retryUntilSettled(gw, 'stuck-1', 5000);
    expect(retry.text).toBe('second run');
    expect(up.calls).toHaveLength(2);
  });

  it('a route without idempotency still aborts the upstream request at once when the client leaves', async () => {
    const { up, upstreamClosed } = await heldUpstream((res) => res.end('late'));
    const gw = await gatewayFor(up, {}, { idempotency: undefined });
    await postAndHangUp(gw, undefined, () => up.calls.length === 1);
    await waitFor(upstreamClosed, 5000);
    expect(upstreamClosed()).toBe(true);
  });
});

describe('idempotency: the in-memory store is bounded (top-level `idempotency`)', () => {
  it('answers a new key 503 service-unavailable with Retry-After when the store is full, and keeps what it holds', async () => {
    const up = await startUpstream((_req, res) => {
      res.writeHead(201);
      res.end('made');
    });
    cleanup.push(() => up.close());
    const gw = await gatewayFor(up, {}, {}, { idempotency: { maxEntries: 2, callerShare: 1 } });
    expect((await post(gw, 'a')).status).toBe(201);
    expect((await post(gw, 'b')).status).toBe(201);
    const full = await post(gw, 'c');
    expectProblem(full, 'service-unavailable');
    expect(Number(full.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    // Nothing it held was dropped to make room: both keys still replay, nothing ran twice.
    expect((await post(gw, 'a')).headers['idempotent-replayed']).toBe('true');
    expect((await post(gw, 'b')).headers['idempotent-replayed']).toBe('true');
    expect(up.calls).toHaveLength(2);
  });

  it('one caller cannot fill the store for everyone (callerShare)', async () => {
    const up = await startUpstream((_req, res) => res.end('ok'));
    cleanup.push(() => up.close());
    const gw = await gatewayFor(
      up,
      {},
      {},
      { trustProxy: true, idempotency: { maxEntries: 4, callerShare: 0.5 } },
    );
    const from = (ip: string, key: string) =>
      request(`${gw.url}/payments`, {
        method: 'POST',
        body: '{}',
        headers: { 'idempotency-key': key, 'x-forwarded-for': ip },
      });
    expect((await from('10.0.0.1', 'k1')).status).toBe(200);
    expect((await from('10.0.0.1', 'k2')).status).toBe(200);
    expectProblem(await from('10.0.0.1', 'k3'), 'service-unavailable');
    expect((await from('10.0.0.2', 'k1')).status).toBe(200);
    expect((await from('10.0.0.2', 'k2')).status).toBe(200);
  });

  it('validates the store settings with their paths', () => {
    const result = validateConfig({ idempotency: { maxEntries: 0, callerShare: 2 } }, {});
    expect(result.ok).toBe(false);
    const paths = result.ok ? [] : result.issues.map((i) => i.path);
    expect(paths).toEqual(expect.arrayContaining(['idempotency.maxEntries', 'idempotency.callerShare']));
  });
});
