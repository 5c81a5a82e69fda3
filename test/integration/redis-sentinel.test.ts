import { afterEach, describe, expect, it } from 'vitest';
import { startGateway } from '../helpers/gateway.js';
import { request, waitFor } from '../helpers/http.js';
import { startUpstream } from '../helpers/upstream.js';
import { redisCli, startRedisSentinel } from '../helpers/redis.js';

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

/** Script calls a Redis node ran (EVALSHA, and EVAL when the script was not loaded there yet). */
async function scriptCalls(port: number): Promise<number> {
  const out = await redisCli(port, ['info', 'commandstats']);
  const calls = (cmd: string) => Number(new RegExp(`cmdstat_${cmd}:calls=(\\d+)`).exec(out)?.[1] ?? 0);
  return calls('evalsha') + calls('eval');
}

describe('Redis Sentinel', () => {
  it('finds the master through the sentinel, and follows a failover without a restart', async () => {
    const sentinel = await startRedisSentinel();
    cleanup.push(() => sentinel.stop());
    const up = await startUpstream();
    cleanup.push(() => up.close());
    const gw = await startGateway({
      redis: {
        sentinels: sentinel.sentinels,
        sentinelName: sentinel.name,
        keyPrefix: 'sentinel:',
        commandTimeoutMs: 1000,
      },
      plans: { metered: { quota: { limit: 1000, period: 'month' } } },
      routes: [
        {
          id: 'metered',
          path: '/metered',
          auth: { methods: ['apiKey'] },
          upstream: { targets: [up.url] },
          rateLimits: [{ name: 'per-ip', by: 'ip', limit: 1000, windowSec: 60 }],
          quota: { cost: 1 },
        },
        { id: 'pay', path: '/pay', auth: 'none', upstream: { targets: [up.url] }, idempotency: {} },
      ],
    });
    cleanup.push(() => gw.close());
    await waitFor(() => gw.gateway.services.redis!.ready, 10_000);
    const { key } = await gw.gateway.services.keys.create({ name: 'k', plan: 'metered' });
    const metered = () => request(`${gw.url}/metered`, { headers: { 'x-api-key': key }, timeoutMs: 5000 });

    const first = await sentinel.masterPort();
    expect((await metered()).status).toBe(200); // loads the script there
    const before = await scriptCalls(first);
    for (let i = 0; i < 5; i++) expect((await metered()).status).toBe(200);
    // The counters ran on the master the sentinel named: one script call each (and the audit
    // trail's flushes, one script call per 100 ms with records waiting).
    const ran = (await scriptCalls(first)) - before;
    expect(ran).toBeGreaterThanOrEqual(5);
    expect(ran).toBeLessThanOrEqual(10);

    // The gateway's two connections (commands, pub/sub) each hear +switch-master through a
    // subscription of their own, made after connecting (asynchronously, in ioredis): the failover
    // waits for them, else it could go unheard and the gateway follow only on READONLY.
    await waitFor(async () => (await sentinel.subscribers()) >= 2, 10_000, 50);
    // A forced failover loses what the replica has not received yet (Redis replicates
    // asynchronously): on a loaded machine the key record could be among it, and every request
    // after the failover a 401. The replica acknowledges everything written so far first.
    expect(Number((await redisCli(first, ['wait', '1', '5000'])).trim())).toBeGreaterThanOrEqual(1);
    const second = await sentinel.failover();
    expect(second).not.toBe(first);
    // The gateway follows at once (Sentinel's +switch-master, READONLY from the demoted master), not
    // after its reconnect backoff: it writes to the new master within 5 s (0.1–0.2 s here; 10.3 s
    // before failoverDetector and reconnectOnError were set, which this bound refuses).
    const statuses: number[] = [];
    let last = '';
    await waitFor(
      async () => {
        const res = await metered();
        statuses.push(res.status);
        last = res.text.slice(0, 300);
        return res.status === 200 && (await scriptCalls(second)) > 0;
      },
      5000,
      100,
      () =>
        `statuses after the failover: ${statuses.join(' ')}; master ${first} -> ${second}; last answer ${last}`,
    );
    const res = await metered();
    expect(res.status).toBe(200);
    expect(res.headers['ratelimit']).toBeDefined();
    const pay = await request(`${gw.url}/pay`, {
      method: 'POST',
      headers: { 'idempotency-key': 'after-failover', 'content-type': 'application/json' },
      body: '{"n":1}',
    });
    expect(pay.status).toBe(200);
    const replay = await request(`${gw.url}/pay`, {
      method: 'POST',
      headers: { 'idempotency-key': 'after-failover', 'content-type': 'application/json' },
      body: '{"n":1}',
    });
    expect(replay.headers['idempotent-replayed']).toBe('true');
  }, 60_000);
});
