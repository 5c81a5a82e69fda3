import { afterEach, describe, expect, it } from 'vitest';
import { startGateway, type RunningGateway } from '../helpers/gateway.js';
import { freePort, request, waitFor } from '../helpers/http.js';
import { startUpstream } from '../helpers/upstream.js';
import { startPrivateRedis } from '../helpers/redis.js';
import type { ConfigInput } from '../../src/config/schema.js';

const TOKEN = 'metrics-hardening-admin-token';
const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

async function gateway(config: Partial<ConfigInput>): Promise<RunningGateway> {
  const gw = await startGateway({
    admin: { host: '127.0.0.1', port: 0, tokens: [TOKEN] },
    ...config,
  });
  cleanup.push(() => gw.close());
  return gw;
}

const metricsText = async (gw: RunningGateway) => (await request(`${gw.adminUrl}/metrics`)).text;

/** `{labels}` of every sample of `name` (exact name, not a longer one). */
function seriesOf(text: string, name: string): Array<{ labels: Record<string, string>; value: number }> {
  const out: Array<{ labels: Record<string, string>; value: number }> = [];
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{([^}]*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const labels: Record<string, string> = {};
    for (const [, k, v] of (m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)) labels[k!] = v!;
    out.push({ labels, value: Number(m[3]) });
  }
  return out;
}

const typeOf = (text: string, name: string) => new RegExp(`^# TYPE ${name} (\\w+)$`, 'm').exec(text)?.[1];

describe('metrics: monotonic counts are counters named _total (14.6)', () => {
  it('tollgate_redis_errors_total and tollgate_config_reloads_total{result} are counters; the gauge names are gone', async () => {
    const redis = await startPrivateRedis();
    cleanup.push(() => redis.stop(true));
    const gw = await gateway({
      redis: {
        url: redis.url,
        keyPrefix: 'metrics-hardening:',
        commandTimeoutMs: 200,
        connectTimeoutMs: 500,
      },
      routes: [{ id: 'demo', path: '/demo', mock: {} }],
    });
    await waitFor(() => gw.gateway.services.redis!.ready, 5000);
    const good = { ...gw.gateway.config, routes: [{ id: 'demo', path: '/demo', mock: {} }] };
    expect(gw.gateway.reload(good).ok).toBe(true);
    expect(gw.gateway.reload({ ...good, routes: [{ id: 'x', path: 'bad' }] }).ok).toBe(false);
    expect(gw.gateway.reload({ ...good, routes: [{ id: 'x', path: 'bad' }] }).ok).toBe(false);
    // A frozen Redis makes commands time out: each failure is counted.
    redis.freeze();
    const admin = { authorization: `Bearer ${TOKEN}` };
    expect((await request(`${gw.adminUrl}/keys`, { headers: admin, timeoutMs: 5000 })).status).toBe(503);
    redis.thaw();
    expect(gw.gateway.services.redis!.errors).toBeGreaterThan(0);

    const text = await metricsText(gw);
    expect(typeOf(text, 'tollgate_redis_errors_total')).toBe('counter');
    expect(seriesOf(text, 'tollgate_redis_errors_total')[0]!.value).toBe(gw.gateway.services.redis!.errors);
    expect(typeOf(text, 'tollgate_config_reloads_total')).toBe('counter');
    expect(seriesOf(text, 'tollgate_config_reloads_total')).toEqual(
      expect.arrayContaining([
        { labels: { result: 'success' }, value: 1 },
        { labels: { result: 'failure' }, value: 2 },
      ]),
    );
    expect(text).not.toMatch(/^tollgate_redis_errors[ {]/m);
    expect(text).not.toMatch(/^tollgate_config_reloads[ {]/m);
    // Every tollgate_*_total is a counter (Node's own nodejs_active_*_total gauges are prom-client's names).
    expect(text).not.toMatch(/^# TYPE tollgate_\S+_total (?!counter)/m);
  });
});

describe('metrics: the target label is the origin on every metric (14.6)', () => {
  it('a target with a base path is labelled by its origin on the health gauge as on the latency histogram', async () => {
    const up = await startUpstream();
    cleanup.push(() => up.close());
    const deadPort = await freePort();
    const gw = await gateway({
      routes: [
        { id: 'based', path: '/based', auth: 'none', upstream: { targets: [`${up.url}/api/v2`] } },
        {
          id: 'dead',
          path: '/dead',
          auth: 'none',
          upstream: {
            targets: [`http://127.0.0.1:${deadPort}/base`],
            retries: 0,
            passiveHealth: { failures: 1 },
          },
        },
      ],
    });
    expect((await request(`${gw.url}/based/x`)).status).toBe(200);
    expect(up.calls[0]!.url).toBe('/api/v2/based/x');
    expect((await request(`${gw.url}/dead`)).status).toBe(502);
    const text = await metricsText(gw);
    const healthy = seriesOf(text, 'tollgate_upstream_target_healthy');
    expect(healthy).toEqual(
      expect.arrayContaining([
        { labels: { route: 'based', target: up.url }, value: 1 },
        { labels: { route: 'dead', target: `http://127.0.0.1:${deadPort}` }, value: 0 },
      ]),
    );
    const latency = seriesOf(text, 'tollgate_upstream_duration_seconds_count');
    expect(latency).toEqual([{ labels: { route: 'based', target: up.url }, value: 1 }]);
    const errors = seriesOf(text, 'tollgate_upstream_errors_total');
    expect(errors.map((s) => s.labels.target)).toEqual([`http://127.0.0.1:${deadPort}`]);
    // No target label anywhere carries a path.
    expect(text).not.toMatch(/target="[^"]*:\d+\/[^"]*"/);
  });
});

describe("metrics: process metrics keep Node's standard names (14.6)", () => {
  it('process_* and nodejs_* are unprefixed; only the gateway metrics carry tollgate_; /stats still reads them', async () => {
    const gw = await gateway({ routes: [{ id: 'demo', path: '/demo', mock: {} }] });
    for (let i = 0; i < 3; i++) await request(`${gw.url}/demo`);
    const text = await metricsText(gw);
    for (const name of [
      'process_cpu_seconds_total',
      'process_start_time_seconds',
      'process_resident_memory_bytes',
      'nodejs_heap_size_used_bytes',
      'nodejs_eventloop_lag_seconds',
    ])
      expect(typeOf(text, name), name).toBeDefined();
    expect(text).not.toMatch(/^# TYPE tollgate_(process|nodejs)_/m);
    const stats = (
      await request(`${gw.adminUrl}/stats`, { headers: { authorization: `Bearer ${TOKEN}` } })
    ).json();
    expect(stats.requests['2xx']).toBe(3);
    expect(stats.latency.at(-1)).toEqual({ le: null, count: 3 });
  });
});
