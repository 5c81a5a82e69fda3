import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../core/clock.js';
import { fakeContext } from '../../core/fake-context.js';
import type { Identity, Plan } from '../../core/identity.js';
import { Problem } from '../../problems/problem.js';
import { planQuotaSchema } from '../quota/schema.js';
import {
  MemoryCounters,
  SETTLE_MAX_ENTRIES,
  SettleBatcher,
  type CounterSpec,
  type CounterStore,
} from './counters.js';
import { createRateLimitStage, meterValue, rateCounter, SLIDING_BUCKETS } from './rate-limit.js';
import { metersSchema, rateLimitListSchema } from './schema.js';

/*
 * SPEC §10 in-process: sliding windows (with a property test of the memory counter on a
 * ManualClock), shadow mode, and meters (checked before, settled after the response).
 */

const START = Date.UTC(2030, 0, 1);
const ROUTE = 'ai';

function keyIdentity(credentialId: string, plan?: string): Identity {
  return {
    method: 'api-key',
    credentialId,
    subject: `owner-of-${credentialId}`,
    tenant: undefined,
    scopes: [],
    plan,
    rateLimits: undefined,
    remaining: undefined,
  };
}

function setup(
  rules: Array<Record<string, unknown>>,
  o: {
    plans?: Record<string, Plan>;
    meters?: Record<string, unknown>;
    local?: boolean;
    quotaCost?: number;
    counters?: CounterStore;
    start?: number;
  } = {},
) {
  const clock = new ManualClock(o.start ?? START);
  const counters: CounterStore = o.counters ?? new MemoryCounters();
  const missing: string[] = [];
  const stage = createRateLimitStage({
    routeId: ROUTE,
    rateLimits: rateLimitListSchema.parse(rules.map((r) => ({ by: 'ip', windowSec: 60, ...r }))),
    quotaCost: o.quotaCost,
    plans: o.plans ?? {},
    counters,
    clock,
    local: o.local ?? false,
    meters: metersSchema.parse(o.meters),
    onMeterMissing: (m) => missing.push(m),
  });
  const run = async (identity?: Identity) => {
    const t = fakeContext({ clock, remoteAddress: '203.0.113.9', ...(identity ? { identity } : {}) });
    let problem: Problem | undefined;
    try {
      await stage.run(t.ctx);
    } catch (err) {
      if (!(err instanceof Problem)) throw err;
      problem = err;
    }
    return { t, problem };
  };
  /** A request the upstream answers, reporting `fields` (as the proxy fills them) — then closed. */
  const upstreamAnswers = async (fields: Array<string | undefined>, identity?: Identity) => {
    const r = await run(identity);
    if (r.problem === undefined) {
      r.t.ctx.upstreamStatus = 200;
      const raw: string[] = [];
      fields.forEach((v, i) => {
        if (v !== undefined) raw.push(r.t.ctx.meterFields![i]!, v);
      });
      r.t.ctx.readMeters(raw); // as the proxy does with the upstream's header or trailer
      r.t.res.end();
      await r.t.response();
    }
    return r;
  };
  return { clock, counters, stage, run, upstreamAnswers, missing };
}

describe('sliding window', () => {
  it('counts the previous window by tenths, erring strict, and forgets a request 1–1.1 windows later', async () => {
    const s = setup([{ name: 'slide', limit: 3, windowSec: 10, algorithm: 'sliding-window' }]);
    s.clock.advance(9_950); // late in a window: a fixed window would reset 50 ms from now
    for (let i = 0; i < 3; i++) expect((await s.run()).problem).toBeUndefined();
    s.clock.advance(100); // the next fixed window: a sliding one still holds all three
    const refused = (await s.run()).problem;
    expect(refused?.slug).toBe('rate-limit-exceeded');
    // Retry-After: until everything counted now has left the window (≤ 1.1 windows).
    const retry = Number(refused?.headers?.['retry-after']);
    expect(retry).toBeGreaterThanOrEqual(10);
    expect(retry).toBeLessThanOrEqual(11);
    s.clock.advance(9_899); // 9.999 s after them: still inside a 10 s span
    expect((await s.run()).problem?.slug).toBe('rate-limit-exceeded');
    s.clock.advance(1_000); // past 1.1 windows: all gone
    expect((await s.run()).problem).toBeUndefined();
  });

  it('sends RateLimit headers for a sliding window like a fixed one', async () => {
    const s = setup([{ name: 'slide', limit: 5, windowSec: 10, algorithm: 'sliding-window' }]);
    const { t } = await s.run();
    expect(t.res.getHeader('ratelimit-policy')).toBe('"slide";q=5;w=10');
    expect(t.res.getHeader('ratelimit')).toMatch(/^"slide";r=4;t=1[01]$/);
  });

  it('property: never admits more than the limit in any windowSec span, and refuses only when the last 1.1 windows are full', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 8 }), // limit
        fc.integer({ min: 1, max: 5 }), // windowSec
        fc.array(fc.tuple(fc.integer({ min: 0, max: 1_500 }), fc.integer({ min: 1, max: 3 })), {
          minLength: 1,
          maxLength: 120,
        }),
        async (limit, windowSec, steps) => {
          const clock = new ManualClock(START + 123);
          const counters: CounterStore = new MemoryCounters();
          const rl = rateLimitListSchema.parse([
            { name: 's', by: 'global', limit, windowSec, algorithm: 'sliding-window' },
          ])[0]!;
          const W = windowSec * 1000;
          const B = W / SLIDING_BUCKETS;
          const admitted: Array<{ at: number; cost: number }> = [];
          for (const [gap, cost] of steps) {
            clock.advance(gap);
            const now = clock.now();
            const spec = { ...rateCounter('route:p', rl, 'global', now).spec, cost };
            const r = await counters.consume([spec]);
            const inSpan = (from: number) =>
              admitted.filter((a) => a.at >= from && a.at <= now).reduce((n, a) => n + a.cost, 0);
            if (r.ok) {
              admitted.push({ at: now, cost });
              // Strict: the closed span [now − W, now] holds at most `limit`.
              expect(inSpan(now - W)).toBeLessThanOrEqual(limit);
            } else {
              // Never stricter than the last window and a tenth: a refusal means that span is full.
              expect(inSpan(now - W - B + 1) + cost).toBeGreaterThan(limit);
            }
          }
          // And every span of W ms anywhere in the run, not only those ending at an admission.
          for (const a of admitted) {
            const sum = admitted
              .filter((b) => b.at >= a.at && b.at <= a.at + W)
              .reduce((n, b) => n + b.cost, 0);
            expect(sum).toBeLessThanOrEqual(limit);
          }
        },
      ),
      { numRuns: 200 },
    );
  });
});

describe('shadow mode', () => {
  it('never refuses, marks the would-be refusals, and leaves shadow limits out of the headers', async () => {
    const s = setup([
      { name: 'enforced', limit: 100 },
      { name: 'trial', limit: 2, mode: 'shadow' },
    ]);
    const marks: Array<string[] | undefined> = [];
    for (let i = 0; i < 5; i++) {
      const { t, problem } = await s.run();
      expect(problem).toBeUndefined();
      marks.push(t.ctx.rateLimitShadow);
      expect(t.res.getHeader('ratelimit-policy')).toBe('"enforced";q=100;w=60');
      expect(t.res.getHeader('ratelimit')).toBe(`"enforced";r=${99 - i};t=60`);
    }
    expect(marks).toEqual([undefined, undefined, ['trial'], ['trial'], ['trial']]);
  });

  it('counts as an enforced limit would: a would-be refusal is not charged', async () => {
    const s = setup([{ name: 'trial', limit: 2, windowSec: 10, mode: 'shadow' }]);
    for (let i = 0; i < 4; i++) await s.run();
    const rl = rateLimitListSchema.parse([
      { name: 'trial', by: 'ip', limit: 2, windowSec: 10, mode: 'shadow' },
    ])[0]!;
    expect(
      await s.counters.peek([rateCounter(`route:${ROUTE}`, rl, '203.0.113.9', s.clock.now()).spec]),
    ).toEqual([2]);
  });

  it('an enforced refusal still refuses, and is not also counted as a shadow one', async () => {
    const s = setup([
      { name: 'hard', limit: 1 },
      { name: 'trial', limit: 1, mode: 'shadow' },
    ]);
    expect((await s.run()).problem).toBeUndefined();
    const second = await s.run();
    expect(second.problem?.slug).toBe('rate-limit-exceeded');
    expect(second.t.ctx.rateLimitShadow).toBeUndefined();
  });

  it('works on sliding windows too', async () => {
    const s = setup([{ name: 'trial', limit: 1, algorithm: 'sliding-window', mode: 'shadow' }]);
    expect((await s.run()).t.ctx.rateLimitShadow).toBeUndefined();
    const second = await s.run();
    expect(second.problem).toBeUndefined();
    expect(second.t.ctx.rateLimitShadow).toEqual(['trial']);
  });
});

describe('meters', () => {
  const meters = { tokens: { responseHeader: 'X-Usage-Tokens' } };

  it('reads only non-negative integers up to 2^53 − 1', () => {
    expect(meterValue('42')).toBe(42);
    expect(meterValue(' 7 ')).toBe(7);
    expect(meterValue('0')).toBe(0);
    expect(meterValue(String(Number.MAX_SAFE_INTEGER))).toBe(Number.MAX_SAFE_INTEGER);
    for (const bad of [
      undefined,
      '',
      '-1',
      '1.5',
      '1e3',
      '0x10',
      'abc',
      '9007199254740992', // 2^53
      '99999999999999999999',
      '1, 2',
      '+3',
      'Infinity',
      'NaN',
    ])
      expect(meterValue(bad), String(bad)).toBeUndefined();
  });

  it('refuses the request after the one that crossed the limit; RateLimit-Policy says qu="tokens"', async () => {
    const s = setup([{ name: 'tokens', by: 'key', limit: 100, windowSec: 3600, meter: 'tokens' }], {
      meters,
    });
    const id = keyIdentity('key_1');
    const first = await s.upstreamAnswers(['60'], id);
    expect(first.problem).toBeUndefined();
    expect(first.t.res.getHeader('ratelimit-policy')).toBe('"tokens";q=100;w=3600;qu="tokens"');
    expect(first.t.res.getHeader('ratelimit')).toBe('"tokens";r=100;t=3600');
    await s.counters.flush();
    const second = await s.upstreamAnswers(['60'], id); // 60 < 100: admitted, crosses the limit
    expect(second.problem).toBeUndefined();
    expect(second.t.res.getHeader('ratelimit')).toBe('"tokens";r=40;t=3600');
    const third = await s.run(id); // 120 ≥ 100: refused
    expect(third.problem?.slug).toBe('rate-limit-exceeded');
    expect(third.problem?.extensions?.policy).toBe('tokens');
    // Another key has its own count.
    expect((await s.run(keyIdentity('key_2'))).problem).toBeUndefined();
  });

  it('adds 0 for a missing or unusable value and counts it, per meter', async () => {
    const s = setup([{ name: 'tokens', limit: 10, meter: 'tokens' }], { meters });
    for (const v of [undefined, '-5', '2.5', 'lots', '9007199254740993']) await s.upstreamAnswers([v]);
    expect(s.missing).toEqual(['tokens', 'tokens', 'tokens', 'tokens', 'tokens']);
    expect((await s.run()).t.res.getHeader('ratelimit')).toBe('"tokens";r=10;t=60');
  });

  it('settles nothing for a request that never reached the upstream', async () => {
    const s = setup([{ name: 'tokens', limit: 10, meter: 'tokens' }], { meters });
    const r = await s.run();
    r.t.abort(); // the client left before any answer
    expect(s.missing).toEqual([]);
  });

  it('a plan limit naming a meter applies only on routes that declare it', async () => {
    const plans: Record<string, Plan> = {
      ai: {
        apiAccess: true,
        rateLimits: rateLimitListSchema.parse([
          { name: 'tokens', by: 'key', limit: 5, windowSec: 60, meter: 'tokens' },
          { name: 'calls', by: 'key', limit: 100, windowSec: 60 },
        ]),
      },
    };
    const metered = setup([], { plans, meters });
    const plain = setup([], { plans });
    const id = keyIdentity('key_1', 'ai');
    expect((await metered.run(id)).t.res.getHeader('ratelimit-policy')).toBe(
      '"tokens";q=5;w=60;qu="tokens", "calls";q=100;w=60',
    );
    expect((await plain.run(id)).t.res.getHeader('ratelimit-policy')).toBe('"calls";q=100;w=60');
  });

  it('a metered quota is refused (402) once at or over its limit, from the settled values', async () => {
    const plans: Record<string, Plan> = {
      ai: {
        apiAccess: true,
        rateLimits: [],
        quota: planQuotaSchema.parse({ limit: 1000, period: 'day', meter: 'tokens' }),
      },
    };
    const s = setup([], { plans, meters, quotaCost: 1 });
    const id = keyIdentity('key_1', 'ai');
    expect((await s.upstreamAnswers(['999'], id)).problem).toBeUndefined();
    expect((await s.upstreamAnswers(['1'], id)).problem).toBeUndefined();
    expect((await s.run(id)).problem?.slug).toBe('quota-exceeded');
  });

  it('on a local route, reads the value from the answer it sent', async () => {
    const s = setup([{ name: 'tokens', limit: 10, meter: 'tokens' }], { meters, local: true });
    const r = await s.run();
    r.t.res.setHeader('x-usage-tokens', '10');
    r.t.res.end();
    await r.t.response();
    expect((await s.run()).problem?.slug).toBe('rate-limit-exceeded');
  });

  it('reads meter fields from raw answer fields: any case, Buffers, a trailer replacing a header', () => {
    const { ctx } = fakeContext({});
    ctx.meterFields = ['x-usage-tokens', 'x-cost'];
    const b = (t: string) => Buffer.from(t);
    // Upstream names are Buffers; one of the same length is not the field; other lengths are skipped.
    ctx.readMeters([b('X-Usage-Tokens'), b('12'), b('x-usage-tokenz'), b('99'), b('Content-Type'), b('a')]);
    expect(ctx.meterValues).toEqual(['12', undefined]);
    ctx.readMeters(['x-cost', '3', 'X-COST', '4']); // twice in one list: ambiguous, unusable
    expect(ctx.meterValues).toEqual(['12', '']);
    ctx.readMeters([b('x-cost'), b('5')]); // the trailer replaces the header
    expect(ctx.meterValues).toEqual(['12', '5']);
    expect(meterValue(ctx.meterValues![1])).toBe(5);
  });

  it('settles into the counter of the time the response ends: the checked one, or a later window’s', async () => {
    /** Memory counters that keep what they were told to settle. */
    class Recording extends MemoryCounters {
      readonly settled: CounterSpec[] = [];
      override settle(specs: readonly CounterSpec[]): void {
        this.settled.push(...specs);
        super.settle(specs);
      }
    }
    for (const algorithm of ['fixed-window', 'sliding-window'] as const) {
      const rule = { name: 'tokens', limit: 1000, meter: 'tokens', algorithm };
      // 10 ms later: the same window and bucket; 6 s: the next tenth; 61 s: the next window.
      for (const later of [10, 6_000, 61_000]) {
        const counters = new Recording();
        const s = setup([rule], { meters, counters, start: START + 1_000 });
        const r = await s.run();
        s.clock.advance(later);
        r.t.ctx.upstreamStatus = 200;
        r.t.ctx.readMeters(['x-usage-tokens', '17']);
        r.t.res.end();
        await r.t.response();
        const [parsed] = rateLimitListSchema.parse([{ by: 'ip', windowSec: 60, ...rule }]);
        const expected = rateCounter(`route:${ROUTE}`, parsed!, '203.0.113.9', s.clock.now()).spec;
        expect(counters.settled, `${algorithm} +${later} ms`).toEqual([
          { ...expected, cost: 17, soft: undefined },
        ]);
      }
    }
  });

  it('combines request-count and meter limits on one route', async () => {
    const s = setup(
      [
        { name: 'calls', limit: 3 },
        { name: 'tokens', limit: 50, meter: 'tokens', algorithm: 'sliding-window' },
      ],
      { meters },
    );
    expect((await s.upstreamAnswers(['30'])).problem).toBeUndefined();
    expect((await s.upstreamAnswers(['30'])).problem).toBeUndefined();
    const third = await s.run();
    expect(third.problem?.extensions?.policy).toBe('tokens');
  });
});

describe('SettleBatcher', () => {
  const spec = (key: string, cost: number): CounterSpec => ({
    kind: 'rate',
    key,
    tag: 't',
    limit: 1,
    cost,
    ttlMs: 1000,
    spanSec: 1,
  });

  it('coalesces settlements per counter into one write per flush', async () => {
    const writes: CounterSpec[][] = [];
    const b = new SettleBatcher((specs) => {
      writes.push(specs);
      return Promise.resolve();
    });
    b.add([spec('a', 2), spec('b', 1)]);
    b.add([spec('a', 3)]);
    await b.flush();
    expect(writes).toHaveLength(1);
    expect(writes[0]!.map((s) => [s.key, s.cost])).toEqual([
      ['a', 5],
      ['b', 1],
    ]);
  });

  it(`writes at once when ${SETTLE_MAX_ENTRIES} counters are pending`, () => {
    const writes: CounterSpec[][] = [];
    const b = new SettleBatcher((specs) => {
      writes.push(specs);
      return Promise.resolve();
    });
    for (let i = 0; i < SETTLE_MAX_ENTRIES; i++) b.add([spec(`k${i}`, 1)]);
    expect(writes).toHaveLength(1);
    expect(writes[0]).toHaveLength(SETTLE_MAX_ENTRIES);
  });
});
