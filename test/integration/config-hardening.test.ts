import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from '../../src/cli/index.js';
import { GatewayProcess } from '../../src/main.js';
import { spawnCli } from '../helpers/cli.js';
import { request, waitFor } from '../helpers/http.js';

const TOKEN = 'config-hardening-admin-token';
const cleanup: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

function tempFile(text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-config-hardening-'));
  cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'gateway.yaml');
  writeFileSync(file, text);
  return file;
}

async function cli(args: string[], env: Record<string, string> = {}) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCli(args, { out: (l) => out.push(l), err: (l) => err.push(l), env });
  return { code, out, err };
}

const GOOD = `listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0, tokens: ["${TOKEN}"] }
routes:
  - { id: v, path: /v, mock: { body: { version: 1 } } }
`;
// A target written without a scheme, beside another mistake that must be reported too.
const SCHEMELESS = `listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0, tokens: ["${TOKEN}"] }
routes:
  - { id: orders, path: /orders, auth: none, upstream: { targets: ["127.0.0.1:9001", "not a url"] } }
  - { id: bad, path: /bad, methods: [], mock: {} }
`;

function reloadFailures(metrics: string): number {
  const line = metrics
    .split('\n')
    .find((l) => l.startsWith('tollgate_config_reloads_total{result="failure"}'));
  return line === undefined ? NaN : Number(line.split(' ').pop());
}

describe('a target without a scheme (14.4)', () => {
  it('validate prints every problem with its path, not a bare "Invalid URL"', async () => {
    const r = await cli(['validate', '--config', tempFile(SCHEMELESS)]);
    expect(r.code).toBe(1);
    const text = r.err.join('\n');
    expect(text).toContain('routes[0].upstream.targets[0]: must be an http:// or https:// URL');
    expect(text).toContain('routes[0].upstream.targets[1]: must be an http:// or https:// URL');
    expect(text).toContain('routes[1].methods');
    expect(text).not.toContain('Invalid URL');
  });

  it('start refuses it with the paths (exit 1)', async () => {
    const r = await cli(['start', '--config', tempFile(SCHEMELESS)]);
    expect(r.code).toBe(1);
    expect(r.err.join('\n')).toContain('routes[0].upstream.targets[0]');
    expect(r.err.join('\n')).toContain('routes[1].methods');
  });

  it('a reload to it is logged with the paths and counted as a failure; the running config stays', async () => {
    const file = tempFile(GOOD);
    const lines: string[] = [];
    const proc = await GatewayProcess.start({
      configPath: file,
      env: {},
      logDestination: { write: (line: string) => void lines.push(line) },
    });
    cleanup.push(() => proc.shutdown());
    const { public: pub, admin } = proc.addresses();
    const metrics = async () => (await request(`http://127.0.0.1:${admin!.port}/metrics`)).text;
    expect(reloadFailures(await metrics())).toBe(0);

    // Saved over the running file: the watcher reloads it.
    writeFileSync(file, SCHEMELESS);
    await waitFor(() => lines.some((l) => l.includes('config reload rejected')), 5000, 25);
    const rejected = JSON.parse(lines.find((l) => l.includes('config reload rejected'))!) as {
      level: string;
      issues: Array<{ path: string }>;
    };
    expect(rejected.level).toBe('error');
    expect(rejected.issues.map((i) => i.path)).toEqual(
      expect.arrayContaining(['routes[0].upstream.targets[0]', 'routes[1].methods']),
    );
    expect(reloadFailures(await metrics())).toBe(1);

    // And through SIGHUP's path, explicitly.
    expect(await proc.reload()).toBe(false);
    expect(reloadFailures(await metrics())).toBe(2);
    expect(lines.filter((l) => l.includes('config reload rejected'))).toHaveLength(2);
    expect((await request(`http://127.0.0.1:${pub!.port}/v`)).json()).toEqual({ version: 1 });
  });

  it('a reload whose build fails (a cyclic mock body) is logged with the route path and counted', async () => {
    const file = tempFile(GOOD);
    const lines: string[] = [];
    const proc = await GatewayProcess.start({
      configPath: file,
      env: {},
      watch: false,
      logDestination: { write: (line: string) => void lines.push(line) },
    });
    cleanup.push(() => proc.shutdown());
    writeFileSync(file, GOOD.replace('mock: { body: { version: 1 } }', 'mock: { body: &a [*a] }'));
    expect(await proc.reload()).toBe(false);
    const rejected = JSON.parse(lines.find((l) => l.includes('config reload rejected'))!) as {
      issues: Array<{ path: string }>;
    };
    expect(rejected.issues.map((i) => i.path)).toEqual(['routes[0]']);
    expect(proc.gateway.reloadStatus).toMatchObject({ failures: 1, lastSuccess: false });
  });
});

describe('the startup log line (14.8)', () => {
  it('names the public, admin and console URLs and keeps the listen and admin fields', async () => {
    const child = spawnCli(['--config', tempFile(GOOD)]);
    cleanup.push(() => child.stop());
    const line = await child.waitForLog('tollgate listening', 15_000);
    expect(line.msg).toBe('tollgate listening');
    expect(line.listen).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(line.admin).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(line.url).toBe(`http://${String(line.listen)}/`);
    expect(line.admin_url).toBe(`http://${String(line.admin)}/`);
    expect(line.console_url).toBe(`http://${String(line.admin)}/console/`);
    const page = await request(String(line.console_url));
    expect(page.status).toBe(200);
    expect(page.text).toContain('Tollgate console');
  });
});
