import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../core/clock.js';
import { fakeContext } from '../../core/fake-context.js';
import type { Identity, KeyCredential } from '../../core/identity.js';
import { Problem } from '../../problems/problem.js';
import type { EventSink, RaisedEvent } from '../../core/events.js';
import { MemoryCounters, type CounterStore } from '../rate-limit/counters.js';
import { createRateLimitStage } from '../rate-limit/rate-limit.js';
import { periodOf } from './period.js';
import { quotaHolder, quotaLimit, remainingCounter, remainingSpec, type QuotaBy } from './quota.js';
import { planQuotaSchema, routeQuotaSchema, type PlanQuotaConfig } from './schema.js';

const START = Date.UTC(2030, 0, 31, 15, 30);
const HOUR = 3_600_000;

function keyIdentity(credentialId: string, extra: Partial<Identity> = {}): Identity {
  return {
    method: 'api-key',
    credentialId,
    subject: credentialId,
    tenant: undefined,
    scopes: [],
    plan: undefined,
    rateLimits: undefined,
    remaining: undefined,
    ...extra,
  };
}

describe('quotaHolder', () => {
  it("counts a credential's own quota by default", () => {
    expect(quotaHolder(undefined, 'key_1', 'acme', undefined)).toEqual({
      by: 'credential',
      subject: 'key_1',
    });
    expect(quotaHolder('credential', 'key_1', 'acme', { ownerId: 'u1', selfService: true })).toEqual({
      by: 'credential',
      subject: 'key_1',
    });
  });

  it('counts by tenant, falling back to the credential when there is no tenant', () => {
    expect(quotaHolder('tenant', 'key_1', 'acme', undefined)).toEqual({ by: 'tenant', subject: 'acme' });
    expect(quotaHolder('tenant', 'key_1', null, undefined)).toEqual({ by: 'tenant', subject: 'key_1' });
  });

  it('counts a self-service key by its owner, as issuer + subject', () => {
    const key: Pick<KeyCredential, 'ownerId' | 'ownerIssuer' | 'selfService'> = {
      ownerId: 'alice',
      ownerIssuer: 'https://idp.test',
      selfService: true,
    };
    expect(quotaHolder(undefined, 'key_1', undefined, key)).toEqual({
      by: 'owner',
      subject: 'https://idp.test\nalice',
    });
    expect(quotaHolder('owner', 'key_1', undefined, { ownerId: 'alice', ownerIssuer: null })).toEqual({
      by: 'owner',
      subject: 'alice',
    });
  });

  it('counts an owner-less key or a JWT as its credential under by: owner', () => {
    expect(quotaHolder('owner', 'key_1', undefined, { ownerId: null })).toEqual({
      by: 'credential',
      subject: 'key_1',
    });
    expect(quotaHolder('owner', 'jwt_abc', undefined, undefined)).toEqual({
      by: 'credential',
      subject: 'jwt_abc',
    });
  });
});

describe('quotaLimit and periods', () => {
  const day: PlanQuotaConfig = planQuotaSchema.parse({ limit: 100, period: 'day' });

  it('resets a day quota at the next UTC midnight', () => {
    const { spec, resetAt } = quotaLimit(day, 'key_1', 'credential', 2, START);
    expect(resetAt).toBe(Date.UTC(2030, 1, 1));
    expect(spec).toEqual({
      kind: 'quota',
      key: 'q:{key:key_1}:day:d20300131',
      tag: 'key:key_1',
      limit: 100,
      cost: 2,
      ttlMs: Date.UTC(2030, 1, 1) - START + HOUR,
      spanSec: 86_400 + 3_600,
    });
  });

  it('resets a month quota on the first of the next month (across a year end)', () => {
    const month = planQuotaSchema.parse({ limit: 5, period: 'month' });
    const now = Date.UTC(2030, 11, 31, 23, 59, 59);
    const { spec, resetAt } = quotaLimit(month, 'acme', 'tenant', 1, now);
    expect(resetAt).toBe(Date.UTC(2031, 0, 1));
    expect(spec.key).toBe('q:{tenant:acme}:month:m203012');
    expect(spec.ttlMs).toBe(1000 + HOUR);
    // Kept, not expired by a timer that cannot wait a month.
    expect(spec.spanSec).toBe(0);
  });

  it('never resets a lifetime quota', () => {
    const life = planQuotaSchema.parse({ limit: 5, period: 'lifetime' });
    const { spec, resetAt } = quotaLimit(life, 'key_1', 'credential', 1, START);
    expect(resetAt).toBeNull();
    expect(spec.key).toBe('q:{key:key_1}:lifetime:l');
    expect(spec.ttlMs).toBe(0);
    expect(spec.spanSec).toBe(0);
  });

  it('keeps owners, tenants and credentials of the same name on separate counters', () => {
    const keys = (['credential', 'tenant', 'owner'] as QuotaBy[]).map(
      (by) => quotaLimit(day, 'same', by, 1, START).spec.key,
    );
    expect(new Set(keys).size).toBe(3);
  });

  it('names periods by their UTC calendar day or month', () => {
    expect(periodOf('day', Date.UTC(2030, 1, 28, 23, 59))).toEqual({
      id: 'd20300228',
      endsAt: Date.UTC(2030, 2, 1),
    });
    expect(periodOf('month', Date.UTC(2030, 1, 1))).toEqual({ id: 'm203002', endsAt: Date.UTC(2030, 2, 1) });
    expect(periodOf('lifetime', START)).toEqual({ id: 'l', endsAt: null });
  });

  it('escapes braces of a subject out of the Redis hash tag', () => {
    expect(quotaLimit(day, 'a{b}', 'credential', 1, START).spec.tag).toBe('key:a%7Bb%7D');
  });
});

describe('remainingSpec', () => {
  it("is the key's uses counter: one use per request, kept for ever", () => {
    expect(remainingSpec('key_1', 5)).toEqual({
      kind: 'remaining',
      key: 'rem:{key:key_1}:key_1',
      tag: 'key:key_1',
      limit: 5,
      cost: 1,
      ttlMs: 0,
      spanSec: 0,
    });
    expect(remainingCounter('key_1')).toEqual({ key: 'rem:{key:key_1}:key_1', tag: 'key:key_1' });
  });
});

describe('quota through the rate-limit stage (refundUnlessAnswered)', () => {
  function setup(o: { limit?: number; by?: QuotaBy; local?: boolean; cost?: number } = {}) {
    const clock = new ManualClock(START);
    const counters: CounterStore = new MemoryCounters();
    const config = planQuotaSchema.parse({ limit: o.limit ?? 3, period: 'day' });
    const cost = routeQuotaSchema.parse({ cost: o.cost }).cost;
    const stage = createRateLimitStage({
      routeId: 'reports',
      rateLimits: [],
      quotaCost: cost,
      plans: {},
      counters,
      clock,
      local: o.local ?? false,
      quota: { config, by: o.by },
    });
    const run = async (identity: Identity, keyRecord?: KeyCredential) => {
      const t = fakeContext({ clock, identity });
      t.ctx.keyRecord = keyRecord;
      let problem: Problem | undefined;
      try {
        await stage.run(t.ctx);
      } catch (err) {
        if (!(err instanceof Problem)) throw err;
        problem = err;
      }
      return { t, problem };
    };
    const used = async (subject: string, by: QuotaBy = 'credential') =>
      (await counters.peek([quotaLimit(config, subject, by, cost, clock.now()).spec]))[0];
    const usedUses = async (usesId: string) => (await counters.peek([remainingSpec(usesId, 1)]))[0];
    return { clock, counters, stage, run, used, usedUses };
  }

  it('keeps the charge when the upstream answered below 500', async () => {
    const s = setup();
    const { t, problem } = await s.run(keyIdentity('key_1'));
    expect(problem).toBeUndefined();
    // Reserved while the request runs.
    expect(await s.used('key_1')).toBe(1);
    t.ctx.upstreamSent = true;
    t.ctx.upstreamStatus = 404;
    t.abort();
    expect(await s.used('key_1')).toBe(1);
  });

  it('refunds the charge when the upstream answered 5xx', async () => {
    const s = setup();
    const { t } = await s.run(keyIdentity('key_1'));
    t.ctx.upstreamSent = true;
    t.ctx.upstreamStatus = 502;
    t.abort();
    expect(await s.used('key_1')).toBe(0);
  });

  it('refunds the charge when the request never reached the upstream', async () => {
    const s = setup();
    const { t } = await s.run(keyIdentity('key_1'));
    t.abort();
    expect(await s.used('key_1')).toBe(0);
  });

  it('keeps the charge when the client left after the request reached the upstream', async () => {
    const s = setup();
    const { t } = await s.run(keyIdentity('key_1'));
    t.ctx.upstreamSent = true;
    t.abort();
    expect(await s.used('key_1')).toBe(1);
  });

  it('refunds a request the gateway refused after it was sent (a problem, no upstream status)', async () => {
    const s = setup();
    const { t } = await s.run(keyIdentity('key_1'));
    t.ctx.upstreamSent = true;
    t.ctx.problem = new Problem('gateway-timeout');
    t.abort();
    expect(await s.used('key_1')).toBe(0);
  });

  it('on a local route follows the status of the answer written', async () => {
    const s = setup({ local: true });
    const ok = await s.run(keyIdentity('key_1'));
    ok.t.res.writeHead(200, { 'content-type': 'text/plain' });
    ok.t.res.end('ok');
    expect((await ok.t.response()).status).toBe(200);
    expect(await s.used('key_1')).toBe(1);
    const failed = await s.run(keyIdentity('key_1'));
    failed.t.res.writeHead(503);
    failed.t.res.end();
    await failed.t.response();
    expect(await s.used('key_1')).toBe(1);
    const replayed = await s.run(keyIdentity('key_1'));
    replayed.t.ctx.idempotentReplay = true;
    replayed.t.res.writeHead(200);
    replayed.t.res.end();
    await replayed.t.response();
    expect(await s.used('key_1')).toBe(1);
    // Left before any answer: not owed.
    const gone = await s.run(keyIdentity('key_1'));
    gone.t.abort();
    expect(await s.used('key_1')).toBe(1);
  });

  it('answers 402 quota-exceeded with limit and resets_at once the quota is used up', async () => {
    const s = setup({ limit: 2 });
    for (let i = 0; i < 2; i++) {
      const { t } = await s.run(keyIdentity('key_1'));
      t.ctx.upstreamStatus = 200;
      t.abort();
    }
    const { problem } = await s.run(keyIdentity('key_1'));
    expect(problem?.slug).toBe('quota-exceeded');
    expect(problem?.status).toBe(402);
    expect(problem?.extensions).toEqual({ limit: 2, resets_at: '2030-02-01T00:00:00.000Z' });
    expect(problem?.detail).toBe("The plan's quota of 2 is used up until 2030-02-01T00:00:00.000Z.");
    // Another credential has its own.
    expect((await s.run(keyIdentity('key_2'))).problem).toBeUndefined();
    // The next UTC day, a fresh quota.
    s.clock.set(Date.UTC(2030, 1, 1));
    expect((await s.run(keyIdentity('key_1'))).problem).toBeUndefined();
  });

  it("charges a self-service key's owner: all of one user's keys share the quota", async () => {
    const s = setup({ limit: 1 });
    const owner = {
      ownerId: 'alice',
      ownerIssuer: 'https://idp.test',
      selfService: true,
      signingSecret: null,
    };
    const first = await s.run(keyIdentity('key_1'), { id: 'key_1', ...owner });
    first.t.ctx.upstreamStatus = 200;
    first.t.abort();
    expect(await s.used('https://idp.test\nalice', 'owner')).toBe(1);
    const second = await s.run(keyIdentity('key_2'), { id: 'key_2', ...owner });
    expect(second.problem?.slug).toBe('quota-exceeded');
    // The same subject at another issuer is another person.
    const other = await s.run(keyIdentity('key_3'), {
      id: 'key_3',
      ...owner,
      ownerIssuer: 'https://other.test',
    });
    expect(other.problem).toBeUndefined();
  });

  it('charges a tenant quota across its credentials', async () => {
    const s = setup({ limit: 1, by: 'tenant' });
    const a = await s.run(keyIdentity('key_1', { tenant: 'acme' }));
    a.t.ctx.upstreamStatus = 201;
    a.t.abort();
    expect((await s.run(keyIdentity('key_2', { tenant: 'acme' }))).problem?.slug).toBe('quota-exceeded');
    expect((await s.run(keyIdentity('key_3', { tenant: 'globex' }))).problem).toBeUndefined();
  });

  it("draws a key's remaining uses (shared with its rotated predecessor) and refunds them alike", async () => {
    const s = setup({ limit: 100 });
    const id = keyIdentity('key_new', { remaining: 2, usesId: 'key_old' });
    const a = await s.run(id);
    a.t.ctx.upstreamStatus = 200;
    a.t.abort();
    const b = await s.run(id);
    b.t.ctx.upstreamStatus = 500;
    b.t.abort();
    expect(await s.usedUses('key_old')).toBe(1);
    expect(await s.used('key_new')).toBe(1);
    const c = await s.run(id);
    c.t.ctx.upstreamStatus = 200;
    c.t.abort();
    const d = await s.run(id);
    expect(d.problem?.slug).toBe('quota-exceeded');
    expect(d.problem?.extensions).toEqual({ limit: 2, resets_at: null });
    expect(d.problem?.detail).toBe("This key's 2 uses are used up.");
  });

  it('charges nothing to an anonymous request', () => {
    const s = setup();
    const t = fakeContext({ clock: s.clock });
    expect(s.stage.run(t.ctx)).toBeUndefined();
    expect(t.ctx.closeHooks).toBeUndefined();
  });
});

describe('quota events (SPEC §11), in-process', () => {
  function setup(o: { limit: number; cost?: number; by?: QuotaBy; thresholds?: number[] }) {
    const clock = new ManualClock(START);
    const raised: RaisedEvent[] = [];
    const sink: EventSink = {
      raise: (e) => {
        raised.push(e);
        return Promise.resolve();
      },
      quotaThresholds: o.thresholds ?? [0.8, 1],
      wants: () => true,
    };
    const stage = createRateLimitStage({
      routeId: 'reports',
      rateLimits: [],
      quotaCost: o.cost ?? 1,
      plans: {},
      counters: new MemoryCounters(),
      clock,
      local: true,
      quota: { config: planQuotaSchema.parse({ limit: o.limit, period: 'month' }), by: o.by },
      quotaEvents: { sink, thresholds: o.thresholds ?? [0.8, 1], exhausted: true },
    });
    const run = async (identity: Identity) => {
      try {
        await stage.run(fakeContext({ clock, identity }).ctx);
        return 'ok';
      } catch (err) {
        return (err as Problem).slug;
      }
    };
    return { run, raised };
  }

  it('raises each threshold as the charge crosses it, and exhausted at the limit', async () => {
    const s = setup({ limit: 10 });
    for (let i = 0; i < 7; i++) await s.run(keyIdentity('key_1'));
    expect(s.raised).toEqual([]);
    await s.run(keyIdentity('key_1'));
    expect(s.raised.map((e) => [e.type, e.data.threshold, e.data.used])).toEqual([
      ['quota.threshold', 0.8, 8],
    ]);
    expect(s.raised[0]!.once!.key).toMatch(/^q:\{key:key_1\}:month:m\d{6}:t:0\.8$/);
    expect(s.raised[0]!.data).toMatchObject({
      holder: { by: 'credential', id: 'key_1' },
      period: 'month',
      limit: 10,
    });
    await s.run(keyIdentity('key_1'));
    await s.run(keyIdentity('key_1'));
    expect(s.raised.map((e) => `${e.type}:${(e.data.threshold as number | undefined) ?? ''}`)).toEqual([
      'quota.threshold:0.8',
      'quota.threshold:1',
      'quota.exhausted:',
    ]);
    // Refused past the limit: an exhausted event again, which its once-key (the same one) dedupes.
    expect(await s.run(keyIdentity('key_1'))).toBe('quota-exceeded');
    expect(s.raised.at(-1)!.once!.key).toBe(s.raised[2]!.once!.key);
  });

  it('a charge of several units crosses several thresholds at once; a tenant quota is the tenant’s', async () => {
    const s = setup({ limit: 10, cost: 5, by: 'tenant', thresholds: [0.3, 0.5, 0.9] });
    await s.run(keyIdentity('key_1', { tenant: 'acme' }));
    expect(s.raised.map((e) => e.data.threshold)).toEqual([0.3, 0.5]);
    expect(s.raised[0]!.data.holder).toEqual({ by: 'tenant', id: 'acme' });
    expect(s.raised[0]!.orderKey).toBe('quota:tenant:acme');
  });

  it('a refused first charge that never reached the limit still says exhausted', async () => {
    const s = setup({ limit: 10, cost: 6 });
    expect(await s.run(keyIdentity('key_1'))).toBe('ok');
    expect(await s.run(keyIdentity('key_1'))).toBe('quota-exceeded');
    expect(s.raised.map((e) => e.type)).toEqual(['quota.exhausted']);
  });
});
