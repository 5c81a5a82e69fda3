import { afterEach, describe, expect, it } from 'vitest';
import { validateConfig } from '../../src/config/load.js';
import type { ConfigInput } from '../../src/config/schema.js';
import { ManualClock } from '../../src/core/clock.js';
import { buildRouteStages } from '../../src/gateway/pipeline.js';
import { closeServices, createServices, type Services } from '../../src/gateway/services.js';
import { silentLogger } from '../../src/observability/logger.js';
import { ProblemWriter } from '../../src/problems/problem-details.js';
import { securityHeaders } from '../../src/shared/security-headers.js';

const opened: Services[] = [];
afterEach(async () => {
  while (opened.length) await closeServices(opened.pop()!);
});

/** The stage names of each route of `input`, in pipeline order. */
function stageNames(input: ConfigInput): string[][] {
  const result = validateConfig(input);
  if (!result.ok) throw new Error(JSON.stringify(result.issues));
  const config = result.config;
  const services = createServices(config, { env: {}, clock: new ManualClock(), logger: silentLogger() });
  opened.push(services);
  return config.routes.map((route) =>
    buildRouteStages({
      route,
      config,
      services,
      writer: new ProblemWriter({ typeBase: config.problems.typeBase }),
      securityHeaders: securityHeaders(),
      trust: () => false,
      trustsNobody: true,
      jwt: undefined,
      policies: new Map(),
      selfService: undefined,
    }).map((s) => s.name),
  );
}

describe('the fault stage in the pipeline', () => {
  it('a route without fault has no fault stage; one with it has it after the limits, before idempotency', () => {
    const [plain, faulty, full] = stageNames({
      routes: [
        { id: 'plain', path: '/plain', mock: { body: 'ok' } },
        {
          id: 'faulty',
          path: '/faulty',
          mock: { body: 'ok' },
          fault: { abort: { status: 503, percent: 1 } },
        },
        {
          id: 'full',
          path: '/full',
          auth: { methods: ['apiKey'] },
          upstream: { targets: ['http://127.0.0.1:9'] },
          rateLimits: [{ name: 'burst', by: 'key', limit: 5, windowSec: 1 }],
          idempotency: {},
          fault: { delay: { ms: 5, percent: 50 } },
        },
      ],
    });
    expect(plain).toEqual(['body-limit', 'mock']);
    expect(faulty).toEqual(['body-limit', 'fault', 'mock']);
    expect(full).toEqual([
      'body-limit',
      'authenticate',
      'read-body',
      'rate-limit',
      'fault',
      'idempotency',
      'proxy',
    ]);
  });
});
