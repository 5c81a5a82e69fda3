import { afterEach, describe, expect, it } from 'vitest';
import http from 'node:http';
import { request, waitFor, type Reply } from '../helpers/http.js';
import { startUpstream } from '../helpers/upstream.js';
import { startPrivateRedis } from '../helpers/redis.js';
import { startGatewayProcess, traffic } from '../helpers/process.js';
import { PROCESS_TEST_MS } from '../helpers/cli.js';

const TOKEN = 'resilience-admin-token-1';
const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

describe('Redis killed and restarted under traffic (gateway process)', { timeout: PROCESS_TEST_MS }, () => {
  it('rate-limited routes keep serving, quota and idempotency answer 503, all recover without a restart', async () => {
    const redis = await startPrivateRedis();
    cleanup.push(() => redis.stop(true));
    const up = await startUpstream();
    cleanup.push(() => up.close());
    const gw = await startGatewayProcess(
      `listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0, tokens: ["${TOKEN}"] }
redis: { url: "${redis.url}", keyPrefix: "res:", commandTimeoutMs: 200 }
plans: { metered: { quota: { limit: 1000000, period: month } } }
routes:
  - { id: limited, path: /limited, auth: none, upstream: { targets: ["${up.url}"], timeoutMs: 2000 }, rateLimits: [ { name: burst, by: ip, limit: 1000000, windowSec: 60 } ] }
  - { id: metered, path: /metered, auth: { methods: [apiKey] }, upstream: { targets: ["${up.url}"], timeoutMs: 2000 }, quota: { cost: 1 } }
  - { id: pay, path: /pay, auth: none, upstream: { targets: ["${up.url}"], timeoutMs: 2000 }, idempotency: {} }
`,
      process.env.DEBUG_FAULTS ? { LOG_LEVEL: 'debug' } : {},
    );
    cleanup.push(() => gw.stop());
    const newKey = async () => {
      const res = await request(`${gw.adminUrl}/keys`, {
        method: 'POST',
        headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
        body: JSON.stringify({ name: 'k', plan: 'metered' }),
      });
      return res.json().key as string;
    };
    let key = await newKey();
    const agent = new http.Agent({ keepAlive: true, maxSockets: 12 });
    cleanup.push(() => Promise.resolve(agent.destroy()));
    type Sample = { route: string; status: number; ms: number; problem: boolean };
    const load = traffic<Sample>(6, async (i) => {
      const route = ['limited', 'metered', 'pay'][i % 3]!;
      const t0 = performance.now();
      const res: Reply = await request(`${gw.url}/${route}`, {
        agent,
        timeoutMs: 3000,
        method: route === 'pay' ? 'POST' : 'GET',
        body: route === 'pay' ? `{"n":${i}}` : undefined,
        headers:
          route === 'metered' ? { 'x-api-key': key } : route === 'pay' ? { 'idempotency-key': `k-${i}` } : {},
      });
      return {
        route,
        status: res.status,
        ms: performance.now() - t0,
        problem: String(res.headers['content-type']).startsWith('application/problem+json'),
      };
    });
    await waitFor(() => load.count > 60, 10_000);
    const beforeKill = load.count;
    await redis.stop(true);
    await waitFor(() => load.count > beforeKill + 150, 15_000);
    const during = load.outcomes.slice(beforeKill + 30).flatMap((o) => (o.ok ? [o.value] : []));
    await redis.start();
    key = await (async () => {
      await waitFor(async () => (await request(`${gw.adminUrl}/readyz`)).status === 200, 15_000, 100);
      return newKey();
    })();
    const afterRestart = load.count;
    await waitFor(() => load.count > afterRestart + 90, 15_000);
    const outcomes = await load.stop();
    if (process.env.DEBUG_FAULTS)
      console.log(gw.cli.lines.filter((l) => !l.includes('"msg":"request"')).join('\n'));

    expect(outcomes.filter((o) => !o.ok)).toEqual([]); // nothing hung past its timeout or failed at the socket
    const samples = outcomes.flatMap((o) => (o.ok ? [o.value] : []));
    expect(Math.max(...samples.map((s) => s.ms))).toBeLessThan(3000);
    // While Redis was away: limited kept serving, the others failed closed with problem+json 503.
    // (Assertions list the offending samples, so a failure says what happened.)
    expect(during.filter((s) => s.route === 'limited' && s.status !== 200)).toEqual([]);
    expect(during.filter((s) => s.route !== 'limited' && (s.status !== 503 || !s.problem))).toEqual([]);
    expect(during.length).toBeGreaterThan(100);
    // And after the restart everything works again, in the same process.
    const recovered = samples.slice(-30);
    expect(recovered.filter((s) => s.status !== 200 && s.status !== 201)).toEqual([]);
  });
});
