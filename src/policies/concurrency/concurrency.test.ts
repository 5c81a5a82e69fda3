import { describe, expect, it } from 'vitest';
import { fakeContext } from '../../core/fake-context.js';
import { Problem } from '../../problems/problem.js';
import { createConcurrencyStage } from './concurrency.js';
import { concurrencySchema } from './schema.js';
import { MemoryConcurrency } from './store.js';

function setup(limit: number, by: 'ip' | 'key' = 'ip') {
  const store = new MemoryConcurrency();
  const stage = createConcurrencyStage({
    routeId: 'r',
    config: concurrencySchema.parse({ limit, by }),
    store,
  });
  const enter = (remoteAddress = '10.0.0.1') => {
    const t = fakeContext({ url: '/r', remoteAddress });
    try {
      void stage.run(t.ctx);
      return { t, problem: undefined };
    } catch (err) {
      expect(err).toBeInstanceOf(Problem);
      return { t, problem: err as Problem };
    }
  };
  return { store, enter };
}

describe('concurrency stage (in-process)', () => {
  it('admits `limit` in flight per subject; one over is 429 policy concurrency, Retry-After 1', () => {
    const { enter } = setup(2);
    const a = enter();
    const b = enter();
    expect(a.problem ?? b.problem).toBeUndefined();
    const c = enter();
    expect(c.problem?.slug).toBe('rate-limit-exceeded');
    expect(c.problem?.extensions).toEqual({ policy: 'concurrency' });
    expect(c.problem?.headers).toEqual({ 'retry-after': '1' });
    expect(c.t.ctx.rateLimitPolicy).toBe('concurrency');
    // Another client IP has its own slots.
    expect(enter('10.0.0.2').problem).toBeUndefined();
  });

  it('frees the slot when the response is over (finished or aborted)', () => {
    const { enter, store } = setup(1);
    const a = enter();
    expect(enter().problem).toBeDefined();
    a.t.abort();
    expect(enter().problem).toBeUndefined();
    expect(store.held('cc:{ip:10.0.0.1}:route:r:ip')).toBe(1);
  });

  it('validates its config with paths', () => {
    const r = concurrencySchema.safeParse({ limit: 0, by: 'nobody', leaseSec: 0 });
    expect(r.success).toBe(false);
    const paths = r.error!.issues.map((i) => i.path.join('.')).sort();
    expect(paths).toEqual(['by', 'leaseSec', 'limit']);
  });
});
