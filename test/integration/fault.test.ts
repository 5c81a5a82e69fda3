import { afterEach, describe, expect, it } from 'vitest';
import http from 'node:http';
import express from 'express';
import { startGateway, type RunningGateway } from '../helpers/gateway.js';
import { listenApp } from '../helpers/express.js';
import { request, waitFor } from '../helpers/http.js';
import { startUpstream, type Upstream } from '../helpers/upstream.js';
import { expectProblem } from '../helpers/problem.js';
import { ManualClock } from '../../src/core/clock.js';
import type { ConfigInput } from '../../src/config/schema.js';

/** A route's fault as written, for configs built from possibly invalid parts. */
type ConfigInputFault = NonNullable<NonNullable<ConfigInput['routes']>[number]['fault']>;
import type { GatewayOptions } from '../../src/gateway/create-gateway.js';
import { fault, mock, problemDetails } from '../../src/index.js';

const cleanup: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

async function gateway(config: ConfigInput, options: GatewayOptions = {}): Promise<RunningGateway> {
  const gw = await startGateway(config, options);
  cleanup.push(() => gw.close());
  return gw;
}

async function upstream(): Promise<Upstream> {
  const up = await startUpstream();
  cleanup.push(() => up.close());
  return up;
}

/** mulberry32, uniform in [0, 1): the same seed gives the same draws. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The value of one series in Prometheus text (0 when absent). */
async function metric(gw: RunningGateway, name: string, labels: Record<string, string>): Promise<number> {
  const text = await gw.gateway.services.metricsText();
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split('\n')) {
    if (!line.startsWith(name + '{')) continue;
    const inner = line.slice(name.length + 1, line.indexOf('}'));
    if (want.every((w) => inner.split(',').includes(w))) return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return 0;
}

describe('fault injection through sockets', () => {
  it('aborts after authentication and limits: 401 first, then injected 503s that the rate limit counts', async () => {
    const up = await upstream();
    const gw = await gateway({
      routes: [
        {
          id: 'orders',
          path: '/orders',
          auth: { methods: ['apiKey'] },
          upstream: { targets: [up.url] },
          rateLimits: [{ name: 'burst', by: 'key', limit: 3, windowSec: 60 }],
          fault: { abort: { status: 503, percent: 100 } },
        },
      ],
    });
    expectProblem(await request(`${gw.url}/orders`), 'missing-credentials');
    const { key } = await gw.gateway.services.keys.create({ name: 'load-test' });
    const call = () => request(`${gw.url}/orders`, { headers: { 'x-api-key': key } });
    for (let i = 0; i < 3; i++) {
      const res = await call();
      const body = expectProblem(res, 'service-unavailable');
      expect(body.injected).toBe(true);
      expect(res.headers['retry-after']).toBe('1');
      expect(res.headers['ratelimit-policy']).toBe('"burst";q=3;w=60');
    }
    // The injected aborts were counted by the limit, which ran before them.
    const limited = await call();
    const body = expectProblem(limited, 'rate-limit-exceeded');
    expect(body.policy).toBe('burst');
    expect(body.injected).toBeUndefined();
    expect(up.calls).toHaveLength(0);
    expect(await metric(gw, 'tollgate_faults_injected_total', { route: 'orders', kind: 'abort' })).toBe(3);
    expect(await metric(gw, 'tollgate_rate_limit_rejections_total', { route: 'orders' })).toBe(1);
  });

  it('quota and remaining uses are refunded for injected aborts (the route did not answer), on mock and proxied routes', async () => {
    const up = await upstream();
    const routes = (withFault: boolean) =>
      (['mocked', 'proxied'] as const).map((id) => ({
        id,
        path: `/${id}`,
        auth: { methods: ['apiKey' as const] },
        ...(id === 'mocked' ? { mock: { body: 'ok' } } : { upstream: { targets: [up.url] } }),
        quota: { cost: 1 },
        ...(withFault ? { fault: { abort: { status: 500 as const, percent: 100 } } } : {}),
      }));
    const gw = await gateway({
      plans: { metered: { quota: { limit: 2, period: 'day' } } },
      routes: routes(true),
    });
    const keys = gw.gateway.services.keys;
    for (const id of ['mocked', 'proxied']) {
      const { key } = await keys.create({ name: id, plan: 'metered' });
      const limited = await keys.create({ name: `${id}-uses`, remaining: 2 });
      const call = (k: string) => request(`${gw.url}/${id}`, { headers: { 'x-api-key': k } });
      for (let i = 0; i < 4; i++) {
        expect(expectProblem(await call(key), 'internal-error').injected).toBe(true);
        expect(expectProblem(await call(limited.key), 'internal-error').injected).toBe(true);
      }
      expect(
        gw.gateway.reload({
          plans: { metered: { quota: { limit: 2, period: 'day' } } },
          routes: routes(false),
        }).ok,
      ).toBe(true);
      // Refunds run when each response closes: the full budget is there once they have.
      await waitFor(async () => (await call(key)).status === 200);
      expect((await call(key)).status).toBe(200);
      expectProblem(await call(key), 'quota-exceeded');
      expect((await call(limited.key)).status).toBe(200);
      expect((await call(limited.key)).status).toBe(200);
      expectProblem(await call(limited.key), 'quota-exceeded');
      expect(
        gw.gateway.reload({
          plans: { metered: { quota: { limit: 2, period: 'day' } } },
          routes: routes(true),
        }).ok,
      ).toBe(true);
    }
  });

  it.each([
    [502, 'bad-gateway'],
    [504, 'gateway-timeout'],
    [500, 'internal-error'],
    [429, 'rate-limit-exceeded'],
  ] as const)('an injected %i is the problem %s with injected: true', async (status, slug) => {
    const gw = await gateway({
      routes: [{ id: 'm', path: '/m', mock: { body: 'ok' }, fault: { abort: { status, percent: 100 } } }],
    });
    const res = await request(`${gw.url}/m`);
    expect(expectProblem(res, slug).injected).toBe(true);
    // An injected 429 is not a rate limit's refusal in the metrics.
    expect(await metric(gw, 'tollgate_rate_limit_rejections_total', { route: 'm' })).toBe(0);
  });

  it('honours the percentages over sockets with a seeded random source (wiring check, 400 requests)', async () => {
    const gw = await gateway(
      {
        routes: [
          {
            id: 'mix',
            path: '/mix',
            mock: { body: { ok: true } },
            fault: { delay: { ms: 1, jitterMs: 2, percent: 25 }, abort: { status: 502, percent: 40 } },
          },
        ],
      },
      { random: seeded(42) },
    );
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    cleanup.push(() => agent.destroy());
    const N = 400;
    let aborted = 0;
    for (let i = 0; i < N; i++) {
      const res = await request(`${gw.url}/mix`, { agent });
      if (res.status === 502) {
        expect(res.json().injected).toBe(true);
        aborted++;
      } else expect(res.status).toBe(200);
    }
    const delays = await metric(gw, 'tollgate_faults_injected_total', { route: 'mix', kind: 'delay' });
    expect(await metric(gw, 'tollgate_faults_injected_total', { route: 'mix', kind: 'abort' })).toBe(aborted);
    expect(Math.abs((aborted / N) * 100 - 40)).toBeLessThanOrEqual(6);
    expect(Math.abs((delays / N) * 100 - 25)).toBeLessThanOrEqual(6);
  });

  it('a delay waits on the gateway clock; a client that leaves mid-delay is let go at once and nothing reaches the upstream', async () => {
    const clock = new ManualClock();
    const up = await upstream();
    const gw = await gateway(
      {
        routes: [
          {
            id: 'slow',
            path: '/slow',
            auth: 'none',
            upstream: { targets: [up.url] },
            fault: { delay: { ms: 30_000, percent: 100 } },
          },
        ],
      },
      { clock },
    );
    // Waits while the clock stands still, answers once it moves.
    const answered = request(`${gw.url}/slow`);
    await waitFor(() => clock.pendingTimers === 1);
    expect(up.calls).toHaveLength(0);
    clock.advance(30_000);
    expect((await answered).status).toBe(200);
    expect(up.calls).toHaveLength(1);

    // A client that hangs up during the delay: its timer goes, the request ends as 499.
    const req = http.request(`${gw.url}/slow`, { agent: false });
    req.on('error', () => undefined);
    req.end();
    await waitFor(() => clock.pendingTimers === 1);
    req.destroy();
    await waitFor(() => clock.pendingTimers === 0);
    await waitFor(
      async () => (await metric(gw, 'tollgate_requests_total', { route: 'slow', status_class: '4xx' })) === 1,
    );
    clock.advance(60_000);
    expect(up.calls).toHaveLength(1);
    expect(await metric(gw, 'tollgate_faults_injected_total', { route: 'slow', kind: 'delay' })).toBe(2);
  });

  it('an injected abort is never stored as the answer of an Idempotency-Key: the retry runs for real', async () => {
    const up = await upstream();
    const route = {
      id: 'pay',
      path: '/pay',
      auth: 'none' as const,
      upstream: { targets: [up.url] },
      idempotency: {},
    };
    const gw = await gateway({ routes: [{ ...route, fault: { abort: { status: 429, percent: 100 } } }] });
    const pay = () =>
      request(`${gw.url}/pay`, { method: 'POST', headers: { 'idempotency-key': 'k-1' }, body: '{"a":1}' });
    expect(expectProblem(await pay(), 'rate-limit-exceeded').injected).toBe(true);
    expect(expectProblem(await pay(), 'rate-limit-exceeded').injected).toBe(true);
    expect(up.calls).toHaveLength(0);
    // The fault is lifted: the same key's first real run reaches the upstream, and only it is kept.
    expect(gw.gateway.reload({ routes: [route] }).ok).toBe(true);
    const first = await pay();
    expect(first.status).toBe(200);
    expect(first.headers['idempotent-replayed']).toBeUndefined();
    const again = await pay();
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(up.calls).toHaveLength(1);
  });

  it('reload with a bad fault keeps the old config and names the path', async () => {
    const config = (abort: object) => ({
      routes: [{ id: 'm', path: '/m', mock: { body: 'ok' }, fault: { abort } as ConfigInputFault }],
    });
    const gw = await gateway(config({ status: 503, percent: 100 }));
    expect((await request(`${gw.url}/m`)).status).toBe(503);
    for (const [abort, path] of [
      [{ status: 404, percent: 100 }, 'routes[0].fault.abort.status'],
      [{ status: 502, percent: 120 }, 'routes[0].fault.abort.percent'],
      [{ status: 502 }, 'routes[0].fault.abort.percent'],
    ] as const) {
      const result = gw.gateway.reload(config(abort));
      expect(result.ok).toBe(false);
      expect(result.ok ? [] : result.issues.map((i) => i.path)).toEqual([path]);
    }
    const delay = gw.gateway.reload({
      routes: [{ id: 'm', path: '/m', mock: { body: 'ok', delayMs: 59_000, jitterMs: 5_000 } }],
    });
    expect(delay.ok ? [] : delay.issues.map((i) => i.path)).toEqual(['routes[0].mock.jitterMs']);
    const echo = gw.gateway.reload({ routes: [{ id: 'm', path: '/m', mock: { body: 'x', echo: true } }] });
    expect(echo.ok ? [] : echo.issues.map((i) => i.path)).toEqual(['routes[0].mock.echo']);
    const res = await request(`${gw.url}/m`);
    expect(expectProblem(res, 'service-unavailable').injected).toBe(true);
  });

  it('the fault() Express middleware answers through problemDetails()', async () => {
    const app = express();
    app.use('/f', fault({ abort: { status: 504, percent: 100 } }), (_req, res) => {
      res.send('unreachable');
    });
    app.use(problemDetails());
    const url = await listenApp(app);
    const res = await request(`${url}/f`);
    expect(expectProblem(res, 'gateway-timeout').injected).toBe(true);
    expect(() => fault({ abort: { status: 418, percent: 1 } })).toThrow();
  });
});

describe('mock routes as load-test targets through sockets', () => {
  it('echo: method, path, query, headers and body as JSON, credentials redacted', async () => {
    const gw = await gateway({
      limits: { bodyBytes: 1024 },
      routes: [{ id: 'echo', path: '/echo', auth: { methods: ['apiKey'] }, mock: { echo: true } }],
    });
    const { key } = await gw.gateway.services.keys.create({ name: 'echo' });
    const res = await request(`${gw.url}/echo/a%20b?x=1&access_token=t0ken`, {
      method: 'PATCH',
      headers: {
        'x-api-key': key,
        cookie: 'sid=s3cret',
        'content-type': 'application/json',
        'x-trace-me': 'yes',
      },
      body: JSON.stringify({ qty: 2 }),
    });
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toBe('application/json; charset=utf-8');
    // A reflected value is never rendered as a page.
    expect(res.headers['x-content-type-options']).toBe('nosniff');
    expect(res.headers['content-security-policy']).toContain("default-src 'none'");
    expect(res.text).not.toContain(key);
    expect(res.text).not.toContain('s3cret');
    expect(res.text).not.toContain('t0ken');
    const doc = res.json();
    expect(doc).toMatchObject({
      method: 'PATCH',
      path: '/echo/a%20b',
      query: { x: '1', access_token: '[redacted]' },
      body: { qty: 2 },
      bodyEncoding: 'json',
    });
    expect(doc.headers['x-api-key']).toBe('[redacted]');
    expect(doc.headers.cookie).toBe('[redacted]');
    expect(doc.headers['x-trace-me']).toBe('yes');
  });

  it('echo reads the body within limits.bodyBytes: a larger chunked body is 413', async () => {
    const gw = await gateway({
      limits: { bodyBytes: 1024 },
      routes: [{ id: 'echo', path: '/echo', mock: { echo: true } }],
    });
    const res = await request(`${gw.url}/echo`, {
      method: 'POST',
      headers: { 'transfer-encoding': 'chunked' },
      body: 'z'.repeat(4096),
    });
    expectProblem(res, 'payload-too-large');
    const ok = await request(`${gw.url}/echo`, { method: 'POST', body: 'z'.repeat(1024) });
    expect(ok.json().body).toBe('z'.repeat(1024));
  });

  it('delayMs waits on the gateway clock before the mock answers', async () => {
    const clock = new ManualClock();
    const gw = await gateway(
      { routes: [{ id: 'm', path: '/m', mock: { body: 'late', delayMs: 150 } }] },
      { clock },
    );
    let done = false;
    const pending = request(`${gw.url}/m`).then((r) => {
      done = true;
      return r;
    });
    await waitFor(() => clock.pendingTimers === 1);
    clock.advance(149);
    expect(done).toBe(false);
    clock.advance(1);
    const res = await pending;
    expect(res.status).toBe(200);
    expect(res.text).toBe('late');
  });

  it('the mock() Express middleware echoes too', async () => {
    const app = express();
    app.use('/e', mock({ echo: true }));
    const url = await listenApp(app);
    const res = await request(`${url}/e?q=1`, { headers: { authorization: 'Bearer abc' } });
    expect(res.json()).toMatchObject({
      method: 'GET',
      query: { q: '1' },
      headers: { authorization: '[redacted]' },
    });
  });
});
