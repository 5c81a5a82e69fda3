import { describe, expect, it } from 'vitest';
import { validateConfig } from '../../src/config/load.js';

/** SPEC §10 config: meters, metered limits, algorithm and mode — bad values name their path. */
const route = (extra: Record<string, unknown> = {}) => ({
  id: 'ai',
  path: '/ai',
  mock: { body: {} },
  meters: { tokens: { responseHeader: 'X-Usage-Tokens' } },
  ...extra,
});

function issues(input: Record<string, unknown>): Array<{ path: string; message: string }> {
  const r = validateConfig(input);
  return r.ok ? [] : r.issues.map((i) => ({ path: i.path, message: i.message }));
}

describe('usage limits in the config', () => {
  it('accepts meters, metered route and plan limits, sliding windows and shadow mode', () => {
    const r = validateConfig({
      plans: {
        ai: {
          quota: { limit: 20_000, period: 'day', meter: 'tokens' },
          rateLimits: [{ name: 'tpm', by: 'key', limit: 5000, windowSec: 60, meter: 'tokens' }],
        },
      },
      routes: [
        route({
          rateLimits: [
            { name: 'rps', by: 'ip', limit: 10, windowSec: 1, algorithm: 'sliding-window' },
            { name: 'trial', by: 'ip', limit: 5, windowSec: 1, mode: 'shadow' },
            { name: 'tokens', by: 'ip', limit: 100, windowSec: 60, meter: 'tokens' },
          ],
        }),
      ],
    });
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    // Header names are kept lower case (as Node gives them).
    expect(r.config.routes[0]!.meters).toEqual({ tokens: { responseHeader: 'x-usage-tokens' } });
  });

  it('refuses a route limit naming a meter the route does not declare, with its path', () => {
    expect(
      issues({
        routes: [route({ rateLimits: [{ name: 't', by: 'ip', limit: 1, windowSec: 1, meter: 'tokenz' }] })],
      }),
    ).toEqual([
      { path: 'routes[0].rateLimits[0].meter', message: '"tokenz" is not a meter of this route (meters)' },
    ]);
  });

  it('refuses plan limits and plan quotas naming a meter no route declares', () => {
    const found = issues({
      plans: {
        p: {
          quota: { limit: 5, period: 'day', meter: 'bytes' },
          rateLimits: [{ name: 't', by: 'key', limit: 1, windowSec: 1, meter: 'bytes' }],
        },
      },
      routes: [route()],
    });
    expect(found.map((i) => i.path).sort()).toEqual(['plans.p.quota.meter', 'plans.p.rateLimits[0].meter']);
  });

  it('refuses unknown algorithms and modes, bad meter names and header names', () => {
    const found = issues({
      routes: [
        route({
          meters: { 'bad name': { responseHeader: 'x' }, ok: { responseHeader: 'not a header' }, x: {} },
          rateLimits: [{ name: 't', by: 'ip', limit: 1, windowSec: 1, algorithm: 'leaky', mode: 'dry-run' }],
        }),
      ],
    }).map((i) => i.path);
    expect(found).toEqual(
      expect.arrayContaining([
        'routes[0].rateLimits[0].algorithm',
        'routes[0].rateLimits[0].mode',
        'routes[0].meters.ok.responseHeader',
        'routes[0].meters.x.responseHeader',
      ]),
    );
    expect(found.some((p) => p.startsWith('routes[0].meters'))).toBe(true);
    expect(found.length).toBeGreaterThanOrEqual(5);
  });
});
