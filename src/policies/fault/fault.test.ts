import { describe, expect, it } from 'vitest';
import { ManualClock, type Clock } from '../../core/clock.js';
import { fakeContext } from '../../core/fake-context.js';
import type { RequestContext } from '../../core/context.js';
import { Problem } from '../../problems/problem.js';
import { createFaultStage, type FaultKind } from './fault.js';
import { faultSchema } from './schema.js';

/** mulberry32: a small seeded PRNG, uniform in [0, 1). The same seed gives the same draws. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A ManualClock that also records every delay asked of it. */
class RecordingClock extends ManualClock {
  readonly delays: number[] = [];
  override after(ms: number, fn: () => void): () => void {
    this.delays.push(ms);
    return super.after(ms, fn);
  }
}

/** Lets promise callbacks that are already due run (no timers involved). */
const settle = async () => {
  for (let i = 0; i < 5; i++) await Promise.resolve();
};

function build(fault: unknown, o: { clock?: Clock; random?: () => number } = {}) {
  const injected: FaultKind[] = [];
  const clock = o.clock ?? new ManualClock();
  const stage = createFaultStage({
    fault: faultSchema.parse(fault),
    clock,
    random: o.random ?? seeded(1),
    onInjected: (_ctx: RequestContext, kind) => injected.push(kind),
  });
  return { stage, clock, injected };
}

/** Runs the stage once; returns the Problem it refused with, if any. */
async function runOnce(stage: ReturnType<typeof build>['stage'], clock: Clock): Promise<Problem | undefined> {
  const t = fakeContext({ clock });
  try {
    const pending = stage.run(t.ctx);
    if (pending !== undefined) {
      (clock as ManualClock).advance(60_000);
      await pending;
    }
  } catch (err) {
    if (err instanceof Problem) return err;
    throw err;
  }
  return undefined;
}

describe('fault stage (in-process)', () => {
  it.each([
    [503, 'service-unavailable', { 'retry-after': '1' }],
    [502, 'bad-gateway', undefined],
    [504, 'gateway-timeout', undefined],
    [500, 'internal-error', undefined],
    [429, 'rate-limit-exceeded', { 'retry-after': '1' }],
  ] as const)('an abort of %i is the problem %s with injected: true', (status, slug, headers) => {
    const { stage, injected } = build({ abort: { status, percent: 100 } });
    const t = fakeContext();
    let thrown: unknown;
    try {
      void stage.run(t.ctx);
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(Problem);
    const p = thrown as Problem;
    expect(p.slug).toBe(slug);
    expect(p.status).toBe(status);
    expect(p.extensions?.injected).toBe(true);
    expect(p.headers).toEqual(headers);
    if (status === 429) expect(p.extensions?.policy).toBe('fault');
    expect(injected).toEqual(['abort']);
  });

  it('with no fault drawn it is synchronous and injects nothing', () => {
    const { stage, injected } = build({
      delay: { ms: 100, percent: 0 },
      abort: { status: 503, percent: 0 },
    });
    for (let i = 0; i < 100; i++) expect(stage.run(fakeContext().ctx)).toBeUndefined();
    expect(injected).toEqual([]);
  });

  it('honours both percentages within ±2 points over 10,000 requests (seeded random)', async () => {
    const clock = new ManualClock();
    const { stage, injected } = build(
      { delay: { ms: 5, percent: 30 }, abort: { status: 503, percent: 10 } },
      { clock, random: seeded(20261202) },
    );
    let aborted = 0;
    const N = 10_000;
    for (let i = 0; i < N; i++) if ((await runOnce(stage, clock)) !== undefined) aborted++;
    const delays = injected.filter((k) => k === 'delay').length;
    expect(Math.abs((delays / N) * 100 - 30)).toBeLessThanOrEqual(2);
    expect(Math.abs((aborted / N) * 100 - 10)).toBeLessThanOrEqual(2);
    expect(injected.filter((k) => k === 'abort').length).toBe(aborted);
    expect(clock.pendingTimers).toBe(0);
  });

  it('honours fractional and other seeds alike (0.5 % and 75 %)', async () => {
    for (const seed of [7, 99, 123456]) {
      const clock = new ManualClock();
      const { stage, injected } = build(
        { delay: { ms: 1, percent: 75 }, abort: { status: 500, percent: 0.5 } },
        { clock, random: seeded(seed) },
      );
      for (let i = 0; i < 10_000; i++) await runOnce(stage, clock);
      const pct = (kind: FaultKind) => (injected.filter((k) => k === kind).length / 10_000) * 100;
      expect(Math.abs(pct('delay') - 75)).toBeLessThanOrEqual(2);
      expect(Math.abs(pct('abort') - 0.5)).toBeLessThanOrEqual(2);
    }
  });

  it('a delay waits ms on the clock, then the request goes on', async () => {
    const clock = new ManualClock();
    const { stage } = build({ delay: { ms: 250, percent: 100 } }, { clock });
    const t = fakeContext({ clock });
    let done = false;
    const pending = stage.run(t.ctx);
    expect(pending).toBeInstanceOf(Promise);
    void pending!.then(() => (done = true));
    clock.advance(249);
    await settle();
    expect(done).toBe(false);
    clock.advance(1);
    await settle();
    expect(done).toBe(true);
    expect(t.ctx.handled).toBe(false);
    expect(clock.pendingTimers).toBe(0);
  });

  it('jitter is uniform over [ms, ms + jitterMs] and bounded', async () => {
    const clock = new RecordingClock();
    const { stage } = build({ delay: { ms: 100, jitterMs: 50, percent: 100 } }, { clock, random: seeded(3) });
    for (let i = 0; i < 5_000; i++) await runOnce(stage, clock);
    expect(clock.delays).toHaveLength(5_000);
    expect(Math.min(...clock.delays)).toBe(100);
    expect(Math.max(...clock.delays)).toBe(150);
    const mean = clock.delays.reduce((a, b) => a + b, 0) / clock.delays.length;
    expect(Math.abs(mean - 125)).toBeLessThan(1.5);
    expect(clock.delays.every((d) => Number.isInteger(d))).toBe(true);
  });

  it('a client that leaves during the delay ends it at once: no timer left, no abort, nothing after it', async () => {
    const clock = new ManualClock();
    const { stage, injected } = build(
      { delay: { ms: 30_000, percent: 100 }, abort: { status: 503, percent: 100 } },
      { clock },
    );
    const t = fakeContext({ clock });
    const pending = stage.run(t.ctx);
    expect(clock.pendingTimers).toBe(1);
    t.abort();
    await expect(pending).resolves.toBeUndefined();
    expect(clock.pendingTimers).toBe(0);
    expect(t.ctx.handled).toBe(true);
    expect(injected).toEqual(['delay']);
  });

  it('a delay then an abort: the abort comes after the wait', async () => {
    const clock = new ManualClock();
    const { stage, injected } = build(
      { delay: { ms: 10, percent: 100 }, abort: { status: 504, percent: 100 } },
      { clock },
    );
    const t = fakeContext({ clock });
    const pending = stage.run(t.ctx) as Promise<void>;
    const outcome = pending.then(
      () => undefined,
      (err: unknown) => err,
    );
    clock.advance(10);
    const p = (await outcome) as Problem;
    expect(p.slug).toBe('gateway-timeout');
    expect(injected).toEqual(['delay', 'abort']);
  });
});

describe('fault schema', () => {
  const issues = (input: unknown) => {
    const r = faultSchema.safeParse(input);
    expect(r.success).toBe(false);
    return r.error!.issues.map((i) => ({ path: i.path.join('.'), message: i.message }));
  };

  it('accepts delay, abort or both, with percent and numbers as strings', () => {
    expect(faultSchema.parse({ delay: { ms: '20', percent: '2.5' } })).toEqual({
      delay: { ms: 20, jitterMs: 0, percent: 2.5 },
    });
    expect(faultSchema.parse({ abort: { status: 429, percent: 100 } }).abort).toEqual({
      status: 429,
      percent: 100,
    });
  });

  it('refuses a status other than 500, 502, 503, 504, 429, naming its path', () => {
    for (const status of [404, 200, 501, 599, 'x'])
      expect(issues({ abort: { status, percent: 1 } })[0]!.path).toBe('abort.status');
    expect(issues({ abort: { status: 404, percent: 1 } })[0]!.message).toBe(
      'must be one of 429, 500, 502, 503, 504',
    );
  });

  it('refuses percentages outside 0-100, negative or too long delays, empty faults and unknown keys', () => {
    expect(issues({ abort: { status: 503, percent: 101 } })[0]!.path).toBe('abort.percent');
    expect(issues({ delay: { ms: 1, percent: -1 } })[0]!.path).toBe('delay.percent');
    expect(issues({ delay: { ms: 1, percent: 'half' } })[0]!.path).toBe('delay.percent');
    expect(issues({ delay: { ms: -5, percent: 1 } })[0]!.path).toBe('delay.ms');
    expect(issues({ delay: { ms: 1.5, percent: 1 } })[0]!.path).toBe('delay.ms');
    expect(issues({ delay: { ms: 50_000, jitterMs: 20_000, percent: 1 } })).toEqual([
      { path: 'delay.jitterMs', message: 'ms + jitterMs must not exceed 60000' },
    ]);
    expect(issues({ delay: { percent: 1 } })[0]!.path).toBe('delay.ms');
    expect(issues({ abort: { status: 503 } })[0]!.path).toBe('abort.percent');
    expect(issues({})[0]!.message).toBe('needs delay, abort or both');
    expect(issues({ delay: { ms: 1, percent: 1, typo: 1 } })[0]!.path).toBe('delay');
  });
});
