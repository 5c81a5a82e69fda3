import { afterEach, describe, expect, it } from 'vitest';
import http from 'node:http';
import net from 'node:net';
import { request, waitFor } from '../helpers/http.js';
import { startUpstream } from '../helpers/upstream.js';
import { signingKey, startJwksServer, token } from '../helpers/jwks.js';
import { startGatewayProcess, traffic } from '../helpers/process.js';
import { PROCESS_TEST_MS } from '../helpers/cli.js';

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

describe('identity provider faults (gateway process)', { timeout: PROCESS_TEST_MS }, () => {
  it('keeps accepting tokens with cached keys while the JWKS is down, and a rotated key after it is back', async () => {
    const k1 = await signingKey('k1');
    const jwks = await startJwksServer([k1]);
    cleanup.push(() => jwks.close());
    const up = await startUpstream();
    cleanup.push(() => up.close());
    const gw = await startGatewayProcess(`listen: { host: 127.0.0.1, port: 0 }
auth: { jwt: [ { issuer: "https://idp.test/", audience: "api://orders", jwksUri: "${jwks.url}", jwksCooldownSec: 1 } ] }
routes:
  - { id: api, path: /api, auth: { methods: [jwt] }, upstream: { targets: ["${up.url}"] } }
`);
    cleanup.push(() => gw.stop());
    const call = async (t: string) =>
      (await request(`${gw.url}/api`, { headers: { authorization: `Bearer ${t}` } })).status;
    expect(await call(await token(k1))).toBe(200);
    jwks.down = true;
    for (let i = 0; i < 5; i++) expect(await call(await token(k1, { sub: `user-${i}` }))).toBe(200);
    const k2 = await signingKey('k2');
    jwks.keys = [k1, k2];
    jwks.down = false;
    // A new kid is fetched once the refetch cooldown (1 s here) has passed: polled, not slept.
    const fresh = await token(k2);
    await waitFor(async () => (await call(fresh)) === 200, 5000, 100);
    expect(await call(fresh)).toBe(200);
  });
});

describe('config reload and drain under load (gateway process)', { timeout: PROCESS_TEST_MS }, () => {
  const yaml = (up: string, version: number) => `listen: { host: 127.0.0.1, port: 0 }
server: { drainTimeoutMs: 5000 }
routes:
  - { id: v, path: /v, mock: { body: { version: ${version} } } }
  - { id: p, path: /p, auth: none, upstream: { targets: ["${up}"] } }
`;

  it('reloads a valid and refuses an invalid file with zero failed requests', async () => {
    const up = await startUpstream();
    cleanup.push(() => up.close());
    const gw = await startGatewayProcess(yaml(up.url, 1));
    cleanup.push(() => gw.stop());
    const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
    cleanup.push(() => Promise.resolve(agent.destroy()));
    const load = traffic(8, async (i) => {
      const res = await request(`${gw.url}/${i % 2 ? 'v' : 'p'}`, { agent, timeoutMs: 3000 });
      return { status: res.status, version: i % 2 ? (res.json().version as number) : undefined };
    });
    await waitFor(() => load.count > 100, 10_000);
    gw.write('routes: [ { id: broken');
    gw.cli.child.kill('SIGHUP');
    await gw.cli.waitForLog('config reload rejected', 5000);
    const mark = load.count;
    await waitFor(() => load.count > mark + 100, 10_000);
    gw.write(yaml(up.url, 2));
    gw.cli.child.kill('SIGHUP');
    await waitFor(
      () =>
        load.outcomes
          .slice(-20)
          .every((o) => o.ok && (o.value.version === undefined || o.value.version === 2)),
      10_000,
      50,
    );
    const outcomes = await load.stop();
    expect(outcomes.filter((o) => !o.ok || o.value.status !== 200)).toEqual([]);
  });

  it('on SIGTERM under load: in-flight requests complete, new connections are refused, exit 0', async () => {
    const held: Array<() => void> = [];
    const up = await startUpstream((_req, res) => {
      held.push(() => res.end('finished'));
    });
    cleanup.push(() => up.close());
    const releaseAll = () => held.splice(0).forEach((f) => f());
    const gw = await startGatewayProcess(yaml(up.url, 1));
    cleanup.push(() => gw.stop());
    const inFlight = Array.from({ length: 10 }, () => request(`${gw.url}/p`, { timeoutMs: 10_000 }));
    await waitFor(() => up.calls.length === 10, 5000);
    gw.cli.child.kill('SIGTERM');
    await gw.cli.waitForLog('draining', 5000);
    await waitFor(
      () =>
        new Promise<boolean>((resolve) => {
          const s = net.connect(gw.port, '127.0.0.1');
          s.on('connect', () => {
            s.destroy();
            resolve(false);
          });
          s.on('error', () => resolve(true));
        }),
      5000,
    );
    releaseAll();
    const results = await Promise.all(inFlight);
    expect(results.map((r) => r.status)).toEqual(Array.from({ length: 10 }, () => 200));
    expect(results.every((r) => r.text === 'finished')).toBe(true);
    expect(await gw.cli.exited).toBe(0);
  });
});
