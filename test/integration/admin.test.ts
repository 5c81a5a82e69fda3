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

describe('signing secrets without TOLLGATE_SECRET_KEY', () => {
  const signedConfig = {
    admin: { host: '127.0.0.1', port: 0, tokens: [TOKEN] },
    routes: [
      {
        id: 'signed',
        path: '/signed',
        auth: { methods: ['apiKey'], hmac: 'optional' },
        upstream: { targets: ['http://127.0.0.1:9'] },
      },
    ],
  } as const;
  const create = (gw: RunningGateway, hmac: boolean) =>
    request(`${gw.adminUrl}/keys`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'k', hmac }),
    });

  it('start (a signed route is fine), but refuse to seal a secret with a throwaway key outside development', async () => {
    const gw = await startGateway(signedConfig as any, { env: { NODE_ENV: 'production' } });
    try {
      expect((await create(gw, false)).status).toBe(201);
      const refused = await create(gw, true);
      expect(expectProblem(refused, 'service-unavailable').detail).toContain('TOLLGATE_SECRET_KEY');
      expect(refused.headers['retry-after']).toBe('60');
    } finally {
      await gw.close();
    }
  });

  it('seal with a throwaway key in development, and with the configured key anywhere', async () => {
    for (const env of [
      { NODE_ENV: 'development' },
      { TOLLGATE_SECRET_KEY: 'a-sealing-key-of-32-characters-xx' },
    ]) {
      const gw = await startGateway(signedConfig as any, { env });
      try {
        expect((await create(gw, true)).json().signingSecret).toMatch(/^whsec_/);
      } finally {
        await gw.close();
      }
    }
  });
});
