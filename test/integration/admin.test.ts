import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, type RunningGateway } from '../helpers/gateway.js';
import { request } from '../helpers/http.js';
import { expectProblem } from '../helpers/problem.js';

const TOKEN = 'admin-token-0123456789';

describe('admin listener', () => {
  let gw: RunningGateway;
  beforeAll(async () => {
    gw = await startGateway({
      admin: { host: '127.0.0.1', port: 0, tokens: [TOKEN, 'another-admin-token-xyz'] },
      routes: [{ id: 'demo', path: '/demo', mock: {} }],
    });
  });
  afterAll(() => gw.close());

  it('answers /healthz and /readyz without a token', async () => {
    const health = await request(`${gw.adminUrl}/healthz`);
    expect(health.status).toBe(200);
    expect(health.json()).toEqual({ status: 'ok' });
    const ready = await request(`${gw.adminUrl}/readyz`);
    expect(ready.status).toBe(200);
    expect(ready.json()).toMatchObject({
      status: 'ready',
      draining: false,
      checks: { config: { status: 'ok', routes: 1 } },
    });
    expect(ready.headers['x-request-id']).toBeDefined();
  });

  it('needs an admin token for everything else', async () => {
    const none = await request(`${gw.adminUrl}/anything`);
    expectProblem(none, 'missing-credentials');
    expect(none.headers['www-authenticate']).toBe('Bearer realm="tollgate-admin"');
    const wrong = await request(`${gw.adminUrl}/anything`, {
      headers: { authorization: 'Bearer not-the-token-at-all' },
    });
    expectProblem(wrong, 'invalid-credentials');
    expect(wrong.headers['www-authenticate']).toContain('error="invalid_token"');
    const ok = await request(`${gw.adminUrl}/anything`, { headers: { authorization: `Bearer ${TOKEN}` } });
    expectProblem(ok, 'not-found');
    const second = await request(`${gw.adminUrl}/anything`, {
      headers: { authorization: 'Bearer another-admin-token-xyz' },
    });
    expectProblem(second, 'not-found');
  });

  it('refuses an API key with 403 forbidden', async () => {
    const viaHeader = await request(`${gw.adminUrl}/keys`, { headers: { 'x-api-key': 'tg_live_abc' } });
    expect(expectProblem(viaHeader, 'forbidden').detail).toBe('API keys cannot manage keys.');
    const viaBearer = await request(`${gw.adminUrl}/keys`, {
      headers: { authorization: 'Bearer tg_live_0123456789abcdef0123456789abcdef' },
    });
    expectProblem(viaBearer, 'forbidden');
  });

  it('reports not ready while draining', async () => {
    gw.gateway.startDrain();
    const ready = await request(`${gw.adminUrl}/readyz`);
    expect(ready.status).toBe(503);
    expect(ready.json()).toMatchObject({ status: 'not-ready', draining: true });
    const demo = await request(`${gw.url}/demo`);
    expect(demo.headers.connection).toBe('close');
  });
});
