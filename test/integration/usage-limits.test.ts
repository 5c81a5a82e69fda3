import { afterEach, describe, expect, it } from 'vitest';
import http, { type ServerResponse } from 'node:http';
import { startGateway, type RunningGateway } from '../helpers/gateway.js';
import { request, waitFor } from '../helpers/http.js';
import { startUpstream, type Upstream } from '../helpers/upstream.js';
import { expectProblem } from '../helpers/problem.js';
import { sharedRedisUrl, uniquePrefix } from '../helpers/redis.js';
import { ManualClock } from '../../src/core/clock.js';
import { rateCounter } from '../../src/policies/rate-limit/rate-limit.js';
import { rateLimitListSchema } from '../../src/policies/rate-limit/schema.js';

/*
 * SPEC §10 through real sockets: meters from an upstream's header and an SSE trailer, shadow
 * mode, and the exactness of sliding windows and meters across two instances on the real Redis.
 */

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

async function upstream(handler: (res: ServerResponse, url: string) => void): Promise<Upstream> {
  const up = await startUpstream((req, res) => handler(res, req.url ?? ''));
  cleanup.push(() => up.close());
  return up;
}

async function gateway(config: Record<string, unknown>, clock?: ManualClock): Promise<RunningGateway> {
  const gw = await startGateway(config, clock ? { clock } : {});
  cleanup.push(() => gw.close());
  return gw;
}

const stores: Array<[string, () => Record<string, unknown>]> = [
  ['memory', () => ({})],
  [
    'redis',
    () => ({ redis: { url: sharedRedisUrl, keyPrefix: uniquePrefix('usage'), commandTimeoutMs: 2000 } }),
  ],
];

const TOKENS = rateLimitListSchema.parse([
  { name: 'tokens', by: 'ip', limit: 100, windowSec: 3600, meter: 'tokens' },
])[0]!;

/** A route whose upstream reports `x-usage-tokens` (header, or trailer on /sse). */
function meteredConfig(upstreamUrl: string, extra: Record<string, unknown> = {}) {
  return {
    routes: [
      {
        id: 'ai',
        path: '/ai',
        auth: 'none',
        upstream: { targets: [upstreamUrl] },
        meters: { tokens: { responseHeader: 'x-usage-tokens' } },
        rateLimits: [TOKENS],
      },
    ],
    ...extra,
  };
}

/** Reports `?t=N` tokens: in a header, or for /ai/sse as the trailer of an event stream. */
function meterUpstream(res: ServerResponse, url: string): void {
  const query = new URL(url, 'http://x').searchParams;
  const tokens = query.get('t') ?? '';
  if (url.startsWith('/ai/sse')) {
    res.writeHead(200, { 'content-type': 'text/event-stream', trailer: 'x-usage-tokens' });
    res.write('data: {"delta":"Hel"}\n\n');
    setTimeout(
      () => {
        res.write('data: {"delta":"lo"}\n\n');
        res.addTrailers({ 'x-usage-tokens': tokens });
        res.end();
      },
      Number(query.get('d') ?? 20),
    );
    return;
  }
  res.writeHead(200, { 'content-type': 'application/json', 'x-usage-tokens': tokens });
  res.end('{}');
}

describe.each(stores)('meters (%s)', (_name, storeConfig) => {
  async function setup() {
    const clock = new ManualClock(Date.UTC(2030, 0, 1, 0, 0, 1));
    const up = await upstream(meterUpstream);
    const gw = await gateway({ ...storeConfig(), ...meteredConfig(up.url) }, clock);
    const counters = gw.gateway.services.counters;
    /** Waits (bounded) until the settled tokens reach `n`. */
    const settled = async (n: number) => {
      const spec = rateCounter('route:ai', TOKENS, '127.0.0.1', clock.now()).spec;
      let seen = -1;
      await waitFor(
        async () => {
          await counters.flush();
          seen = (await counters.peek([spec]))[0]!;
          return seen === n;
        },
        3000,
        10,
        () => `tokens counted: ${seen}, expected ${n}`,
      );
    };
    return { clock, up, gw, settled };
  }

  it('adds the value an upstream reports in a header; refuses the request after the one that crossed the limit', async () => {
    const { gw, settled } = await setup();
    const first = await request(`${gw.url}/ai?t=60`);
    expect(first.status).toBe(200);
    expect(first.headers['ratelimit-policy']).toBe('"tokens";q=100;w=3600;qu="tokens"');
    await settled(60);
    const second = await request(`${gw.url}/ai?t=60`); // 60 < 100: admitted, crosses to 120
    expect(second.status).toBe(200);
    await settled(120);
    const third = await request(`${gw.url}/ai?t=1`);
    expect(expectProblem(third, 'rate-limit-exceeded').policy).toBe('tokens');
    expect(third.headers['retry-after']).toBeDefined();
  });

  it('settles a streamed (SSE) response from its trailer once the stream ends', async () => {
    const { gw, settled } = await setup();
    const sse = await request(`${gw.url}/ai/sse?t=75`);
    expect(sse.status).toBe(200);
    expect(sse.text).toBe('data: {"delta":"Hel"}\n\ndata: {"delta":"lo"}\n\n');
    await settled(75);
    expect((await request(`${gw.url}/ai/sse?t=30`)).status).toBe(200);
    await settled(105);
    expect((await request(`${gw.url}/ai/sse?t=1`)).status).toBe(429);
  });

  it('adds 0 for a missing, negative, fractional or too large value and counts it in the metric', async () => {
    const { gw, settled } = await setup();
    for (const t of ['', '-5', '2.5', 'lots', '9007199254740993'])
      expect((await request(`${gw.url}/ai?t=${encodeURIComponent(t)}`)).status).toBe(200);
    expect((await request(`${gw.url}/ai?t=7`)).status).toBe(200);
    await settled(7);
    await waitFor(async () =>
      (await gw.gateway.services.metrics.text()).includes(
        'tollgate_meter_missing_total{route="ai",meter="tokens"} 5',
      ),
    );
  });
});

describe('meters: attacks', () => {
  it('a client hanging up mid-stream, before the trailer, adds 0 and is counted as missing (not free silently)', async () => {
    const up = await upstream(meterUpstream);
    const gw = await gateway(meteredConfig(up.url));
    await new Promise<void>((resolve, reject) => {
      const req = http.get(`${gw.url}/ai/sse?t=50&d=2000`, (res) => {
        res.once('data', () => {
          req.destroy();
          resolve();
        });
      });
      req.on('error', () => undefined);
      setTimeout(() => reject(new Error('no first event')), 3000).unref();
    });
    await waitFor(async () =>
      (await gw.gateway.services.metrics.text()).includes(
        'tollgate_meter_missing_total{route="ai",meter="tokens"} 1',
      ),
    );
    // The gateway keeps serving, and a client-sent copy of the meter header counts for nothing.
    const own = await request(`${gw.url}/ai?t=2`, { headers: { 'x-usage-tokens': '999999' } });
    expect(own.status).toBe(200);
    expect(own.headers.ratelimit).toMatch(/^"tokens";r=100;t=\d+$/);
  });
});

describe.each(stores)('shadow mode (%s)', (_name, storeConfig) => {
  it('lets everything through, counts would-be refusals, marks the audit record, describes only enforced limits', async () => {
    const up = await upstream((res) => res.end('ok'));
    const gw = await gateway({
      ...storeConfig(),
      routes: [
        {
          id: 'r',
          path: '/r',
          auth: 'none',
          upstream: { targets: [up.url] },
          rateLimits: [
            { name: 'enforced', by: 'ip', limit: 1000, windowSec: 60 },
            { name: 'trial', by: 'ip', limit: 2, windowSec: 60, mode: 'shadow', algorithm: 'sliding-window' },
          ],
        },
      ],
    });
    const replies: Array<Awaited<ReturnType<typeof request>>> = [];
    for (let i = 0; i < 5; i++) replies.push(await request(`${gw.url}/r`));
    expect(replies.map((r) => r.status)).toEqual([200, 200, 200, 200, 200]);
    expect(up.calls).toHaveLength(5);
    for (const r of replies) {
      expect(r.headers['ratelimit-policy']).toBe('"enforced";q=1000;w=60');
      expect(r.headers.ratelimit).toMatch(/^"enforced";/);
    }
    await waitFor(async () =>
      (await gw.gateway.services.metrics.text()).includes(
        'tollgate_rate_limit_shadow_rejections_total{policy="trial"} 3',
      ),
    );
    const audit = gw.gateway.services.audit;
    let records: Array<Awaited<ReturnType<typeof audit.get>>> = [];
    await waitFor(async () => {
      records = await Promise.all(replies.map((r) => audit.get(String(r.headers['x-request-id']))));
      return records.every((r) => r !== undefined);
    });
    expect(records.map((r) => r?.rate_limit_shadow ?? null)).toEqual([
      null,
      null,
      ['trial'],
      ['trial'],
      ['trial'],
    ]);
    expect(records.map((r) => r?.rate_limit_policy)).toEqual([null, null, null, null, null]);
  });
});

describe('usage limits across instances (real Redis)', () => {
  async function pair(rateLimits: unknown[], up: Upstream, meters?: unknown) {
    const clock = new ManualClock(Date.UTC(2030, 0, 1, 0, 0, 5));
    const config = {
      redis: { url: sharedRedisUrl, keyPrefix: uniquePrefix('exact-v2'), commandTimeoutMs: 2000 },
      routes: [
        {
          id: 'r',
          path: '/r',
          auth: 'none',
          upstream: { targets: [up.url] },
          ...(meters ? { meters } : {}),
          rateLimits,
        },
      ],
    };
    const a = await gateway(config, clock);
    const b = await gateway(config, clock);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 50 });
    cleanup.push(() => Promise.resolve(agent.destroy()));
    const burst = (n: number) =>
      Promise.all(Array.from({ length: n }, (_, i) => request(`${(i % 2 ? a : b).url}/r`, { agent })));
    return { a, b, clock, burst };
  }

  it('a sliding window: 400 parallel requests on two gateways against a limit of 50 admit exactly 50', async () => {
    const up = await upstream((res) => res.end('{}'));
    const { burst } = await pair(
      [{ name: 'global', by: 'global', limit: 50, windowSec: 60, algorithm: 'sliding-window' }],
      up,
    );
    const statuses = (await burst(400)).map((r) => r.status);
    expect(statuses.filter((s) => s === 200)).toHaveLength(50);
    expect(statuses.filter((s) => s === 429)).toHaveLength(350);
    expect(up.calls).toHaveLength(50);
  });

  it('a meter: every reported value is counted once, refusals start only at the limit, overshoot is the in-flight values', async () => {
    const PER_REQUEST = 3;
    const up = await upstream((res) => {
      res.writeHead(200, { 'x-usage-tokens': String(PER_REQUEST) });
      res.end('{}');
    });
    const rl = { name: 'tokens', by: 'global', limit: 50, windowSec: 60, meter: 'tokens' };
    const { a, clock, burst } = await pair([rl], up, { tokens: { responseHeader: 'x-usage-tokens' } });
    const statuses = (await burst(400)).map((r) => r.status);
    const admitted = statuses.filter((s) => s === 200).length;
    expect(admitted + statuses.filter((s) => s === 429).length).toBe(400);
    expect(up.calls).toHaveLength(admitted);
    // A request is refused only once the counter is at or over 50: at least ⌈50 / 3⌉ got through.
    expect(admitted).toBeGreaterThanOrEqual(Math.ceil(50 / PER_REQUEST));
    // Both instances' settlements land, each exactly once: the counter is 3 × admitted.
    const counters = a.gateway.services.counters;
    const spec = rateCounter('route:r', rateLimitListSchema.parse([rl])[0]!, 'global', clock.now()).spec;
    let seen = -1;
    await waitFor(
      async () => {
        seen = (await counters.peek([spec]))[0]!;
        return seen === PER_REQUEST * admitted;
      },
      3000,
      10,
      () => `counted ${seen}, expected ${PER_REQUEST * admitted}`,
    );
    // Overshoot bound (docs/rate-limits.md): below the limit plus the values of requests admitted
    // while unsettled — at most every request of the burst here, 3 per request.
    expect(seen).toBeLessThan(50 + PER_REQUEST * admitted);
    // Settled and over: every further request is refused, on either instance.
    const after = await burst(10);
    expect(after.map((r) => r.status)).toEqual(new Array(10).fill(429));
  });

  it('one meter limit on the full Redis pipeline adds at most one Redis command per request, amortised', async () => {
    const { startPrivateRedis } = await import('../helpers/redis.js');
    const redis = await startPrivateRedis();
    cleanup.push(() => redis.stop(true));
    const up = await upstream((res) => {
      res.writeHead(200, { 'x-usage-tokens': '1' });
      res.end('{}');
    });
    const gw = await gateway({
      redis: { url: redis.url, keyPrefix: 'cmd:' },
      plans: {
        p: {
          quota: { limit: 1_000_000, period: 'month' },
          rateLimits: [{ name: 'plan', by: 'key', limit: 1_000_000, windowSec: 60 }],
        },
      },
      routes: [
        {
          id: 'r',
          path: '/r',
          auth: { methods: ['apiKey'] },
          upstream: { targets: [up.url] },
          meters: { tokens: { responseHeader: 'x-usage-tokens' } },
          rateLimits: [
            { name: 'burst', by: 'ip', limit: 1_000_000, windowSec: 1 },
            { name: 'hourly', by: 'key', limit: 1_000_000, windowSec: 3600 },
            { name: 'tokens', by: 'key', limit: 1_000_000_000, windowSec: 86_400, meter: 'tokens' },
          ],
          quota: { cost: 1 },
        },
      ],
    });
    const { key } = await gw.gateway.services.keys.create({ name: 'k', plan: 'p', remaining: 1_000_000 });
    const headers = { 'x-api-key': key };
    const agent = new http.Agent({ keepAlive: true, maxSockets: 20 });
    cleanup.push(() => Promise.resolve(agent.destroy()));
    await request(`${gw.url}/r`, { headers, agent }); // warm: key cache, script load
    await gw.gateway.services.counters.flush();
    const { Redis } = await import('ioredis');
    const admin = new Redis(redis.url);
    cleanup.push(() => Promise.resolve(admin.disconnect()));
    const calls = async (cmd: string) =>
      Number(new RegExp(`cmdstat_${cmd}:calls=(\\d+)`).exec(await admin.info('commandstats'))?.[1] ?? 0);
    // Sequential: each request's check is one EVALSHA, its settlement at most one more.
    await admin.config('RESETSTAT');
    const n = 100;
    for (let i = 0; i < n; i++) expect((await request(`${gw.url}/r`, { headers, agent })).status).toBe(200);
    await gw.gateway.services.counters.flush();
    const sequential = await calls('evalsha');
    expect(sequential).toBeGreaterThan(n);
    expect(sequential).toBeLessThanOrEqual(2 * n);
    // Concurrent: settlements coalesce (one script per flush), so the extra is well under one per request.
    await admin.config('RESETSTAT');
    const replies = await Promise.all(
      Array.from({ length: 200 }, () => request(`${gw.url}/r`, { headers, agent })),
    );
    expect(replies.every((r) => r.status === 200)).toBe(true);
    await gw.gateway.services.counters.flush();
    const concurrent = await calls('evalsha');
    expect(concurrent).toBeLessThanOrEqual(2 * 200);
    expect(concurrent - 200).toBeLessThan(200);
  });
});

describe('reload with usage limits', () => {
  it('a reload naming an undeclared meter is refused and the running limits stay', async () => {
    const up = await upstream(meterUpstream);
    const gw = await gateway(meteredConfig(up.url));
    const bad = gw.gateway.reload({
      routes: [
        {
          id: 'ai',
          path: '/ai',
          auth: 'none',
          upstream: { targets: [up.url] },
          rateLimits: [{ name: 'tokens', by: 'ip', limit: 1, windowSec: 60, meter: 'tokens' }],
        },
      ],
    });
    expect(bad.ok).toBe(false);
    expect((await request(`${gw.url}/ai?t=1`)).headers['ratelimit-policy']).toBe(
      '"tokens";q=100;w=3600;qu="tokens"',
    );
    const good = gw.gateway.reload(
      meteredConfig(up.url, {
        plans: {},
      }),
    );
    expect(good.ok).toBe(true);
  });
});

describe('meters on a mock route', () => {
  it("counts the mock's own meter header", async () => {
    const gw = await gateway({
      routes: [
        {
          id: 'm',
          path: '/m',
          mock: { body: {}, headers: { 'X-Usage-Tokens': '4' } },
          meters: { tokens: { responseHeader: 'x-usage-tokens' } },
          rateLimits: [{ name: 'tokens', by: 'ip', limit: 8, windowSec: 3600, meter: 'tokens' }],
        },
      ],
    });
    expect((await request(`${gw.url}/m`)).status).toBe(200);
    await waitFor(async () => /r=4;/.test(String((await request(`${gw.url}/m`)).headers.ratelimit)));
    await waitFor(async () => (await request(`${gw.url}/m`)).status === 429);
  });
});
