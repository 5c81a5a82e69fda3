import { afterEach, describe, expect, it } from 'vitest';
import http from 'node:http';
import { request, waitFor } from '../helpers/http.js';
import { startUpstream } from '../helpers/upstream.js';
import { startGatewayProcess, traffic } from '../helpers/process.js';
import { PROCESS_TEST_MS } from '../helpers/cli.js';

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

describe('upstream faults under traffic (gateway process)', { timeout: PROCESS_TEST_MS }, () => {
  it('a target killed mid-traffic: the other takes over, nothing is lost for idempotent requests', async () => {
    const a = await startUpstream();
    const b = await startUpstream();
    cleanup.push(() => b.close());
    const gw = await startGatewayProcess(`listen: { host: 127.0.0.1, port: 0 }
routes:
  - id: api
    path: /api
    auth: none
    upstream: { targets: ["${a.url}", "${b.url}"], timeoutMs: 2000, retries: 1, passiveHealth: { failures: 1, cooldownSec: 30 } }
`);
    cleanup.push(() => gw.stop());
    const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
    cleanup.push(() => Promise.resolve(agent.destroy()));
    const load = traffic(4, () => request(`${gw.url}/api`, { agent, timeoutMs: 3000 }).then((r) => r.status));
    await waitFor(() => load.count > 50, 10_000);
    await a.close(); // connections reset, new ones refused
    const killedAt = load.count;
    await waitFor(() => load.count > killedAt + 100, 10_000);
    const outcomes = await load.stop();
    expect(outcomes.filter((o) => !o.ok)).toEqual([]);
    // GETs that hit the dead target were retried on the live one: every request succeeded.
    const statuses = outcomes.flatMap((o) => (o.ok ? [o.value] : []));
    expect(statuses.filter((s) => s !== 200)).toEqual([]);
    expect(b.calls.length).toBeGreaterThan(100);
  });

  it('slow, resetting and truncating upstreams: 504 and 502 problems, cut bodies stay cut', async () => {
    const slow = await startUpstream(() => undefined, { streaming: true }); // never answers
    const reset = await startUpstream((req) => req.socket.destroy(), { streaming: true });
    const truncate = await startUpstream((_req, res) => {
      res.writeHead(200, { 'content-length': '100000' });
      res.write('x'.repeat(1000));
      setTimeout(() => res.socket?.destroy(), 10);
    });
    cleanup.push(
      () => slow.close(),
      () => reset.close(),
      () => truncate.close(),
    );
    const gw = await startGatewayProcess(`listen: { host: 127.0.0.1, port: 0 }
routes:
  - { id: slow, path: /slow, auth: none, upstream: { targets: ["${slow.url}"], timeoutMs: 300 } }
  - { id: reset, path: /reset, auth: none, upstream: { targets: ["${reset.url}"], timeoutMs: 2000, retries: 0 } }
  - { id: truncate, path: /truncate, auth: none, upstream: { targets: ["${truncate.url}"], timeoutMs: 2000 } }
`);
    cleanup.push(() => gw.stop());
    const s = await request(`${gw.url}/slow`);
    expect(s.status).toBe(504);
    expect(s.json().type).toMatch(/gateway-timeout$/);
    const r = await request(`${gw.url}/reset`);
    expect(r.status).toBe(502);
    expect(r.json().type).toMatch(/bad-gateway$/);
    const cut = await new Promise<string>((resolve) => {
      const req = http.get(`${gw.url}/truncate`, (res) => {
        res.on('data', () => undefined);
        res.on('end', () => resolve('complete'));
        res.on('error', () => resolve('cut'));
        res.on('aborted', () => resolve('cut'));
      });
      req.on('error', () => resolve('cut'));
      req.setTimeout(5000, () => req.destroy());
    });
    expect(cut).toBe('cut');
    // The process is fine after all that.
    expect((await request(`${gw.url}/slow`)).status).toBe(504);
  });

  it('streams 10 MB bodies through with bounded memory', async () => {
    const big = Buffer.alloc(10 * 1024 * 1024, 1);
    const up = await startUpstream((_req, res) => {
      res.writeHead(200, { 'content-length': String(big.length) });
      res.end(big);
    });
    cleanup.push(() => up.close());
    const gw = await startGatewayProcess(`listen: { host: 127.0.0.1, port: 0 }
logging: { level: warn }
routes:
  - { id: big, path: /big, auth: none, upstream: { targets: ["${up.url}"] } }
`);
    cleanup.push(() => gw.stop());
    const first = await request(`${gw.url}/big`, { timeoutMs: 10_000 });
    expect(first.body.length).toBe(big.length);
    const start = gw.rssMb();
    for (let round = 0; round < 5; round++) {
      const results = await Promise.all(
        Array.from({ length: 4 }, () => request(`${gw.url}/big`, { timeoutMs: 20_000 })),
      );
      for (const res of results) expect(res.body.length).toBe(big.length);
    }
    // 200 MB went through; the gateway never held more than a few chunks of it.
    expect(gw.rssMb() - start).toBeLessThan(80);
  });
});
