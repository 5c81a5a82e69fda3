import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import { runCli } from '../../src/cli/index.js';
import { PROCESS_TEST_MS, spawnCli, type RunningCli } from '../helpers/cli.js';
import { request, waitFor } from '../helpers/http.js';
import { startUpstream } from '../helpers/upstream.js';

const cleanup: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

function tempFile(name: string, text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-cli-'));
  cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, name);
  writeFileSync(file, text);
  return file;
}

async function run(args: string[], env: Record<string, string> = {}) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCli(args, { out: (l) => out.push(l), err: (l) => err.push(l), env });
  return { code, out, err };
}

describe('tollgate validate', { timeout: PROCESS_TEST_MS }, () => {
  it('exits 0 for the shipped config', async () => {
    const r = await run(['validate', '--config', 'config/gateway.yaml']);
    expect(r.code).toBe(0);
    expect(r.out.join('\n')).toContain('valid');
  });

  it('exits 0 for the SPEC example as written, outside development and without TOLLGATE_SECRET_KEY', async () => {
    const r = await run(['validate', '--config', 'config/spec-example.yaml'], {
      NODE_ENV: 'production',
      ADMIN_TOKEN: 'an-admin-token-of-some-length',
    });
    expect(r.code).toBe(0);
    expect(r.err.join('\n')).toContain('routes[0].auth.hmac');
  });

  it('prints every problem with its path and exits 1', async () => {
    const file = tempFile(
      'bad.yaml',
      `routes:
  - { id: ok, path: /ok, mock: {} }
  - { id: x, path: /x, auth: none, upstream: { targets: ["http://127.0.0.1:1"] } }
  - id: r
    path: /r
    mock: {}
    rateLimits: [ { name: b, by: key, limit: 0, windowSec: 1 } ]
`,
    );
    const r = await run(['validate', '--config', file]);
    expect(r.code).toBe(1);
    // FILE:LINE:COLUMN beside the path: line 7, the column of the value 0.
    expect(r.err).toContain(`${file}:7:46: routes[2].rateLimits[0].limit: must be a positive integer`);
    expect(r.err.at(-1)).toMatch(/: \d+ problems?$/);
    expect(r.err.filter((l) => l.includes(': routes[0]'))).toEqual([]);
  });

  it('says "did you mean" for a misspelt field, at its key, at any depth', async () => {
    const file = tempFile(
      'typo.yaml',
      `listen: { port: 0 }
routes:
  - id: r
    path: /r
    mock: {}
    ratelimits: []
    auth: { methods: [apiKey], scope: [a] }
serverr: {}
`,
    );
    const r = await run(['validate', '--config', file]);
    expect(r.code).toBe(1);
    expect(r.err).toContain(
      `${file}:6:5: routes[0].ratelimits: is not a known field; did you mean "rateLimits"?`,
    );
    expect(r.err).toContain(
      `${file}:7:32: routes[0].auth.scope: is not a known field; did you mean "scopes"?`,
    );
    expect(r.err).toContain(`${file}:8:1: serverr: is not a known field; did you mean "server"?`);
    // Nothing close: no guess.
    const far = tempFile('far.yaml', 'routes: []\nzzzzzzzzzz: 1\n');
    expect((await run(['validate', '--config', far])).err).toContain(
      `${far}:2:1: zzzzzzzzzz: is not a known field`,
    );
  });

  it('locates a YAML syntax error and a missing field at its parent', async () => {
    const broken = tempFile('broken.yaml', 'routes:\n  - id: [\n');
    const b = await run(['validate', '--config', broken]);
    expect(b.code).toBe(1);
    expect(b.err[0]!.startsWith(`${broken}:`)).toBe(true);
    expect(b.err[0]!.slice(broken.length)).toMatch(/^:\d+:\d+: /);
    const missing = tempFile('missing.yaml', 'routes:\n  - id: r\n    mock: {}\n');
    const m = await run(['validate', '--config', missing]);
    expect(m.err).toContain(`${missing}:2:5: routes[0].path: is required`);
  });

  it('the real binary exits 1 on an invalid file and 2 on a usage error', async () => {
    const file = tempFile('bad.yaml', 'listen: { port: -1 }\n');
    const bad = spawnCli(['validate', '--config', file]);
    expect(await bad.exited).toBe(1);
    expect(bad.lines.join('\n')).toContain('listen.port: must be a port number (0-65535)');
    const usage = spawnCli(['validate', '--nope']);
    expect(await usage.exited).toBe(2);
  });
});

describe('tollgate start', { timeout: PROCESS_TEST_MS }, () => {
  let cli: RunningCli | undefined;
  afterEach(async () => {
    await cli?.stop();
    cli = undefined;
  });

  it('serves, reloads on SIGHUP, and drains in-flight requests on SIGTERM before exiting 0', async () => {
    let release: () => void = () => undefined;
    const up = await startUpstream((_req, res) => {
      release = () => res.end('finished after SIGTERM');
    });
    cleanup.push(() => up.close());
    const yaml = (body: string) => `listen: { host: 127.0.0.1, port: 0 }
server: { drainTimeoutMs: 5000 }
routes:
  - { id: demo, path: /demo, mock: { body: { v: "${body}" } } }
  - { id: slow, path: /slow, auth: none, upstream: { targets: ["${up.url}"], timeoutMs: 5000 } }
`;
    const file = tempFile('gw.yaml', yaml('one'));
    cli = spawnCli(['--config', file]);
    const listening = await cli.waitForLog('tollgate listening');
    const port = Number(String(listening.listen).split(':').pop());
    const base = `http://127.0.0.1:${port}`;
    expect((await request(`${base}/demo`)).json()).toEqual({ v: 'one' });

    writeFileSync(file, yaml('two'));
    cli.child.kill('SIGHUP');
    await waitFor(async () => (await request(`${base}/demo`)).json().v === 'two', 5000, 50);

    const inFlight = request(`${base}/slow`);
    await waitFor(() => up.calls.length === 1, 5000);
    cli.child.kill('SIGTERM');
    await cli.waitForLog('draining');
    // New connections are refused once draining started.
    await waitFor(
      () =>
        new Promise<boolean>((resolve) => {
          const s = net.connect(port, '127.0.0.1');
          s.on('connect', () => {
            s.destroy();
            resolve(false);
          });
          s.on('error', () => resolve(true));
        }),
      5000,
    );
    release();
    const res = await inFlight;
    expect(res.status).toBe(200);
    expect(res.text).toBe('finished after SIGTERM');
    expect(await cli.exited).toBe(0);
  });

  it('refuses to start with an invalid config (exit 1)', async () => {
    const file = tempFile('gw.yaml', 'routes: [ { id: x } ]\n');
    cli = spawnCli(['--config', file]);
    expect(await cli.exited).toBe(1);
    expect(cli.lines.join('\n')).toContain('routes[0]');
  });
});

describe('tollgate routes', { timeout: PROCESS_TEST_MS }, () => {
  it('prints the compiled route table, defaults filled in, as text and --json', async () => {
    const file = tempFile(
      'routes.yaml',
      `plans: { gold: { quota: { limit: 10, period: month } } }
routes:
  - id: orders
    path: /v1/orders
    methods: [GET, POST]
    auth: { methods: [apiKey], scopes: [orders:read] }
    rateLimits: [ { name: burst, by: key, limit: 20, windowSec: 1 } ]
    quota: {}
    upstream: { targets: ["http://127.0.0.1:9001", "http://127.0.0.1:9002"] }
  - { id: demo, path: /demo, mock: {} }
`,
    );
    const json = await run(['routes', '--config', file, '--json']);
    expect(json.code).toBe(0);
    expect(JSON.parse(json.out.join('\n'))).toEqual([
      {
        id: 'orders',
        path: '/v1/orders',
        methods: ['GET', 'POST'],
        auth: { methods: ['apiKey'], scopes: ['orders:read'], hmac: 'off' },
        limits: {
          rateLimits: [{ name: 'burst', by: 'key', limit: 20, windowSec: 1, cost: 1 }],
          quotaCost: 1,
          idempotency: false,
        },
        upstream: { targets: ['http://127.0.0.1:9001', 'http://127.0.0.1:9002'] },
      },
      {
        id: 'demo',
        path: '/demo',
        methods: '*',
        auth: 'none',
        limits: { rateLimits: [], quotaCost: null, idempotency: false },
        upstream: 'mock',
      },
    ]);
    const text = await run(['routes', '--config', file]);
    expect(text.out[0]).toMatch(/^PATH +METHODS +AUTH +LIMITS +UPSTREAM +ID$/);
    expect(text.out[1]).toMatch(
      /^\/v1\/orders +GET,POST +apiKey scopes=orders:read +burst=20\/1s by key; quota cost 1 +http/,
    );
    // An invalid file is exit 1 with its issues, as for start.
    const bad = await run(['routes', '--config', tempFile('bad.yaml', 'routes: [ { id: x } ]\n')]);
    expect(bad.code).toBe(1);
    expect(bad.err.join('\n')).toContain('routes[0]');
  });
});

describe('tollgate --help', () => {
  it('every command has help (exit 0), in every spelling; an unknown one is exit 2', async () => {
    const commands = [
      ['start'],
      ['validate'],
      ['routes'],
      ['schema'],
      ['keys'],
      ['keys', 'create'],
      ['keys', 'list'],
      ['keys', 'show'],
      ['keys', 'update'],
      ['keys', 'rotate'],
      ['keys', 'revoke'],
    ];
    for (const command of commands) {
      for (const argv of [
        [...command, '--help'],
        [...command, '-h'],
        ['help', ...command],
      ]) {
        const r = await run(argv);
        expect(r.code, argv.join(' ')).toBe(0);
        expect(r.out.join('\n'), argv.join(' ')).toMatch(new RegExp(`^Usage: tollgate (\\[)?${command[0]}`));
      }
    }
    // Help wins over the other options and needs no config.
    expect((await run(['keys', 'show', 'some-id', '--config', '/nonexistent', '--help'])).code).toBe(0);
    expect((await run(['--help'])).out.join('\n')).toContain('Exit codes');
    expect((await run(['frobnicate', '--help'])).code).toBe(2);
    // A usage error prints that command's help.
    const usage = await run(['keys', 'rotate', 'id', '--nope']);
    expect(usage.code).toBe(2);
    expect(usage.err.join('\n')).toContain('Usage: tollgate keys rotate');
  });
});
