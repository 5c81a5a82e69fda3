import { describe, expect, it } from 'vitest';
import { fakeContext } from '../../core/fake-context.js';
import type { Stage } from '../../core/stage.js';
import { Problem } from '../../problems/problem.js';
import { createGoneStage } from './gone.js';
import { goneSchema } from './schema.js';

/** Runs a stage that must refuse, and returns the Problem it threw. */
function refusal(stage: Stage): Problem {
  const t = fakeContext({ url: '/v0/orders' });
  try {
    void stage.run(t.ctx);
  } catch (err) {
    expect(err).toBeInstanceOf(Problem);
    return err as Problem;
  }
  throw new Error('the stage did not refuse');
}

describe('gone stage (in-process)', () => {
  it('refuses every request with 410 gone and redirect_endpoint', () => {
    const stage = createGoneStage(
      goneSchema.parse({ redirectEndpoint: '/v1/orders', sunset: '2026-01-01T00:00:00Z' }),
    );
    const p = refusal(stage);
    expect(p.slug).toBe('gone');
    expect(p.status).toBe(410);
    expect(p.extensions).toEqual({ redirect_endpoint: '/v1/orders' });
    expect(p.detail).toBe('This endpoint was retired; use /v1/orders instead.');
  });

  it('sends Sunset as an HTTP-date, Deprecation as @seconds (defaulting to sunset) and a successor Link', () => {
    const stage = createGoneStage(
      goneSchema.parse({ redirectEndpoint: '/v1/orders', sunset: '2026-01-01T00:00:00Z' }),
    );
    expect(refusal(stage).headers).toEqual({
      sunset: 'Thu, 01 Jan 2026 00:00:00 GMT',
      deprecation: `@${Date.UTC(2026, 0, 1) / 1000}`,
      link: '</v1/orders>; rel="successor-version"',
    });
  });

  it('uses an explicit deprecation date and honours time-zone offsets', () => {
    const stage = createGoneStage(
      goneSchema.parse({
        redirectEndpoint: 'https://api.example.com/v2/orders',
        sunset: '2026-06-30T02:00:00+02:00',
        deprecation: '2025-12-31T23:59:59Z',
        detail: 'Use v2.',
      }),
    );
    const p = refusal(stage);
    expect(p.detail).toBe('Use v2.');
    expect(p.headers?.sunset).toBe('Tue, 30 Jun 2026 00:00:00 GMT');
    expect(p.headers?.deprecation).toBe(`@${Date.UTC(2025, 11, 31, 23, 59, 59) / 1000}`);
    expect(p.extensions).toEqual({ redirect_endpoint: 'https://api.example.com/v2/orders' });
  });

  it('gives every request the same answer (the work is done at config load)', () => {
    const stage = createGoneStage(
      goneSchema.parse({ redirectEndpoint: '/v1/orders', sunset: '2026-01-01T00:00:00Z' }),
    );
    const a = refusal(stage);
    const b = refusal(stage);
    expect(a).not.toBe(b);
    expect(b.headers).toEqual(a.headers);
    expect(Object.isFrozen(a.headers)).toBe(true);
  });

  it('rejects a config without a valid sunset date', () => {
    expect(goneSchema.safeParse({ redirectEndpoint: '/v1', sunset: 'tomorrow' }).success).toBe(false);
    expect(goneSchema.safeParse({ redirectEndpoint: '', sunset: '2026-01-01T00:00:00Z' }).success).toBe(
      false,
    );
  });
});
