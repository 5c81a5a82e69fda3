import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../core/clock.js';
import { fakeContext } from '../../core/fake-context.js';
import type { Identity, Plan, RateLimitRule } from '../../core/identity.js';
import { Problem } from '../../problems/problem.js';
import { MemoryCounters, type CounterStore } from './counters.js';
import { createRateLimitStage, rateCounter } from './rate-limit.js';
import { rateLimitListSchema } from './schema.js';

// A minute boundary: windows of 10 s and 60 s start here.
const START = Date.UTC(2030, 0, 1);
const ROUTE = 'orders';

function setup(rules: Array<Partial<RateLimitRule> & { name: string }>, plans: Record<string, Plan> = {}) {
  const clock = new ManualClock(START);
  const counters: CounterStore = new MemoryCounters();
  const rateLimits = rateLimitListSchema.parse(
    rules.map((r) => ({ by: 'ip', limit: 1, windowSec: 60, ...r })),
  );
  const stage = createRateLimitStage({
    routeId: ROUTE,
    rateLimits,
    quotaCost: undefined,
    plans,
    counters,
    clock,
    local: false,
  });
  /** One request through the stage: the context and the Problem it was refused with, if any. */
  const request = async (o: { ip?: string; identity?: Identity; headers?: Record<string, string> } = {}) => {
    const t = fakeContext({
      clock,
      remoteAddress: o.ip ?? '203.0.113.1',
      ...(o.identity ? { identity: o.identity } : {}),
      ...(o.headers ? { headers: o.headers } : {}),
    });
    let problem: Problem | undefined;
    try {
      await stage.run(t.ctx);
    } catch (err) {
      if (!(err instanceof Problem)) throw err;
      problem = err;
    }
    return { t, problem };
  };
  const used = async (rl: RateLimitRule, subject: string, scope = `route:${ROUTE}`) =>
    (await counters.peek([rateCounter(scope, rl, subject, clock.now()).spec]))[0];
  return { clock, counters, stage, request, used, rateLimits };
}

function keyIdentity(credentialId: string, extra: Partial<Identity> = {}): Identity {
  return {
    method: 'api-key',
    credentialId,
    subject: `owner-of-${credentialId}`,
    tenant: undefined,
    scopes: [],
    plan: undefined,
    rateLimits: undefined,
    remaining: undefined,
    ...extra,
  };
}

describe('rate-limit stage (in-process)', () => {
  it('sets RateLimit-Policy and RateLimit on a request within the limit', async () => {
    const s = setup([{ name: 'burst', limit: 3, windowSec: 10 }]);
    s.clock.advance(4_000);
    const { t, problem } = await s.request();
    expect(problem).toBeUndefined();
    expect(t.res.getHeader('ratelimit-policy')).toBe('"burst";q=3;w=10');
    expect(t.res.getHeader('ratelimit')).toBe('"burst";r=2;t=6');
    // Gateway-owned: an upstream's copies are dropped.
    expect(t.ctx.responseHeaderNames).toEqual(['ratelimit-policy', 'ratelimit']);
  });

  it('counts down r= request by request', async () => {
    const s = setup([{ name: 'burst', limit: 3, windowSec: 10 }]);
    const seen = [];
    for (let i = 0; i < 3; i++) seen.push((await s.request()).t.res.getHeader('ratelimit'));
    expect(seen).toEqual(['"burst";r=2;t=10', '"burst";r=1;t=10', '"burst";r=0;t=10']);
  });

  it('answers 429 with Retry-After and policy once the limit is used up', async () => {
    const s = setup([{ name: 'burst', limit: 2, windowSec: 10 }]);
    await s.request();
    await s.request();
    s.clock.advance(3_500);
    const { t, problem } = await s.request();
    expect(problem?.slug).toBe('rate-limit-exceeded');
    expect(problem?.status).toBe(429);
    expect(problem?.extensions).toEqual({ policy: 'burst' });
    expect(problem?.headers).toEqual({ 'retry-after': '7' });
    expect(problem?.detail).toBe('The rate limit "burst" (2 per 10 s) is exhausted; retry in 7 s.');
    expect(t.ctx.rateLimitPolicy).toBe('burst');
    // The 429 carries the headers too.
    expect(t.res.getHeader('ratelimit-policy')).toBe('"burst";q=2;w=10');
    expect(t.res.getHeader('ratelimit')).toBe('"burst";r=0;t=7');
  });

  it('starts a new window once the clock passes the reset', async () => {
    const s = setup([{ name: 'burst', limit: 1, windowSec: 10 }]);
    expect((await s.request()).problem).toBeUndefined();
    expect((await s.request()).problem?.slug).toBe('rate-limit-exceeded');
    s.clock.advance(9_999);
    expect((await s.request()).problem?.slug).toBe('rate-limit-exceeded');
    s.clock.advance(1);
    const { t, problem } = await s.request();
    expect(problem).toBeUndefined();
    expect(t.res.getHeader('ratelimit')).toBe('"burst";r=0;t=10');
  });

  it('charges a cost per request', async () => {
    const s = setup([{ name: 'heavy', limit: 5, windowSec: 60, cost: 2 }]);
    expect((await s.request()).problem).toBeUndefined();
    expect((await s.request()).problem).toBeUndefined();
    expect((await s.request()).problem?.slug).toBe('rate-limit-exceeded');
    expect(await s.used(s.rateLimits[0]!, '203.0.113.1')).toBe(4);
  });

  it('is all-or-nothing: a request refused by one limit consumes no other budget', async () => {
    const s = setup([
      { name: 'per-ip', by: 'ip', limit: 1, windowSec: 60 },
      { name: 'everyone', by: 'global', limit: 2, windowSec: 60 },
    ]);
    const [perIp, everyone] = s.rateLimits;
    expect((await s.request({ ip: '198.51.100.1' })).problem).toBeUndefined();
    const refused = await s.request({ ip: '198.51.100.1' });
    expect(refused.problem?.extensions).toEqual({ policy: 'per-ip' });
    expect(await s.used(everyone!, 'global')).toBe(1);
    expect(await s.used(perIp!, '198.51.100.1')).toBe(1);
    // The refusal left room: another client still gets the global budget's second unit.
    expect((await s.request({ ip: '198.51.100.2' })).problem).toBeUndefined();
    const full = await s.request({ ip: '198.51.100.3' });
    expect(full.problem?.extensions).toEqual({ policy: 'everyone' });
    expect(await s.used(perIp!, '198.51.100.3')).toBe(0);
  });

  it('names the limit that blocks longest when several are exhausted', async () => {
    const s = setup([
      { name: 'second', limit: 1, windowSec: 10 },
      { name: 'minute', limit: 1, windowSec: 60 },
    ]);
    await s.request();
    s.clock.advance(2_000);
    const { t, problem } = await s.request();
    expect(problem?.extensions).toEqual({ policy: 'minute' });
    expect(problem?.headers).toEqual({ 'retry-after': '58' });
    expect(t.res.getHeader('ratelimit-policy')).toBe('"second";q=1;w=10, "minute";q=1;w=60');
    expect(t.res.getHeader('ratelimit')).toBe('"minute";r=0;t=58');
  });

  it('reports in RateLimit the policy nearest exhaustion', async () => {
    const s = setup([
      { name: 'wide', limit: 100, windowSec: 60 },
      { name: 'narrow', limit: 3, windowSec: 10 },
    ]);
    const { t } = await s.request();
    expect(t.res.getHeader('ratelimit')).toBe('"narrow";r=2;t=10');
  });

  it('counts by: ip per client address, ignoring an untrusted X-Forwarded-For', async () => {
    const s = setup([{ name: 'per-ip', by: 'ip', limit: 1, windowSec: 60 }]);
    expect((await s.request({ ip: '192.0.2.1' })).problem).toBeUndefined();
    expect((await s.request({ ip: '192.0.2.2' })).problem).toBeUndefined();
    const spoofed = await s.request({ ip: '192.0.2.1', headers: { 'x-forwarded-for': '10.9.9.9' } });
    expect(spoofed.problem?.slug).toBe('rate-limit-exceeded');
  });

  it('counts by: key per credential, whatever the address, and anonymous requests by IP', async () => {
    const s = setup([{ name: 'per-key', by: 'key', limit: 1, windowSec: 60 }]);
    const a = keyIdentity('key_a');
    expect((await s.request({ ip: '192.0.2.1', identity: a })).problem).toBeUndefined();
    expect((await s.request({ ip: '192.0.2.2', identity: a })).problem?.slug).toBe('rate-limit-exceeded');
    expect((await s.request({ ip: '192.0.2.1', identity: keyIdentity('key_b') })).problem).toBeUndefined();
    // No identity: counted by the client address.
    expect((await s.request({ ip: '192.0.2.1' })).problem).toBeUndefined();
    expect((await s.request({ ip: '192.0.2.1' })).problem?.slug).toBe('rate-limit-exceeded');
    expect(await s.used(s.rateLimits[0]!, 'key_a')).toBe(1);
  });

  it('counts by: tenant, subject, route and global', async () => {
    const s = setup([
      { name: 'tenant', by: 'tenant', limit: 10, windowSec: 60 },
      { name: 'subject', by: 'subject', limit: 10, windowSec: 60 },
      { name: 'route', by: 'route', limit: 10, windowSec: 60 },
    ]);
    await s.request({ identity: keyIdentity('key_a', { tenant: 'acme' }) });
    await s.request({ identity: keyIdentity('key_b', { tenant: 'acme', subject: 'owner-of-key_a' }) });
    const [tenant, subject, route] = s.rateLimits;
    expect(await s.used(tenant!, 'acme')).toBe(2);
    expect(await s.used(subject!, 'owner-of-key_a')).toBe(2);
    expect(await s.used(route!, ROUTE)).toBe(2);
  });

  it("applies the plan's and the key's own rate limits on top of the route's", async () => {
    const plans: Record<string, Plan> = {
      gold: {
        apiAccess: true,
        rateLimits: [{ name: 'gold-minute', by: 'key', limit: 5, windowSec: 60, cost: 1 }],
      },
    };
    const s = setup([{ name: 'route', by: 'ip', limit: 10, windowSec: 60 }], plans);
    const own: RateLimitRule = { name: 'own', by: 'key', limit: 1, windowSec: 60, cost: 1 };
    const id = keyIdentity('key_a', { plan: 'gold', rateLimits: [own] });
    const { t, problem } = await s.request({ identity: id });
    expect(problem).toBeUndefined();
    expect(t.res.getHeader('ratelimit-policy')).toBe(
      '"route";q=10;w=60, "gold-minute";q=5;w=60, "own";q=1;w=60',
    );
    const second = await s.request({ identity: id });
    expect(second.problem?.extensions).toEqual({ policy: 'own' });
    expect(await s.used(own, 'key_a', 'key:key_a')).toBe(1);
    expect(await s.used(plans.gold!.rateLimits[0]!, 'key_a', 'plan:gold')).toBe(1);
  });

  it("lets a key's own limit replace the plan's limit of the same name, raising it (SPEC §10)", async () => {
    const plans: Record<string, Plan> = {
      gold: {
        apiAccess: true,
        rateLimits: [{ name: 'minute', by: 'key', limit: 2, windowSec: 60, cost: 1 }],
      },
    };
    const s = setup([], plans);
    const raised: RateLimitRule = { name: 'minute', by: 'key', limit: 5, windowSec: 60, cost: 1 };
    const id = keyIdentity('key_a', { plan: 'gold', rateLimits: [raised] });
    const results = [];
    for (let i = 0; i < 3; i++) results.push(await s.request({ identity: id }));
    expect(results.map((r) => r.problem?.slug)).toEqual([undefined, undefined, undefined]);
    expect(results[2]!.t.res.getHeader('ratelimit-policy')).toBe('"minute";q=5;w=60');
  });

  it("lets a key's own limit replace the plan's limit of the same name, lowering it (SPEC §10)", async () => {
    const plans: Record<string, Plan> = {
      gold: {
        apiAccess: true,
        rateLimits: [{ name: 'minute', by: 'key', limit: 5, windowSec: 60, cost: 1 }],
      },
    };
    const s = setup([], plans);
    const lowered: RateLimitRule = { name: 'minute', by: 'key', limit: 1, windowSec: 60, cost: 1 };
    const id = keyIdentity('key_a', { plan: 'gold', rateLimits: [lowered] });
    const first = await s.request({ identity: id });
    expect(first.problem).toBeUndefined();
    expect(first.t.res.getHeader('ratelimit-policy')).toBe('"minute";q=1;w=60');
    expect((await s.request({ identity: id })).problem?.extensions).toEqual({ policy: 'minute' });
  });

  it('does nothing (synchronously) on a route without limits', () => {
    const s = setup([]);
    const t = fakeContext({ clock: s.clock });
    expect(s.stage.run(t.ctx)).toBeUndefined();
    expect(t.res.getHeader('ratelimit-policy')).toBeUndefined();
  });

  it('refuses duplicate names and a cost above the limit at config load', () => {
    expect(
      rateLimitListSchema.safeParse([
        { name: 'a', by: 'ip', limit: 1, windowSec: 1 },
        { name: 'a', by: 'ip', limit: 1, windowSec: 1 },
      ]).success,
    ).toBe(false);
    expect(
      rateLimitListSchema.safeParse([{ name: 'a', by: 'ip', limit: 1, windowSec: 1, cost: 2 }]).success,
    ).toBe(false);
  });
});
