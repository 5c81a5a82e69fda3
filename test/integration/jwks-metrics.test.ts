import { afterEach, describe, expect, it } from 'vitest';
import { startGateway } from '../helpers/gateway.js';
import { signingKey, startJwksServer, token } from '../helpers/jwks.js';

// The JWKS gauges the "JWKS stale" alert reads (ops/prometheus/alerts.yml).
const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

function gauge(text: string, name: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{issuer="https://idp.test/"}`));
  return line === undefined ? undefined : Number(line.split(' ').at(-1));
}

describe('JWKS metrics', () => {
  it('show each issuer usable, its last fetch, and the key set age', async () => {
    const key = await signingKey('k1');
    const jwks = await startJwksServer([key]);
    cleanup.push(() => jwks.close());
    const gw = await startGateway({
      auth: {
        jwt: [{ issuer: 'https://idp.test/', audience: 'api://orders', jwksUri: jwks.url }],
      },
      routes: [{ id: 'm', path: '/m', auth: { methods: ['jwt'] }, mock: { body: {} } }],
    });
    cleanup.push(() => gw.close());
    const before = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    // Before the first fetch: not usable, and no age yet.
    expect(gauge(before, 'tollgate_jwks_usable')).toBe(0);
    expect(gauge(before, 'tollgate_jwks_age_seconds')).toBeUndefined();

    const res = await fetch(`${gw.url}/m`, { headers: { authorization: `Bearer ${await token(key)}` } });
    expect(res.status).toBe(200);
    const after = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    expect(gauge(after, 'tollgate_jwks_usable')).toBe(1);
    expect(gauge(after, 'tollgate_jwks_last_fetch_success')).toBe(1);
    expect(gauge(after, 'tollgate_jwks_age_seconds')).toBeGreaterThanOrEqual(0);
  });
});
