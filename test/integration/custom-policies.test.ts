import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { loadConfigFile } from '../../src/config/load.js';
import { runCli } from '../../src/cli/index.js';
import { createLogger } from '../../src/observability/logger.js';
import { startGateway, type RunningGateway } from '../helpers/gateway.js';
import { startUpstream, type Upstream } from '../helpers/upstream.js';
import { request, waitFor } from '../helpers/http.js';
import { expectProblem } from '../helpers/problem.js';
import { startGatewayProcess, type GatewayProc } from '../helpers/process.js';

// Policy modules written by these tests import the built package, as a user's module imports `tollgate`.
const TOLLGATE = pathToFileURL(resolve('dist/index.js')).href;
const cleanup: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-policies-'));
  cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function upstream(): Promise<Upstream> {
  const up = await startUpstream();
  cleanup.push(() => up.close());
  return up;
}

/** A config file loaded as the CLI loads it (modules included), served in-process on loopback. */
async function serveFile(file: string, options: { lines?: string[] } = {}): Promise<RunningGateway> {
  const loaded = await loadConfigFile(file, {});
  if (!loaded.ok) throw new Error(JSON.stringify(loaded.issues));
  const lines = options.lines;
  const gw = await startGateway(loaded.config, {
    policies: loaded.modules,
    ...(lines
      ? {
          logger: createLogger({
            level: 'debug',
            format: 'json',
            destination: { write: (l: string) => void lines.push(l) },
          }),
        }
      : {}),
  });
  cleanup.push(() => gw.close());
  return gw;
}

async function validate(file: string) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCli(['validate', '--config', file], {
    out: (l) => out.push(l),
    err: (l) => err.push(l),
    env: {},
  });
  // Each line reads `FILE[:LINE:COLUMN]: path: message`; the tests look at `path: message`.
  const prefix = /^[^ ]*?:(?:\d+:\d+:)? /;
  return { code, out, err: err.map((l) => (l.startsWith(file) ? l.replace(prefix, '') : l)) };
}

describe('the example policies (examples/policies), through real sockets', () => {
  it('tenant-router (definePolicy) sends each tenant to its shard and refuses tenants it does not know', async () => {
    const up = await upstream();
    const dir = tempDir();
    const file = join(dir, 'gateway.yaml');
    writeFileSync(
      file,
      `policies:
  tenants:
    module: ${resolve('examples/policies/tenant-router.js')}
    options: { header: x-tenant, tenants: { acme: eu-1, globex: us-2 } }
routes:
  - { id: orders, path: /orders, auth: none, policies: [tenants], upstream: { targets: ["${up.url}"] } }
`,
    );
    const gw = await serveFile(file);
    const ok = await request(`${gw.url}/orders/7`, {
      headers: { 'x-tenant': 'acme', 'x-tenant-shard': 'forged' },
    });
    expect(ok.status).toBe(200);
    expect(ok.headers['x-tenant-shard']).toBe('eu-1');
    expect(up.calls.at(-1)!.headers['x-tenant-shard']).toBe('eu-1');

    const unknown = await request(`${gw.url}/orders/7`, { headers: { 'x-tenant': 'initech' } });
    expect(expectProblem(unknown, 'forbidden').detail).toBe('This tenant is not served here.');
    const none = await request(`${gw.url}/orders/7`);
    expectProblem(none, 'forbidden');
    expect(up.calls).toHaveLength(1);
  });

  it('express-basic-auth (a published Express middleware) answers 401 itself, and that answer is audited', async () => {
    const gw = await serveFile(resolve('examples/policies/gateway.yaml'));
    const refused = await request(`${gw.url}/staff`, { headers: { 'x-request-id': 'staff-refused-1' } });
    expect(refused.status).toBe(401);
    expect(refused.headers['www-authenticate']).toBe('Basic realm="staff"');
    expect(refused.headers['x-request-id']).toBe('staff-refused-1');
    await waitFor(async () => (await gw.gateway.services.audit.get('staff-refused-1')) !== undefined, 3000);
    const record = await gw.gateway.services.audit.get('staff-refused-1');
    expect(record).toMatchObject({ route: 'staff-docs', status: 401 });

    const basic = `Basic ${Buffer.from('staff:change-me').toString('base64')}`;
    const allowed = await request(`${gw.url}/staff`, { headers: { authorization: basic } });
    expect(allowed.status).toBe(200);
    expect(allowed.json()).toEqual({ docs: 'for staff only' });
  });

  it('validate accepts the example config', async () => {
    const result = await validate(resolve('examples/policies/gateway.yaml'));
    expect(result.code).toBe(0);
  });
});

describe('custom policies: loading and options are checked at config load (SPEC §12)', () => {
  it('bad options are reported with their path, by validate and on reload (the old config stays)', async () => {
    const dir = tempDir();
    const file = join(dir, 'gateway.yaml');
    const config = (shard: string) => `policies:
  tenants:
    module: ${resolve('examples/policies/tenant-router.js')}
    options: { header: x-tenant, tenants: { acme: "${shard}" } }
routes:
  - { id: demo, path: /demo, policies: [tenants], mock: { body: { ok: true } } }
`;
    writeFileSync(file, config('Not A Shard'));
    const bad = await validate(file);
    expect(bad.code).toBe(1);
    expect(bad.err).toContain('policies.tenants.options.tenants.acme: must be a shard name');

    writeFileSync(file, config('eu-1'));
    const gw = await serveFile(file);
    expect(
      (await request(`${gw.url}/demo`, { headers: { 'x-tenant': 'acme' } })).headers['x-tenant-shard'],
    ).toBe('eu-1');
    writeFileSync(file, config('Not A Shard'));
    const reload = await loadConfigFile(file, {});
    expect(reload.ok).toBe(true); // the file parses; the options fail when the policy is built
    const result = gw.gateway.reload(reload.ok ? reload.config : {}, reload.ok ? reload.modules : undefined);
    expect(result.ok ? [] : result.issues).toContainEqual({
      path: 'policies.tenants.options.tenants.acme',
      message: 'must be a shard name',
    });
    expect(
      (await request(`${gw.url}/demo`, { headers: { 'x-tenant': 'acme' } })).headers['x-tenant-shard'],
    ).toBe('eu-1');
  });

  it('a module that does not load, or exports neither a policy nor a factory, is an issue at policies.<name>.module', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'nothing.js'), 'export default 42;\n');
    writeFileSync(join(dir, 'broken.js'), 'export default (;\n');
    const file = join(dir, 'gateway.yaml');
    writeFileSync(
      file,
      `policies:
  missing: { module: ./does-not-exist.js }
  broken: { module: ./broken.js }
  nothing: { module: ./nothing.js }
  nopkg: { module: no-such-package-tollgate }
routes:
  - { id: demo, path: /demo, policies: [missing, broken, nothing, nopkg], mock: {} }
`,
    );
    const first = await validate(file);
    expect(first.code).toBe(1);
    const paths = first.err.map((l) => l.split(':')[0]);
    expect(paths).toEqual(
      expect.arrayContaining(['policies.missing.module', 'policies.broken.module', 'policies.nopkg.module']),
    );
    writeFileSync(
      file,
      `policies:
  nothing: { module: ./nothing.js }
routes:
  - { id: demo, path: /demo, policies: [nothing, undeclared], mock: {} }
`,
    );
    const second = await validate(file);
    expect(second.code).toBe(1);
    expect(second.err).toContain('routes[0].policies[1]: "undeclared" is not a policy in policies');
    writeFileSync(file, `policies:\n  nothing: { module: ./nothing.js }\nroutes: []\n`);
    const third = await validate(file);
    expect(third.err.some((l) => l.startsWith('policies.nothing.module: its default export must be'))).toBe(
      true,
    );
  });
});

describe('custom policies at run time', () => {
  function writePolicies(dir: string): void {
    writeFileSync(
      join(dir, 'policies.js'),
      `import { definePolicy, Problem } from '${TOLLGATE}';
export const early = definePolicy({ name: 'early', phase: 'early', create: () => (req) => {
  if (req.identity !== undefined) throw new Error('an early policy runs before authentication');
  if (req.headers['x-block'] === 'yes') throw new Problem('forbidden', { detail: 'Blocked early.' });
  req.setUpstreamHeader('x-order', 'early');
} });
export const late = definePolicy({ name: 'late', create: () => async (req) => {
  await new Promise((r) => setImmediate(r));
  req.setUpstreamHeader('x-seen-consumer', req.identity ? req.identity.consumerId : 'anonymous');
} });
export const buggy = definePolicy({ name: 'buggy', create: () => (req) => {
  if (req.headers['x-crash'] === 'yes') throw new TypeError('undefined is not a function (policy bug)');
} });
`,
    );
    writeFileSync(join(dir, 'early.js'), `export { early as default } from './policies.js';\n`);
    writeFileSync(join(dir, 'late.js'), `export { late as default } from './policies.js';\n`);
    writeFileSync(join(dir, 'buggy.js'), `export { buggy as default } from './policies.js';\n`);
    writeFileSync(
      join(dir, 'limited.js'),
      `export default (options) => (req, res, next) => {
  const mode = req.headers['x-mode'];
  if (mode === 'limit') return next(Object.assign(new Error('Slow down.'), { status: 429, headers: { 'retry-after': '7' } }));
  if (mode === 'unprocessable') return next(Object.assign(new Error('The order is not valid.'), { status: 422 }));
  if (mode === 'secret') return next(Object.assign(new Error('db password is hunter2'), { status: 400, expose: false }));
  if (mode === 'boom') return next(new Error('internal database host db-7.internal is down'));
  req.headers['x-middleware'] = options.tag;
  next();
};\n`,
    );
  }

  it('run in the route order and phase: early before authentication, late after it; headers go upstream', async () => {
    const up = await upstream();
    const dir = tempDir();
    writePolicies(dir);
    const file = join(dir, 'gateway.yaml');
    writeFileSync(
      file,
      `admin: { host: 127.0.0.1, port: 0, tokens: ["policies-test-admin-token"] }
policies:
  early: { module: ./early.js }
  late: { module: ./late.js }
  limited: { module: ./limited.js, options: { tag: from-express } }
routes:
  - id: orders
    path: /orders
    auth: { methods: [apiKey] }
    policies: [late, early, limited]
    upstream: { targets: ["${up.url}"] }
`,
    );
    const gw = await serveFile(file);
    const { key } = await gw.gateway.services.management.create({ name: 'k', ownerId: 'alice' });
    // Early refuses before authentication: no key, still 403 (not 401).
    expectProblem(await request(`${gw.url}/orders`, { headers: { 'x-block': 'yes' } }), 'forbidden');
    expectProblem(await request(`${gw.url}/orders`), 'missing-credentials');
    const ok = await request(`${gw.url}/orders`, { headers: { 'x-api-key': key, 'x-order': 'client' } });
    expect(ok.status).toBe(200);
    const sent = up.calls.at(-1)!.headers;
    expect(sent['x-order']).toBe('early');
    expect(sent['x-seen-consumer']).toBe('alice');
    expect(sent['x-middleware']).toBe('from-express');
  });

  it("an Express middleware's next(err) becomes a problem with its status; a non-HTTP error a 500 that hides its message", async () => {
    const dir = tempDir();
    writePolicies(dir);
    const file = join(dir, 'gateway.yaml');
    writeFileSync(
      file,
      `policies:
  limited: { module: ./limited.js, options: { tag: x } }
routes:
  - { id: demo, path: /demo, policies: [limited], mock: { body: { ok: true } } }
`,
    );
    const lines: string[] = [];
    const gw = await serveFile(file, { lines });
    const limited = await request(`${gw.url}/demo`, { headers: { 'x-mode': 'limit' } });
    expect(expectProblem(limited, 'rate-limit-exceeded').detail).toBe('Slow down.');
    expect(limited.headers['retry-after']).toBe('7');
    const unprocessable = await request(`${gw.url}/demo`, { headers: { 'x-mode': 'unprocessable' } });
    expect(unprocessable.status).toBe(422);
    expect(unprocessable.headers['content-type']).toBe('application/problem+json');
    expect(unprocessable.json()).toMatchObject({
      type: 'about:blank',
      title: 'Unprocessable Entity',
      status: 422,
      detail: 'The order is not valid.',
    });
    const secret = await request(`${gw.url}/demo`, { headers: { 'x-mode': 'secret' } });
    expect(secret.status).toBe(400);
    expect(secret.text).not.toContain('hunter2');
    const boom = await request(`${gw.url}/demo`, { headers: { 'x-mode': 'boom' } });
    expectProblem(boom, 'internal-error');
    expect(boom.text).not.toContain('db-7.internal');
    expect(lines.some((l) => l.includes('"msg":"internal error"') && l.includes('db-7.internal'))).toBe(true);
    expect((await request(`${gw.url}/demo`)).status).toBe(200);
  });

  it('a definePolicy that throws a plain error is a 500 internal-error with the cause logged, and the gateway keeps serving', async () => {
    const dir = tempDir();
    writePolicies(dir);
    const file = join(dir, 'gateway.yaml');
    writeFileSync(
      file,
      `policies:
  buggy: { module: ./buggy.js }
routes:
  - { id: demo, path: /demo, policies: [buggy], mock: { body: { ok: true } } }
`,
    );
    const lines: string[] = [];
    const gw = await serveFile(file, { lines });
    const crashed = await request(`${gw.url}/demo`, { headers: { 'x-crash': 'yes' } });
    expectProblem(crashed, 'internal-error');
    expect(crashed.text).not.toContain('policy bug');
    expect(lines.some((l) => l.includes('"msg":"internal error"') && l.includes('policy buggy failed'))).toBe(
      true,
    );
    expect((await request(`${gw.url}/demo`)).status).toBe(200);
  });
});

describe('custom policies in a running gateway process', () => {
  let proc: GatewayProc | undefined;
  afterEach(async () => {
    await proc?.stop();
    proc = undefined;
  });

  it('reload picks up an edited policy module; a broken one is refused and the running one stays', async () => {
    const dir = tempDir();
    const policy = (word: string) =>
      `import { definePolicy } from '${TOLLGATE}';\nexport default definePolicy({ name: 'word', create: () => (req) => req.setResponseHeader('x-word', '${word}') });\n`;
    const file = join(dir, 'word.js');
    writeFileSync(file, policy('one'));
    const yaml = `listen: { host: 127.0.0.1, port: 0 }
policies:
  word: { module: ${file} }
routes:
  - { id: demo, path: /demo, policies: [word], mock: { body: { ok: true } } }
`;
    proc = await startGatewayProcess(yaml);
    expect((await request(`${proc.url}/demo`)).headers['x-word']).toBe('one');
    writeFileSync(file, policy('two'));
    utimesSync(file, new Date(), new Date(Date.now() + 5000));
    proc.cli.child.kill('SIGHUP');
    await waitFor(async () => (await request(`${proc!.url}/demo`)).headers['x-word'] === 'two', 10_000);
    writeFileSync(file, 'export default (;\n');
    utimesSync(file, new Date(), new Date(Date.now() + 10_000));
    proc.cli.child.kill('SIGHUP');
    await proc.cli.waitForLog('config reload rejected', 10_000);
    expect((await request(`${proc.url}/demo`)).headers['x-word']).toBe('two');
  });
});
