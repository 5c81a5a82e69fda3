import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { runCli } from '../../src/cli/index.js';
import { PROCESS_TEST_MS } from '../helpers/cli.js';

// Every example config passes `tollgate validate` (schema, environment defaults, the factories'
// own checks) as a user would run it, and the README points at every example.
const root = join(import.meta.dirname, '..', '..');
const examples = readdirSync(join(root, 'examples'), { withFileTypes: true })
  .filter((d) => d.isDirectory())
  .map((d) => d.name);

async function validate(file: string, env: Record<string, string>) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCli(['validate', '--config', file], {
    out: (l) => out.push(l),
    err: (l) => err.push(l),
    env,
  });
  return { code, out, err };
}

describe('examples/', { timeout: PROCESS_TEST_MS }, () => {
  it('has the four deployment kinds, each with a gateway.yaml and a README', () => {
    expect(examples).toEqual(
      expect.arrayContaining(['api-product', 'partner-api', 'saas', 'docker-compose']),
    );
    for (const name of examples) {
      expect(existsSync(join(root, 'examples', name, 'gateway.yaml')), `${name}/gateway.yaml`).toBe(true);
      expect(existsSync(join(root, 'examples', name, 'README.md')), `${name}/README.md`).toBe(true);
    }
  });

  it.each(examples)(
    'examples/%s/gateway.yaml is valid, with no environment and in production',
    async (name) => {
      const file = join('examples', name, 'gateway.yaml');
      const envs: Array<Record<string, string>> = [
        {},
        { NODE_ENV: 'production', ADMIN_TOKEN: 'an-admin-token-of-some-length' },
      ];
      for (const env of envs) {
        const r = await validate(file, env);
        expect(
          r.err.filter((l) => !l.includes('warning:')),
          `${file} ${JSON.stringify(env)}`,
        ).toEqual([]);
        expect(r.code).toBe(0);
        expect(r.out[0]).toMatch(/valid \(\d+ routes?\)$/);
      }
    },
  );

  it('the docker-compose example runs two gateways on one Redis, from the repository Dockerfile', () => {
    const compose = parse(readFileSync(join(root, 'examples/docker-compose/compose.yaml'), 'utf8'), {
      merge: true,
    }) as {
      services: Record<
        string,
        { image?: string; build?: { context: string }; environment?: Record<string, string> }
      >;
    };
    const gateways = Object.values(compose.services).filter((s) => s.build !== undefined);
    expect(gateways).toHaveLength(2);
    expect(Object.values(compose.services).some((s) => s.image?.startsWith('redis:'))).toBe(true);
    for (const g of gateways) {
      expect(existsSync(join(root, 'examples/docker-compose', g.build!.context, 'Dockerfile'))).toBe(true);
      expect(g.environment).toMatchObject({
        TOLLGATE_CONFIG: '/etc/tollgate/gateway.yaml',
        REDIS_URL: 'redis://redis:6379',
      });
    }
  });

  it('the README points at every example', () => {
    const readme = readFileSync(join(root, 'README.md'), 'utf8');
    for (const name of examples) expect(readme, name).toContain(`(examples/${name}/)`);
  });

  it('the API-product example has plans with quotas and token meters', () => {
    const config = parse(readFileSync(join(root, 'examples/api-product/gateway.yaml'), 'utf8')) as {
      plans: Record<string, { quota?: unknown; rateLimits?: Array<{ meter?: string }> }>;
      routes: Array<{ meters?: Record<string, unknown> }>;
    };
    expect(Object.values(config.plans).filter((p) => p.quota !== undefined).length).toBeGreaterThan(1);
    const metered = Object.values(config.plans).filter((p) =>
      (p.rateLimits ?? []).some((l) => l.meter === 'tokens'),
    );
    expect(metered.length).toBeGreaterThan(1);
    expect(config.routes.some((r) => r.meters?.tokens !== undefined)).toBe(true);
  });
});
