import { SignJWT, type JWTPayload } from 'jose';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../core/clock.js';
import { fakeContext } from '../../core/fake-context.js';
import type { Plan } from '../../core/identity.js';
import type { Stage } from '../../core/stage.js';
import { generateKey } from '../../keys/format.js';
import { MemoryKeyStore } from '../../keys/memory-store.js';
import { SecretBox } from '../../keys/secret-box.js';
import { KeyService } from '../../keys/service.js';
import { Problem } from '../../problems/problem.js';
import { createAuthenticateStage } from './authenticate.js';
import { JwtVerifier } from './jwt.js';
import { jwtIssuerSchema, routeAuthSchema, type RouteAuthOptions } from './schema.js';

const ISSUER = 'https://idp.test';
const SECRET = 'hs256-test-secret-0123456789abcdef!';
const START = Date.UTC(2030, 0, 1);
const nowSec = (clock: ManualClock) => Math.floor(clock.now() / 1000);

const plans: Record<string, Plan> = {
  gold: { apiAccess: true, rateLimits: [] },
  free: { apiAccess: false, rateLimits: [] },
};

function setup(route: RouteAuthOptions = {}, withJwt = true) {
  const clock = new ManualClock(START);
  const keys = new KeyService({
    store: new MemoryKeyStore(),
    prefix: 'tg',
    box: new SecretBox(undefined),
    clock,
  });
  const jwt = withJwt
    ? new JwtVerifier([jwtIssuerSchema.parse({ issuer: ISSUER, secret: SECRET, tenantClaim: 'org' })], clock)
    : undefined;
  const parsed = routeAuthSchema.parse(route);
  if (parsed === 'none') throw new Error('a route with auth is needed');
  const stage = createAuthenticateStage(parsed, { keys, jwt, plans, apiKeyHeader: 'x-api-key', clock });
  return { clock, keys, stage };
}

function token(clock: ManualClock, claims: JWTPayload = { sub: 'alice' }, secret = SECRET): Promise<string> {
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'HS256' })
    .setIssuer(ISSUER)
    .setIssuedAt(nowSec(clock))
    .setExpirationTime(nowSec(clock) + 600)
    .sign(new TextEncoder().encode(secret));
}

/** Runs the stage; resolves with the Problem it refused with, or undefined when it passed. */
async function outcome(
  stage: Stage,
  ctx: ReturnType<typeof fakeContext>['ctx'],
): Promise<Problem | undefined> {
  try {
    await stage.run(ctx);
    return undefined;
  } catch (err) {
    if (err instanceof Problem) return err;
    throw err;
  }
}

describe('authenticate stage (in-process)', () => {
  describe('API keys', () => {
    it('sets ctx.identity and ctx.keyRecord from a valid key in the API key header', async () => {
      const { stage, keys, clock } = setup();
      const { key, record } = await keys.create({
        name: 'laptop',
        ownerId: 'user-7',
        tenantId: 'acme',
        scopes: ['orders:read'],
        plan: 'gold',
        remaining: 10,
      });
      const t = fakeContext({ headers: { 'x-api-key': key }, clock });
      expect(await outcome(stage, t.ctx)).toBeUndefined();
      expect(t.ctx.identity).toEqual({
        method: 'api-key',
        credentialId: record.id,
        subject: 'user-7',
        issuer: undefined,
        tenant: 'acme',
        scopes: ['orders:read'],
        plan: 'gold',
        rateLimits: undefined,
        remaining: 10,
        usesId: record.id,
      });
      expect(t.ctx.keyRecord?.id).toBe(record.id);
      expect((await keys.get(record.id))?.lastUsedAt).toBe(new Date(START).toISOString());
    });

    it('accepts a key as Authorization: Bearer, and the same key in both places', async () => {
      const { stage, keys } = setup();
      const { key, record } = await keys.create({ name: 'ci' });
      const bearer = fakeContext({ headers: { authorization: `Bearer ${key}` } });
      expect(await outcome(stage, bearer.ctx)).toBeUndefined();
      expect(bearer.ctx.identity?.credentialId).toBe(record.id);
      // No owner: the key is its own subject.
      expect(bearer.ctx.identity?.subject).toBe(record.id);
      const both = fakeContext({ headers: { authorization: `Bearer ${key}`, 'x-api-key': key } });
      expect(await outcome(stage, both.ctx)).toBeUndefined();
    });

    it('refuses a request without credentials with missing-credentials and a Bearer challenge', async () => {
      const { stage } = setup();
      const t = fakeContext();
      const p = await outcome(stage, t.ctx);
      expect(p?.slug).toBe('missing-credentials');
      expect(p?.status).toBe(401);
      expect(p?.headers).toEqual({ 'www-authenticate': 'Bearer realm="tollgate"' });
      expect(t.ctx.identity).toBeUndefined();
    });

    it('treats an empty API key header as no credential', async () => {
      const { stage } = setup();
      const p = await outcome(stage, fakeContext({ headers: { 'x-api-key': '  ' } }).ctx);
      expect(p?.slug).toBe('missing-credentials');
    });

    it('answers unknown, malformed and disabled keys alike (invalid-credentials, invalid_token)', async () => {
      const { stage, keys } = setup();
      const { key: disabled } = await keys.create({ name: 'off', enabled: false });
      const problems = [];
      for (const key of [generateKey('tg'), 'tg_live_not-a-real-key', disabled])
        problems.push(await outcome(stage, fakeContext({ headers: { 'x-api-key': key } }).ctx));
      for (const p of problems) {
        expect(p?.slug).toBe('invalid-credentials');
        expect(p?.status).toBe(401);
        expect(p?.detail).toBe('The API key is not valid.');
        expect(p?.headers?.['www-authenticate']).toBe(
          'Bearer realm="tollgate", error="invalid_token", error_description="The API key is not valid."',
        );
      }
    });

    it('refuses a revoked key', async () => {
      const { stage, keys } = setup();
      const { key, record } = await keys.create({ name: 'gone' });
      await keys.revoke(record.id);
      const p = await outcome(stage, fakeContext({ headers: { 'x-api-key': key } }).ctx);
      expect(p?.slug).toBe('invalid-credentials');
    });

    it('expires a key at its expiresAt on the injected clock', async () => {
      const { stage, keys, clock } = setup();
      const { key } = await keys.create({ name: 'short', expiresAt: new Date(START + 60_000).toISOString() });
      expect(await outcome(stage, fakeContext({ headers: { 'x-api-key': key }, clock }).ctx)).toBeUndefined();
      clock.advance(59_999);
      expect(await outcome(stage, fakeContext({ headers: { 'x-api-key': key }, clock }).ctx)).toBeUndefined();
      clock.advance(1);
      const p = await outcome(stage, fakeContext({ headers: { 'x-api-key': key }, clock }).ctx);
      expect(p?.slug).toBe('expired-credentials');
      expect(p?.status).toBe(401);
      expect(p?.headers?.['www-authenticate']).toContain('error="invalid_token"');
    });

    it('refuses a key whose plan has no API access, or is unknown (no prototype lookups)', async () => {
      const { stage, keys } = setup();
      for (const plan of ['free', 'platinum', 'constructor']) {
        const { key } = await keys.create({ name: plan, plan });
        const p = await outcome(stage, fakeContext({ headers: { 'x-api-key': key } }).ctx);
        expect(p?.slug, plan).toBe('forbidden');
        expect(p?.status).toBe(403);
      }
    });

    it('refuses a repeated API key header (Node would join it and hide the second)', async () => {
      const { stage, keys } = setup();
      const { key } = await keys.create({ name: 'k' });
      const p = await outcome(stage, fakeContext({ headers: { 'x-api-key': [key, key] } }).ctx);
      expect(p?.slug).toBe('invalid-credentials');
      expect(p?.headers?.['www-authenticate']).toContain('error="invalid_request"');
    });

    it('refuses an Authorization header that is not Bearer, even beside a valid key', async () => {
      const { stage, keys } = setup();
      const { key } = await keys.create({ name: 'k' });
      const p = await outcome(
        stage,
        fakeContext({ headers: { 'x-api-key': key, authorization: 'Basic dXNlcjpwYXNz' } }).ctx,
      );
      expect(p?.slug).toBe('invalid-credentials');
      expect(p?.detail).toBe('The Authorization header must be "Bearer <token>".');
    });
  });

  describe('tenant plans (SPEC §10)', () => {
    it("a key without a plan of its own is on its tenant's; its own plan wins; no tenant plan: none", async () => {
      const { stage, keys, clock } = setup();
      const follower = await keys.create({ name: 'f', tenantId: 'acme' });
      const own = await keys.create({ name: 'o', tenantId: 'acme', plan: 'gold' });
      const run = async (key: string) => {
        const t = fakeContext({ headers: { 'x-api-key': key }, clock });
        return { problem: await outcome(stage, t.ctx), plan: t.ctx.identity?.plan };
      };
      expect(await run(follower.key)).toEqual({ problem: undefined, plan: undefined });
      await keys.setTenantPlan('acme', 'gold');
      expect(await run(follower.key)).toEqual({ problem: undefined, plan: 'gold' });
      // A tenant plan without API access refuses the tenant's followers, not its keys with a plan.
      await keys.setTenantPlan('acme', 'free');
      expect((await run(follower.key)).problem?.slug).toBe('forbidden');
      expect(await run(own.key)).toEqual({ problem: undefined, plan: 'gold' });
      // A stored plan name the config no longer has (or an Object.prototype name) is no plan: refused.
      for (const name of ['gone', 'constructor']) {
        await keys.setTenantPlan('acme', name);
        expect((await run(follower.key)).problem?.slug).toBe('forbidden');
      }
      await keys.setTenantPlan('acme', null);
      expect(await run(follower.key)).toEqual({ problem: undefined, plan: undefined });
    });
  });

  describe('scopes', () => {
    it('passes when the key has every required scope', async () => {
      const { stage, keys } = setup({ scopes: ['orders:read'] });
      const { key } = await keys.create({ name: 'k', scopes: ['orders:read', 'orders:write'] });
      expect(await outcome(stage, fakeContext({ headers: { 'x-api-key': key } }).ctx)).toBeUndefined();
    });

    it('refuses with insufficient-scope naming the missing scopes in required_scope', async () => {
      const { stage, keys } = setup({ scopes: ['orders:read', 'orders:write', 'admin'] });
      const { key } = await keys.create({ name: 'k', scopes: ['orders:read'] });
      const t = fakeContext({ headers: { 'x-api-key': key } });
      const p = await outcome(stage, t.ctx);
      expect(p?.slug).toBe('insufficient-scope');
      expect(p?.status).toBe(403);
      expect(p?.extensions).toEqual({ required_scope: 'orders:write admin' });
      expect(p?.detail).toBe('This route needs the scopes orders:write admin.');
      expect(p?.headers?.['www-authenticate']).toBe(
        'Bearer realm="tollgate", error="insufficient_scope", scope="orders:read orders:write admin"',
      );
      // Who was refused is known (for the audit record).
      expect(t.ctx.identity?.method).toBe('api-key');
    });

    it('checks a JWT scope claim the same way', async () => {
      const { stage, clock } = setup({ scopes: ['orders:write'] });
      const ok = await token(clock, { sub: 'alice', scope: 'orders:read orders:write' });
      expect(
        await outcome(stage, fakeContext({ headers: { authorization: `Bearer ${ok}` }, clock }).ctx),
      ).toBe(undefined);
      const short = await token(clock, { sub: 'bob', scp: ['orders:read'] });
      const p = await outcome(
        stage,
        fakeContext({ headers: { authorization: `Bearer ${short}` }, clock }).ctx,
      );
      expect(p?.slug).toBe('insufficient-scope');
      expect(p?.extensions).toEqual({ required_scope: 'orders:write' });
    });
  });

  describe('JWTs (HS256)', () => {
    it('sets the identity from a valid token: subject, issuer, tenant claim, scopes', async () => {
      const { stage, clock } = setup();
      const jwt = await token(clock, { sub: 'alice', org: 'acme', scope: 'a b' });
      const t = fakeContext({ headers: { authorization: `Bearer ${jwt}` }, clock });
      expect(await outcome(stage, t.ctx)).toBeUndefined();
      const id = t.ctx.identity!;
      expect(id.method).toBe('jwt');
      expect(id.subject).toBe('alice');
      expect(id.issuer).toBe(ISSUER);
      expect(id.tenant).toBe('acme');
      expect(id.scopes).toEqual(['a', 'b']);
      expect(id.credentialId).toMatch(/^jwt_[0-9a-f]{20}$/);
      expect(t.ctx.keyRecord).toBeUndefined();
    });

    it("puts the token's verified claims on ctx.identity.claims (custom policies read them, SPEC §12)", async () => {
      const { stage, clock } = setup();
      const jwt = await token(clock, { sub: 'alice', org: 'acme', plan: 'pro' });
      const t = fakeContext({ headers: { authorization: `Bearer ${jwt}` }, clock });
      expect(await outcome(stage, t.ctx)).toBeUndefined();
      expect(t.ctx.identity?.claims).toMatchObject({ sub: 'alice', org: 'acme', plan: 'pro', iss: ISSUER });
    });

    it('gives one subject of one issuer one credential id', async () => {
      const { stage, clock } = setup();
      const a = fakeContext({ headers: { authorization: `Bearer ${await token(clock)}` }, clock });
      clock.advance(1000);
      const b = fakeContext({ headers: { authorization: `Bearer ${await token(clock)}` }, clock });
      await outcome(stage, a.ctx);
      await outcome(stage, b.ctx);
      expect(a.ctx.identity?.credentialId).toBe(b.ctx.identity?.credentialId);
    });

    it('refuses a token without sub with invalid-credentials', async () => {
      const { stage, clock } = setup();
      const jwt = await token(clock, { org: 'acme' });
      const p = await outcome(stage, fakeContext({ headers: { authorization: `Bearer ${jwt}` }, clock }).ctx);
      expect(p?.slug).toBe('invalid-credentials');
      expect(p?.detail).toBe('The token names no subject (sub).');
      expect(p?.headers?.['www-authenticate']).toContain('error="invalid_token"');
    });

    it('refuses a token signed with another secret, or from an untrusted issuer', async () => {
      const { stage, clock } = setup();
      const forged = await token(clock, { sub: 'alice' }, 'another-secret-that-is-32-chars-long!!');
      const p = await outcome(
        stage,
        fakeContext({ headers: { authorization: `Bearer ${forged}` }, clock }).ctx,
      );
      expect(p?.slug).toBe('invalid-credentials');
      const foreign = await new SignJWT({ sub: 'alice' })
        .setProtectedHeader({ alg: 'HS256' })
        .setIssuer('https://elsewhere.test')
        .setExpirationTime(nowSec(clock) + 60)
        .sign(new TextEncoder().encode(SECRET));
      const q = await outcome(
        stage,
        fakeContext({ headers: { authorization: `Bearer ${foreign}` }, clock }).ctx,
      );
      expect(q?.slug).toBe('invalid-credentials');
      expect(q?.detail).toBe('The token issuer is not trusted.');
      const garbage = await outcome(stage, fakeContext({ headers: { authorization: 'Bearer abc.def' } }).ctx);
      expect(garbage?.slug).toBe('invalid-credentials');
    });

    it('refuses a token without exp', async () => {
      const { stage, clock } = setup();
      const jwt = await new SignJWT({ sub: 'alice' })
        .setProtectedHeader({ alg: 'HS256' })
        .setIssuer(ISSUER)
        .sign(new TextEncoder().encode(SECRET));
      const p = await outcome(stage, fakeContext({ headers: { authorization: `Bearer ${jwt}` }, clock }).ctx);
      expect(p?.slug).toBe('invalid-credentials');
      expect(p?.detail).toBe('The token has no expiry (exp).');
    });

    it('expires a token on the injected clock, past the 30 s tolerance, even once cached', async () => {
      const { stage, clock } = setup();
      const jwt = await token(clock); // exp = now + 600 s
      const headers = { authorization: `Bearer ${jwt}` };
      expect(await outcome(stage, fakeContext({ headers, clock }).ctx)).toBeUndefined();
      // The second time the token comes from the cache: no promise.
      const cached = fakeContext({ headers, clock });
      expect(stage.run(cached.ctx)).toBeUndefined();
      expect(cached.ctx.identity?.subject).toBe('alice');
      clock.advance(629_000);
      expect(await outcome(stage, fakeContext({ headers, clock }).ctx)).toBeUndefined();
      clock.advance(1_000);
      const p = await outcome(stage, fakeContext({ headers, clock }).ctx);
      expect(p?.slug).toBe('expired-credentials');
    });

    it('refuses a token that is not valid yet (nbf)', async () => {
      const { stage, clock } = setup();
      const jwt = await new SignJWT({ sub: 'alice' })
        .setProtectedHeader({ alg: 'HS256' })
        .setIssuer(ISSUER)
        .setNotBefore(nowSec(clock) + 120)
        .setExpirationTime(nowSec(clock) + 600)
        .sign(new TextEncoder().encode(SECRET));
      const p = await outcome(stage, fakeContext({ headers: { authorization: `Bearer ${jwt}` }, clock }).ctx);
      expect(p?.slug).toBe('invalid-credentials');
      expect(p?.detail).toBe('The token is not valid yet.');
    });
  });

  describe('two credentials and route methods', () => {
    it('refuses an API key header beside a Bearer JWT (two different credentials)', async () => {
      const { stage, keys, clock } = setup();
      const { key } = await keys.create({ name: 'k' });
      const jwt = await token(clock);
      const p = await outcome(
        stage,
        fakeContext({ headers: { 'x-api-key': key, authorization: `Bearer ${jwt}` }, clock }).ctx,
      );
      expect(p?.slug).toBe('invalid-credentials');
      expect(p?.detail).toBe('The request carries two different credentials.');
      expect(p?.headers?.['www-authenticate']).toContain('error="invalid_request"');
    });

    it('refuses two different API keys (header and Bearer)', async () => {
      const { stage, keys } = setup();
      const { key: a } = await keys.create({ name: 'a' });
      const { key: b } = await keys.create({ name: 'b' });
      const t = fakeContext({ headers: { 'x-api-key': a, authorization: `Bearer ${b}` } });
      const p = await outcome(stage, t.ctx);
      expect(p?.slug).toBe('invalid-credentials');
      expect(p?.detail).toBe('The request carries two different credentials.');
      expect(t.ctx.identity).toBeUndefined();
    });

    // SPEC §9: a credential of a kind the route does not accept is 403 forbidden, naming the kinds.
    it('refuses an API key on a jwt-only route with 403 forbidden (SPEC §9)', async () => {
      const { stage, keys } = setup({ methods: ['jwt'] });
      const { key } = await keys.create({ name: 'k' });
      const variants: Array<Record<string, string>> = [
        { 'x-api-key': key },
        { authorization: `Bearer ${key}` },
      ];
      for (const headers of variants) {
        const t = fakeContext({ headers });
        const p = await outcome(stage, t.ctx);
        expect(p?.slug).toBe('forbidden');
        expect(p?.status).toBe(403);
        expect(p?.detail).toBe('This route accepts Bearer JWTs only: it cannot be used with an API key.');
        expect(t.ctx.identity).toBeUndefined();
      }
    });

    it('refuses a JWT on an apiKey-only route with 403 forbidden (SPEC §9)', async () => {
      const { stage, clock } = setup({ methods: ['apiKey'] });
      const jwt = await token(clock);
      const p = await outcome(stage, fakeContext({ headers: { authorization: `Bearer ${jwt}` }, clock }).ctx);
      expect(p?.slug).toBe('forbidden');
      expect(p?.status).toBe(403);
      expect(p?.detail).toBe('This route accepts API keys only: it cannot be used with a Bearer token.');
    });

    it('refuses a Bearer JWT when no issuer is configured', async () => {
      const { stage, clock } = setup({}, false);
      const jwt = await token(clock);
      const p = await outcome(stage, fakeContext({ headers: { authorization: `Bearer ${jwt}` }, clock }).ctx);
      expect(p?.slug).toBe('invalid-credentials');
      expect(p?.detail).toBe('The token issuer is not trusted.');
    });
  });

  describe('auth.claims (SPEC §9)', () => {
    const rules = { role: ['admin', 'editor'], org: ['acme'] };

    it('passes a JWT whose claims (string or array of strings) hold an allowed value', async () => {
      const { stage, clock } = setup({ methods: ['jwt'], claims: rules });
      for (const claims of [
        { sub: 'a', role: 'admin', org: 'acme' },
        { sub: 'a', role: ['viewer', 'editor'], org: ['other', 'acme'] },
      ]) {
        const t = fakeContext({ headers: { authorization: `Bearer ${await token(clock, claims)}` }, clock });
        expect(await outcome(stage, t.ctx)).toBeUndefined();
      }
    });

    it.each([
      [{ sub: 'a', org: 'acme' }, 'role'],
      [{ sub: 'a', role: 'viewer', org: 'acme' }, 'role'],
      [{ sub: 'a', role: ['viewer'], org: 'acme' }, 'role'],
      [{ sub: 'a', role: 7, org: 'acme' }, 'role'],
      [{ sub: 'a', role: { admin: true }, org: 'acme' }, 'role'],
      [{ sub: 'a', role: 'ADMIN', org: 'acme' }, 'role'],
      [{ sub: 'a', role: 'admin' }, 'org'],
    ])('refuses %j with 403 forbidden and required_claim %s', async (claims, claim) => {
      const { stage, clock } = setup({ methods: ['jwt'], claims: rules });
      const t = fakeContext({ headers: { authorization: `Bearer ${await token(clock, claims)}` }, clock });
      const p = await outcome(stage, t.ctx);
      expect(p?.slug).toBe('forbidden');
      expect(p?.status).toBe(403);
      expect(p?.extensions).toEqual({ required_claim: claim });
      expect(p?.detail).toContain(`"${claim}"`);
    });

    it('an API key carries no claims: 403 forbidden with required_claim', async () => {
      const { stage, keys } = setup({ claims: { role: ['admin'] } });
      const { key } = await keys.create({ name: 'k', scopes: ['role:admin'] });
      const p = await outcome(stage, fakeContext({ headers: { 'x-api-key': key } }).ctx);
      expect(p?.slug).toBe('forbidden');
      expect(p?.extensions).toEqual({ required_claim: 'role' });
      expect(p?.detail).toContain('cannot be used with an API key');
    });

    it('a claim named like an Object.prototype member is looked up as an own claim only', async () => {
      const { stage, clock } = setup({ methods: ['jwt'], claims: { constructor: ['x'] } });
      const t = fakeContext({ headers: { authorization: `Bearer ${await token(clock)}` }, clock });
      expect((await outcome(stage, t.ctx))?.extensions).toEqual({ required_claim: 'constructor' });
    });

    it('the schema refuses an empty value list and an empty claim name', () => {
      expect(routeAuthSchema.safeParse({ claims: { role: [] } }).success).toBe(false);
      expect(routeAuthSchema.safeParse({ claims: { '': ['x'] } }).success).toBe(false);
      expect(routeAuthSchema.safeParse({ claims: { role: 'admin' } }).success).toBe(false);
    });

    it('claimHeaders names are validated: a token, and never a gateway header', () => {
      const base = { issuer: ISSUER, secret: SECRET };
      expect(jwtIssuerSchema.safeParse({ ...base, claimHeaders: { 'X-User-Role': 'role' } }).success).toBe(
        true,
      );
      for (const name of ['X Role', 'X-Consumer-Id', 'x_tenant_id', 'X-Request-Id', 'Host', 'Via'])
        expect(jwtIssuerSchema.safeParse({ ...base, claimHeaders: { [name]: 'role' } }).success, name).toBe(
          false,
        );
      expect(jwtIssuerSchema.safeParse({ ...base, claimHeaders: { 'X-Role': '' } }).success).toBe(false);
    });
  });
});
