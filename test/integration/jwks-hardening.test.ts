import { afterEach, describe, expect, it } from 'vitest';
import { decodeProtectedHeader } from 'jose';
import { startGateway, type RunningGateway } from '../helpers/gateway.js';
import { request, waitFor } from '../helpers/http.js';
import { startUpstream } from '../helpers/upstream.js';
import { expectProblem } from '../helpers/problem.js';
import { signingKey, startJwksServer, token } from '../helpers/jwks.js';
import { startOidcProvider } from '../helpers/oidc.js';
import { ManualClock } from '../../src/core/clock.js';

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

const COOLDOWN_SEC = 30;

/** A gateway on an injected clock with one JWT route; `issuer` is merged into the issuer config. */
async function jwtGateway(issuer: Record<string, unknown>, clock: ManualClock): Promise<RunningGateway> {
  const up = await startUpstream();
  cleanup.push(() => up.close());
  const gw = await startGateway(
    {
      auth: {
        jwt: [
          {
            issuer: 'https://idp.test/',
            audience: 'api://orders',
            jwksCooldownSec: COOLDOWN_SEC,
            ...issuer,
          },
        ],
      },
      routes: [
        { id: 'orders', path: '/v1/orders', auth: { methods: ['jwt'] }, upstream: { targets: [up.url] } },
      ],
    } as any,
    { clock },
  );
  cleanup.push(() => gw.close());
  return gw;
}

const call = (gw: RunningGateway, t: string) =>
  request(`${gw.url}/v1/orders`, { headers: { authorization: `Bearer ${t}` } });

describe('JWKS: the refetch cooldown holds before the first successful fetch (13.13)', () => {
  it('25 requests to a failing IdP cause one fetch per cooldown, each answered 503 with Retry-After', async () => {
    const k1 = await signingKey('k1');
    const jwks = await startJwksServer([k1]);
    cleanup.push(() => jwks.close());
    jwks.down = true;
    const clock = new ManualClock(Date.now());
    const gw = await jwtGateway({ jwksUri: jwks.url }, clock);
    await waitFor(() => jwks.fetches >= 1, 5000); // the fetch at start
    for (let i = 0; i < 25; i++) {
      const res = await call(gw, await token(k1, { sub: `user-${i}` }));
      expectProblem(res, 'service-unavailable');
      expect(res.headers['retry-after']).toBe(String(COOLDOWN_SEC));
    }
    expect(jwks.fetches).toBe(1);

    // Retry-After counts down with the cooldown.
    clock.advance(20_000);
    expect((await call(gw, await token(k1, { sub: 'later' }))).headers['retry-after']).toBe('10');
    expect(jwks.fetches).toBe(1);

    // Past the cooldown one request may try again (and still fails while the IdP is down) ...
    clock.advance(10_000);
    expectProblem(await call(gw, await token(k1, { sub: 'retry' })), 'service-unavailable');
    expect(jwks.fetches).toBe(2);
    // ... and once it is back, the first request after the next cooldown gets the keys.
    jwks.down = false;
    expectProblem(await call(gw, await token(k1, { sub: 'too-soon' })), 'service-unavailable');
    expect(jwks.fetches).toBe(2);
    clock.advance(COOLDOWN_SEC * 1000);
    expect((await call(gw, await token(k1, { sub: 'recovered' }))).status).toBe(200);
    expect(jwks.fetches).toBe(3);
  });

  it('concurrent requests while no key set is cached share one fetch', async () => {
    const k1 = await signingKey('k1');
    const jwks = await startJwksServer([k1]);
    cleanup.push(() => jwks.close());
    jwks.down = true;
    const clock = new ManualClock(Date.now());
    const gw = await jwtGateway({ jwksUri: jwks.url }, clock);
    await waitFor(() => jwks.fetches >= 1, 5000);
    clock.advance(COOLDOWN_SEC * 1000);
    jwks.delayMs = 200; // the IdP is slow: every request below arrives while the fetch is under way
    const replies = await Promise.all(
      Array.from({ length: 10 }, async (_, i) => call(gw, await token(k1, { sub: `c-${i}` }))),
    );
    for (const res of replies) expectProblem(res, 'service-unavailable');
    expect(jwks.fetches).toBe(2);
  });
});

describe('JWKS: an unknown kid while the IdP is down is 503, not 401 (14.3)', () => {
  it('against a real OIDC provider that rotates its keys and then stops', async () => {
    const idp = await startOidcProvider({ kid: 'k1' });
    cleanup.push(() => idp.close());
    const clock = new ManualClock(Date.now());
    const gw = await jwtGateway({ issuer: idp.issuer, jwksUri: idp.jwksUri }, clock);
    await waitFor(() => idp.jwksFetches >= 1, 5000);

    const t1 = await idp.accessToken();
    expect(decodeProtectedHeader(t1).kid).toBe('k1');
    expect((await call(gw, t1)).status).toBe(200);

    // Rotation 1, IdP up: the new kid is fetched (past the cooldown) and accepted.
    await idp.rotate('k2');
    const t2 = await idp.accessToken();
    expect(decodeProtectedHeader(t2).kid).toBe('k2');
    clock.advance(COOLDOWN_SEC * 1000);
    expect((await call(gw, t2)).status).toBe(200);
    expect(idp.jwksFetches).toBe(2);
    const t2Unused = await idp.accessToken(); // signed with k2, kept for the outage below

    // Rotation 2, then the IdP stops before the gateway has seen the new key.
    await idp.rotate('k3');
    const t3 = await idp.accessToken();
    expect(decodeProtectedHeader(t3).kid).toBe('k3');
    await idp.stop();
    clock.advance(COOLDOWN_SEC * 1000);

    // The refetch for the unknown kid fails: the gateway cannot check the token, it is not bad.
    let res = await call(gw, t3);
    const body = expectProblem(res, 'service-unavailable');
    expect(res.headers['retry-after']).toBe(String(COOLDOWN_SEC));
    expect(body.detail).not.toMatch(/No key/);
    expect(res.headers['www-authenticate']).toBeUndefined();

    // Within the cooldown after that failure, no fetch is made and the answer stays 503.
    clock.advance(5_000);
    res = await call(gw, t3);
    expectProblem(res, 'service-unavailable');
    expect(res.headers['retry-after']).toBe(String(COOLDOWN_SEC - 5));

    // A made-up kid cannot be told apart from a rotated one either: 503, and still no fetch.
    const forged = await signingKey('made-up');
    expectProblem(await call(gw, await token(forged, { iss: idp.issuer })), 'service-unavailable');

    // A token of a key the gateway holds (never seen before, so not from the token cache) passes.
    expect((await call(gw, t2Unused)).status).toBe(200);

    // The IdP comes back: after the cooldown the new key is fetched and the token accepted.
    await idp.start();
    clock.advance(COOLDOWN_SEC * 1000);
    expect((await call(gw, t3)).status).toBe(200);
  });

  it('a cooldown after a successful fetch keeps the verdict: an unknown kid is 401 without a fetch', async () => {
    const k1 = await signingKey('k1');
    const jwks = await startJwksServer([k1]);
    cleanup.push(() => jwks.close());
    const clock = new ManualClock(Date.now());
    const gw = await jwtGateway({ jwksUri: jwks.url }, clock);
    await waitFor(() => jwks.fetches >= 1, 5000);
    const forged = await signingKey('made-up');
    for (let i = 0; i < 5; i++) {
      const body = expectProblem(
        await call(gw, await token(forged, { sub: `f-${i}` })),
        'invalid-credentials',
      );
      expect(body.detail).toBe('No key of the issuer matches the token.');
    }
    expect(jwks.fetches).toBe(1);
    // Past the cooldown with the IdP answering: one refetch, and the verdict is still 401.
    clock.advance(COOLDOWN_SEC * 1000);
    expectProblem(await call(gw, await token(forged)), 'invalid-credentials');
    expect(jwks.fetches).toBe(2);
  });

  it('a failed background refresh makes an unknown kid 503 while known kids keep working', async () => {
    const k1 = await signingKey('k1');
    const jwks = await startJwksServer([k1]);
    cleanup.push(() => jwks.close());
    const clock = new ManualClock(Date.now());
    const gw = await jwtGateway({ jwksUri: jwks.url }, clock);
    // The first fetch has been answered and taken in (its time is the manual clock's, read when it
    // completes: completed after the advance below, it would look fresh and start no refresh).
    const issuer = async () => (await request(`${gw.adminUrl}/readyz`)).json().checks.jwks.issuers[0].status;
    await waitFor(async () => jwks.fetches >= 1 && (await issuer()).lastFetchOk === true, 5000);
    jwks.down = true;
    // Past the 10-minute refresh: a known kid answers from the cache and refreshes in the background.
    clock.advance(11 * 60_000);
    // (Tokens valid for an hour: the clock moves past the default 5 minutes.)
    expect((await call(gw, await token(k1, { sub: 'bg', expSec: 3600 }))).status).toBe(200);
    await waitFor(async () => (await issuer()).lastFetchOk === false, 5000);
    const k2 = await signingKey('k2');
    // The cooldown holds the refetch back, but the last fetch failed: no verdict on k2.
    const res = await call(gw, await token(k2, { expSec: 3600 }));
    expectProblem(res, 'service-unavailable');
    expect(res.headers['retry-after']).toBe(String(COOLDOWN_SEC));
    expect(jwks.fetches).toBe(2);
    expect((await call(gw, await token(k1, { sub: 'still', expSec: 3600 }))).status).toBe(200);
    // Past the cooldown the refetch is tried, fails, and the answer is 503 again.
    clock.advance(COOLDOWN_SEC * 1000);
    expectProblem(await call(gw, await token(k2, { expSec: 3600 })), 'service-unavailable');
    expect(jwks.fetches).toBe(3);
  });
});
