import { afterEach, describe, expect, it } from 'vitest';
import http from 'node:http';
import { startGateway } from '../helpers/gateway.js';
import { freePort, request, waitFor } from '../helpers/http.js';
import { startUpstream } from '../helpers/upstream.js';
import { sharedRedisUrl, startPrivateRedis, uniquePrefix } from '../helpers/redis.js';
import { expectProblem } from '../helpers/problem.js';
import { createLogger } from '../../src/observability/logger.js';
import { ManualClock } from '../../src/core/clock.js';

const TOKEN = 'observability-admin-token';
const auth = { authorization: `Bearer ${TOKEN}` };
const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

function capturedLogger() {
  const lines: string[] = [];
  const logger = createLogger({
    level: 'info',
    format: 'json',
    destination: { write: (s: string) => void lines.push(s) },
  });
  return { logger, lines };
}

async function gateway(extra: Record<string, unknown> = {}, logger = capturedLogger().logger) {
  const deadPort = await freePort();
  const up = await startUpstream();
  cleanup.push(() => up.close());
  const gw = await startGateway(
    {
      admin: { host: '127.0.0.1', port: 0, tokens: [TOKEN] },
      routes: [
        { id: 'demo', path: '/demo', methods: ['GET'], mock: { body: { ok: true } } },
        { id: 'orders', path: '/orders', auth: 'none', upstream: { targets: [up.url] } },
        {
          id: 'dead',
          path: '/dead',
          auth: 'none',
          upstream: { targets: [`http://127.0.0.1:${deadPort}`], retries: 0, passiveHealth: { failures: 1 } },
        },
      ],
      ...extra,
    },
    { logger },
  );
  cleanup.push(() => gw.close());
  return gw;
}

/** Dereferences a problem's `instance` on the admin listener, within the SPEC's 2 s. */
async function auditOf(adminUrl: string, instance: string) {
  let record: any;
  await waitFor(
    async () => {
      const res = await request(`${adminUrl}${instance}`, { headers: auth });
      if (res.status === 200) record = res.json();
      return res.status === 200;
    },
    2000,
    25,
  );
  return record;
}

describe('audit trail', () => {
  it('dereferences the instance of real failing requests (404, 405, 502) and a success', async () => {
    const gw = await gateway();
    const notFound = expectProblem(await request(`${gw.url}/nowhere`), 'not-found');
    const record404 = await auditOf(gw.adminUrl, notFound.instance);
    expect(record404).toMatchObject({
      request_id: notFound.request_id,
      status: 404,
      problem: 'not-found',
      route: null,
      method: 'GET',
      path: '/nowhere',
    });

    const wrongMethod = expectProblem(
      await request(`${gw.url}/demo`, { method: 'POST', body: 'x' }),
      'method-not-allowed',
    );
    expect(await auditOf(gw.adminUrl, wrongMethod.instance)).toMatchObject({
      status: 405,
      route: 'demo',
      problem: 'method-not-allowed',
    });

    const badGateway = expectProblem(await request(`${gw.url}/dead/x`), 'bad-gateway');
    const record502 = await auditOf(gw.adminUrl, badGateway.instance);
    expect(record502).toMatchObject({
      status: 502,
      route: 'dead',
      problem: 'bad-gateway',
      upstream_status: null,
    });
    expect(record502.upstream_target).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);

    const ok = await request(`${gw.url}/orders/1`, { headers: { 'x-request-id': 'ok-request-1' } });
    const record200 = await auditOf(gw.adminUrl, '/requests/ok-request-1');
    expect(ok.status).toBe(200);
    expect(record200).toMatchObject({
      status: 200,
      upstream_status: 200,
      route: 'orders',
      client_ip: '127.0.0.1',
      aborted: false,
    });
    expect(record200.latency_ms).toBeGreaterThan(0);
    expect(typeof record200.trace_id).toBe('string');
    expect(Date.parse(record200.time)).not.toBeNaN();
  });

  it('404 problem for an unknown id; the audit API needs the admin token', async () => {
    const gw = await gateway();
    expectProblem(await request(`${gw.adminUrl}/requests/no-such-id`, { headers: auth }), 'not-found');
    expectProblem(await request(`${gw.adminUrl}/requests/no-such-id`), 'missing-credentials');
  });

  it('lists recent records newest first, filtered by status, route and since; validates the query', async () => {
    const gw = await gateway();
    for (let i = 0; i < 3; i++)
      await request(`${gw.url}/demo`, { headers: { 'x-request-id': `list-ok-${i}` } });
    await request(`${gw.url}/nowhere`, { headers: { 'x-request-id': 'list-404' } });
    let items: any[] = [];
    await waitFor(async () => {
      items = (await request(`${gw.adminUrl}/requests?limit=10`, { headers: auth })).json().items;
      return items.length >= 4;
    }, 2000);
    expect(items.map((r) => r.request_id).slice(0, 4)).toEqual([
      'list-404',
      'list-ok-2',
      'list-ok-1',
      'list-ok-0',
    ]);
    const errors = (await request(`${gw.adminUrl}/requests?status=4xx`, { headers: auth })).json().items;
    expect(errors.map((r: any) => r.request_id)).toEqual(['list-404']);
    const demo = (await request(`${gw.adminUrl}/requests?route=demo&limit=2`, { headers: auth })).json()
      .items;
    expect(demo.map((r: any) => r.request_id)).toEqual(['list-ok-2', 'list-ok-1']);
    const future = (
      await request(`${gw.adminUrl}/requests?since=${Date.now() + 60_000}`, { headers: auth })
    ).json().items;
    expect(future).toEqual([]);
    const bad = await request(`${gw.adminUrl}/requests?limit=5000&status=abc&bogus=1`, { headers: auth });
    const body = expectProblem(bad, 'validation-failed');
    expect(body.errors).toEqual(
      expect.arrayContaining([
        { pointer: '/query/limit', message: 'must be an integer from 1 to 1000' },
        { pointer: '/query/status', message: 'must be a status (429) or a class (4xx)' },
        { pointer: '/query/bogus', message: 'is not a known field' },
      ]),
    );
  });

  it('is shared through Redis: a request on one instance is found on the other', async () => {
    const prefix = uniquePrefix('audit');
    const redis = { url: sharedRedisUrl, keyPrefix: prefix };
    const a = await gateway({ redis });
    const b = await gateway({ redis });
    const res = await request(`${a.url}/nowhere`);
    const body = expectProblem(res, 'not-found');
    const record = await auditOf(b.adminUrl, body.instance);
    expect(record.request_id).toBe(body.request_id);
    let items: any[] = [];
    await waitFor(async () => {
      items = (await request(`${b.adminUrl}/requests?status=404`, { headers: auth })).json().items;
      return items.length === 1;
    }, 2000);
    expect(items[0].request_id).toBe(body.request_id);
  });

  it('lists through Redis only records within the retention', async () => {
    const clock = new ManualClock(Date.now());
    const config = {
      admin: { host: '127.0.0.1', port: 0, tokens: [TOKEN] },
      redis: { url: sharedRedisUrl, keyPrefix: uniquePrefix('audit-retention') },
      audit: { retentionSec: 60 },
      routes: [{ id: 'demo', path: '/demo', mock: {} }],
    };
    const a = await startGateway(config, { clock });
    cleanup.push(() => a.close());
    const b = await startGateway(config, { clock });
    cleanup.push(() => b.close());
    await request(`${a.url}/demo`, { headers: { 'x-request-id': 'old-one' } });
    const listed = async () =>
      (
        (await request(`${b.adminUrl}/requests`, { headers: auth })).json().items as Array<{
          request_id: string;
        }>
      ).map((r) => r.request_id);
    await waitFor(async () => (await listed()).includes('old-one'), 2000, 50);
    clock.advance(61_000);
    await request(`${a.url}/demo`, { headers: { 'x-request-id': 'new-one' } });
    await waitFor(async () => (await listed()).includes('new-one'), 2000, 50);
    expect(await listed()).toEqual(['new-one']);
  });

  it('never holds a credential: the Authorization value is absent from the audit record and the log', async () => {
    const { logger, lines } = capturedLogger();
    const gw = await gateway({}, logger);
    const secret = 'Bearer super-secret-token-value-123';
    const res = await request(`${gw.url}/orders/x`, {
      headers: { authorization: secret, 'x-api-key': 'tg_live_secretkeyvalue', cookie: 'session=s3cr3t' },
    });
    const record = await auditOf(gw.adminUrl, `/requests/${String(res.headers['x-request-id'])}`);
    const everything = JSON.stringify(record) + lines.join('\n');
    expect(lines.some((l) => l.includes('"msg":"request"'))).toBe(true);
    for (const needle of ['super-secret-token-value-123', 'secretkeyvalue', 's3cr3t'])
      expect(everything).not.toContain(needle);
  });
});

describe('access log', () => {
  it('writes one JSON line per request with the audit field names', async () => {
    const { logger, lines } = capturedLogger();
    const gw = await gateway({}, logger);
    await request(`${gw.url}/orders/1`, { headers: { 'x-request-id': 'log-line-1' } });
    await waitFor(() => lines.some((l) => l.includes('log-line-1')), 2000);
    const matching = lines.filter((l) => l.includes('log-line-1')).map((l) => JSON.parse(l));
    expect(matching).toHaveLength(1);
    expect(matching[0]).toMatchObject({
      msg: 'request',
      level: 'info',
      request_id: 'log-line-1',
      route: 'orders',
      status: 200,
      upstream_status: 200,
      method: 'GET',
      path: '/orders/1',
    });
    expect(typeof matching[0].latency_ms).toBe('number');
    expect(typeof matching[0].trace_id).toBe('string');
  });
});

describe('metrics', () => {
  function sample(text: string, name: string, labels: Record<string, string>): number | undefined {
    for (const line of text.split('\n')) {
      if (!line.startsWith(name + '{') && line.split(' ')[0] !== name) continue;
      const [series, value] = [line.slice(0, line.lastIndexOf(' ')), line.slice(line.lastIndexOf(' ') + 1)];
      if (Object.entries(labels).every(([k, v]) => series.includes(`${k}="${v}"`))) return Number(value);
    }
    return undefined;
  }

  it('counts a scripted mix of requests by route, method and status class, without a token', async () => {
    const gw = await gateway();
    for (let i = 0; i < 3; i++) await request(`${gw.url}/demo`);
    await request(`${gw.url}/demo`, { method: 'POST', body: 'x' });
    for (let i = 0; i < 2; i++) await request(`${gw.url}/orders/${i}`);
    await request(`${gw.url}/dead`);
    await request(`${gw.url}/dead`);
    await request(`${gw.url}/a/b/c`);
    expect(gw.gateway.reload({ routes: [{ id: 'x', path: 'bad' }] }).ok).toBe(false);
    const res = await request(`${gw.adminUrl}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toContain('text/plain');
    const text = res.text;
    expect(
      sample(text, 'tollgate_requests_total', { route: 'demo', method: 'GET', status_class: '2xx' }),
    ).toBe(3);
    expect(
      sample(text, 'tollgate_requests_total', { route: 'demo', method: 'POST', status_class: '4xx' }),
    ).toBe(1);
    expect(
      sample(text, 'tollgate_requests_total', { route: 'orders', method: 'GET', status_class: '2xx' }),
    ).toBe(2);
    expect(sample(text, 'tollgate_requests_total', { route: 'dead', status_class: '5xx' })).toBe(2);
    expect(sample(text, 'tollgate_requests_total', { route: 'unmatched', status_class: '4xx' })).toBe(1);
    expect(sample(text, 'tollgate_request_duration_seconds_count', { route: 'demo', method: 'GET' })).toBe(3);
    expect(sample(text, 'tollgate_upstream_duration_seconds_count', { route: 'orders' })).toBe(2);
    expect(sample(text, 'tollgate_upstream_errors_total', { route: 'dead', code: 'ECONNREFUSED' })).toBe(1);
    expect(sample(text, 'tollgate_upstream_target_healthy', { route: 'dead' })).toBe(0);
    expect(sample(text, 'tollgate_upstream_target_healthy', { route: 'orders' })).toBe(1);
    expect(sample(text, 'tollgate_config_reloads_total', { result: 'failure' })).toBe(1);
    expect(sample(text, 'tollgate_config_last_reload_success', {})).toBe(0);
    // Labels are bounded: raw paths never become label values.
    expect(text).not.toContain('/a/b/c');
    expect(text).not.toContain('/orders/1');
    // Without Redis there is no Redis gauge (an unset one would read 0, "down").
    expect(text).not.toContain('tollgate_redis_up');
  });

  it('records a request whose client left before any answer as 499, not 200', async () => {
    const slow = await startUpstream((_req, res) => {
      const timer = setTimeout(() => res.end('late'), 2000);
      res.on('close', () => clearTimeout(timer));
    });
    cleanup.push(() => slow.close());
    const gw = await gateway({
      routes: [{ id: 'slow', path: '/slow', auth: 'none', upstream: { targets: [slow.url] } }],
    });
    const gone = http.get(`${gw.url}/slow`, { headers: { 'x-request-id': 'left-early' } });
    gone.on('error', () => undefined);
    await waitFor(() => slow.calls.length === 1, 2000, 10);
    gone.destroy();
    const record = await auditOf(gw.adminUrl, '/requests/left-early');
    expect(record).toMatchObject({ status: 499, aborted: true, upstream_status: null });
    const text = (await request(`${gw.adminUrl}/metrics`)).text;
    expect(sample(text, 'tollgate_requests_total', { route: 'slow', status_class: '2xx' })).toBeUndefined();
    expect(sample(text, 'tollgate_requests_total', { route: 'slow', status_class: '4xx' })).toBe(1);
  });
});

describe('readiness', () => {
  it('flips to 503 when a private Redis stops and back when it returns', async () => {
    const redis = await startPrivateRedis();
    cleanup.push(() => redis.stop(true));
    const gw = await gateway({ redis: { url: redis.url, keyPrefix: uniquePrefix('ready') } });
    await waitFor(async () => (await request(`${gw.adminUrl}/readyz`)).status === 200, 5000);
    const ready = (await request(`${gw.adminUrl}/readyz`)).json();
    expect(ready.checks.redis).toMatchObject({ status: 'ok' });
    await redis.stop();
    await waitFor(async () => (await request(`${gw.adminUrl}/readyz`)).status === 503, 5000);
    expect((await request(`${gw.adminUrl}/readyz`)).json().checks.redis.status).toBe('down');
    await redis.start();
    await waitFor(async () => (await request(`${gw.adminUrl}/readyz`)).status === 200, 10_000, 100);
  });

  it('reports upstream targets out of rotation as degraded without failing readiness', async () => {
    const gw = await gateway();
    await request(`${gw.url}/dead`);
    const res = await request(`${gw.adminUrl}/readyz`);
    expect(res.status).toBe(200);
    expect(res.json().checks.upstreams.status).toBe('degraded');
  });
});

describe('audit and logs for authenticated traffic', () => {
  it('finds a 401 and a 429 by their instance, and never holds a real key or token', async () => {
    const { logger, lines } = capturedLogger();
    const up = await startUpstream();
    cleanup.push(() => up.close());
    const secret = 'a-shared-hs256-secret-of-32-chars-or-more!!';
    const gw = await startGateway(
      {
        admin: { host: '127.0.0.1', port: 0, tokens: [TOKEN] },
        auth: { jwt: [{ issuer: 'https://idp.test/', secret }] },
        routes: [
          {
            id: 'api',
            path: '/api',
            auth: { methods: ['apiKey', 'jwt'] },
            upstream: { targets: [up.url] },
            rateLimits: [{ name: 'tiny', by: 'key', limit: 1, windowSec: 60 }],
          },
        ],
      },
      { logger },
    );
    cleanup.push(() => gw.close());
    const { key, record } = await gw.gateway.services.keys.create({ name: 'k' });
    const { SignJWT } = await import('jose');
    const jwt = await new SignJWT({ sub: 'someone' })
      .setProtectedHeader({ alg: 'HS256' })
      .setIssuer('https://idp.test/')
      .setExpirationTime('5m')
      .sign(new TextEncoder().encode(secret));

    const unauthorized = expectProblem(
      await request(`${gw.url}/api`, { headers: { 'x-api-key': 'tg_live_wrongwrongwrong' } }),
      'invalid-credentials',
    );
    expect(await auditOf(gw.adminUrl, unauthorized.instance)).toMatchObject({
      status: 401,
      problem: 'invalid-credentials',
      route: 'api',
      credential_id: null,
    });

    expect((await request(`${gw.url}/api`, { headers: { 'x-api-key': key } })).status).toBe(200);
    const limited = expectProblem(
      await request(`${gw.url}/api`, { headers: { 'x-api-key': key } }),
      'rate-limit-exceeded',
    );
    expect(await auditOf(gw.adminUrl, limited.instance)).toMatchObject({
      status: 429,
      problem: 'rate-limit-exceeded',
      rate_limit_policy: 'tiny',
      auth_method: 'api-key',
      credential_id: record.id,
    });
    const jwtCall = await request(`${gw.url}/api`, { headers: { authorization: `Bearer ${jwt}` } });
    expect(await auditOf(gw.adminUrl, `/requests/${String(jwtCall.headers['x-request-id'])}`)).toMatchObject({
      auth_method: 'jwt',
      subject: 'someone',
    });

    const listed = await request(`${gw.adminUrl}/requests?credentialId=${record.id}`, { headers: auth });
    expect(listed.json().items.map((r: any) => r.status)).toEqual([429, 200]);
    const everything =
      lines.join('\n') +
      JSON.stringify(listed.json()) +
      (await request(`${gw.adminUrl}/requests?limit=100`, { headers: auth })).text;
    expect(everything).not.toContain(key);
    expect(everything).not.toContain(jwt);
    expect(everything).not.toContain(secret);
    const metrics = (await request(`${gw.adminUrl}/metrics`)).text;
    expect(metrics).toMatch(/tollgate_rate_limit_rejections_total\{route="api",policy="tiny"\} 1/);
    expect(metrics).toMatch(/tollgate_auth_failures_total\{route="api",problem="invalid-credentials"\} 1/);
  });
});
