import { afterEach, describe, expect, it } from 'vitest';
import { SignJWT, type JWTPayload } from 'jose';
import { startGateway } from '../helpers/gateway.js';
import { request } from '../helpers/http.js';
import { startUpstream } from '../helpers/upstream.js';
import { expectProblem } from '../helpers/problem.js';

const ISSUER = 'https://idp.claims.test';
const SECRET = 'claims-test-secret-0123456789abcdef!!';
const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

function jwt(claims: JWTPayload): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'HS256' })
    .setIssuer(ISSUER)
    .setSubject('alice')
    .setIssuedAt(now)
    .setExpirationTime(now + 300)
    .sign(new TextEncoder().encode(SECRET));
}

async function setup() {
  const up = await startUpstream();
  cleanup.push(() => up.close());
  const config = {
    auth: {
      jwt: [
        { issuer: ISSUER, secret: SECRET, claimHeaders: { 'X-User-Role': 'role', 'X-Groups': 'groups' } },
      ],
    },
    routes: [
      {
        id: 'admin',
        path: '/v1/admin',
        auth: { methods: ['jwt', 'apiKey'], claims: { role: ['admin', 'owner'] } },
        upstream: { targets: [up.url] },
      },
      { id: 'session', path: '/v1/session', auth: { methods: ['jwt'] }, upstream: { targets: [up.url] } },
      { id: 'public', path: '/public', auth: 'none', upstream: { targets: [up.url] } },
    ],
  };
  const gw = await startGateway(config as any);
  cleanup.push(() => gw.close());
  return { gw, up, config };
}

const bearer = async (claims: JWTPayload) => ({ authorization: `Bearer ${await jwt(claims)}` });

describe('auth.claims and claimHeaders through real sockets (SPEC §9)', () => {
  it('a JWT with an allowed claim passes and its claims go upstream; forged copies never do', async () => {
    const { gw, up } = await setup();
    const res = await request(`${gw.url}/v1/admin`, {
      headers: {
        ...(await bearer({ role: ['viewer', 'admin'], groups: ['ops', 'dev'] })),
        'x-user-role': 'root',
        x_user_role: 'root',
      },
    });
    expect(res.status).toBe(200);
    const seen = up.calls[0]!.headers;
    expect(seen['x-user-role']).toBe('viewer admin');
    expect(seen['x-groups']).toBe('ops dev');
    expect(seen.x_user_role).toBeUndefined();
    // On a public route too: the header is the gateway's.
    await request(`${gw.url}/public`, { headers: { 'x-user-role': 'root', X_Groups: 'wheel' } });
    expect(up.calls[1]!.headers['x-user-role']).toBeUndefined();
    expect(up.calls[1]!.headers.x_groups).toBeUndefined();
  });

  it('a JWT without an allowed value is 403 forbidden with required_claim; the upstream is not called', async () => {
    const { gw, up } = await setup();
    for (const claims of [{ role: 'viewer' }, {}, { role: ['viewer'] }, { role: 1 }]) {
      const res = await request(`${gw.url}/v1/admin`, { headers: await bearer(claims) });
      const body = expectProblem(res, 'forbidden');
      expect(body.required_claim).toBe('role');
    }
    expect(up.calls.length).toBe(0);
  });

  it('an API key on a route with claims is 403 forbidden with required_claim (it carries no claims)', async () => {
    const { gw, up } = await setup();
    const { key } = await gw.gateway.services.keys.create({ name: 'k' });
    const body = expectProblem(
      await request(`${gw.url}/v1/admin`, { headers: { 'x-api-key': key } }),
      'forbidden',
    );
    expect(body.required_claim).toBe('role');
    expect(up.calls.length).toBe(0);
  });

  it('a credential of a kind the route does not accept is 403 forbidden naming the accepted kinds', async () => {
    const { gw } = await setup();
    const { key } = await gw.gateway.services.keys.create({ name: 'k' });
    const body = expectProblem(
      await request(`${gw.url}/v1/session`, { headers: { 'x-api-key': key } }),
      'forbidden',
    );
    expect(body.detail).toBe('This route accepts Bearer JWTs only: it cannot be used with an API key.');
  });

  it('bad claims and claimHeaders are refused with their paths; reload with one keeps the old config', async () => {
    const { gw, config } = await setup();
    const cases: Array<[(c: any) => void, string]> = [
      [(c) => (c.routes[0].auth.claims = { role: [] }), 'routes[0].auth.claims.role'],
      [(c) => (c.routes[0].auth.claims = { role: 'admin' }), 'routes[0].auth.claims.role'],
      [(c) => (c.auth.jwt[0].claimHeaders = { 'X Role': 'role' }), 'auth.jwt[0].claimHeaders["X Role"]'],
      [
        (c) => (c.auth.jwt[0].claimHeaders = { 'X-Consumer-Id': 'sub' }),
        'auth.jwt[0].claimHeaders.X-Consumer-Id',
      ],
      [
        (c) => (c.routes[2].headers = { request: { set: { 'X-User-Role': 'admin' } } }),
        'routes[2].headers.request.set.X-User-Role',
      ],
      [
        (c) => (c.routes[2].headers = { request: { remove: ['x_groups'] } }),
        'routes[2].headers.request.remove[0]',
      ],
    ];
    for (const [mutate, path] of cases) {
      const bad = structuredClone(config);
      mutate(bad);
      const result = gw.gateway.reload(bad);
      expect(result.ok, path).toBe(false);
      if (!result.ok) expect(result.issues.map((i) => i.path)).toEqual([path]);
    }
    const ok = await request(`${gw.url}/v1/admin`, { headers: await bearer({ role: 'owner' }) });
    expect(ok.status).toBe(200);
  });

  it('validate warns that API keys are refused on a route with claims that lists apiKey', async () => {
    const { gw } = await setup();
    const result = gw.gateway.reload(gw.gateway.config);
    expect(result.ok).toBe(true);
    expect(result.warnings.map((w) => w.path)).toContain('routes[0].auth.claims');
  });
});
