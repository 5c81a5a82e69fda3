import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { startGateway } from '../helpers/gateway.js';
import { waitFor } from '../helpers/http.js';

// A real Prometheus (Debian's `prometheus` package; .ci/run installs it) scrapes a running gateway
// and answers one of the Grafana dashboard's queries; promtool checks the alert rules. Without the
// binaries this fails, naming the package: a dashboard nobody ran is not checked.
const root = join(import.meta.dirname, '..', '..');
const WAIT_MS = 30_000;

function binary(name: string): string {
  for (const dir of [...(process.env.PATH ?? '').split(delimiter), '/usr/bin', '/usr/local/bin']) {
    const file = join(dir, name);
    if (dir && existsSync(file)) return file;
  }
  throw new Error(
    `${name} is not installed: install Debian's prometheus package (apt-get install prometheus), as .ci/run does`,
  );
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

interface Panel {
  title: string;
  targets: Array<{ expr: string }>;
}

/** A panel's query as Grafana sends it with every job selected (`$job` → `.*`). */
function dashboardQuery(title: string): string {
  const dashboard = JSON.parse(readFileSync(join(root, 'ops/grafana/tollgate.json'), 'utf8')) as {
    panels: Panel[];
  };
  const panel = dashboard.panels.find((p) => p.title === title);
  expect(panel, `the dashboard has a "${title}" panel`).toBeDefined();
  return panel!.targets[0]!.expr.replaceAll('$job', '.*');
}

const dir = mkdtempSync(join(tmpdir(), 'tollgate-prometheus-'));
const cleanup: Array<() => Promise<void> | void> = [() => rmSync(dir, { recursive: true, force: true })];
afterAll(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

describe('operations: Prometheus and the dashboard', { timeout: 3 * WAIT_MS }, () => {
  it('promtool accepts the alert rules, and rules and dashboard use only metrics the gateway has (or the webhook queue)', async () => {
    const { stdout } = await promisify(execFile)(
      binary('promtool'),
      ['check', 'rules', join(root, 'ops/prometheus/alerts.yml')],
      { timeout: WAIT_MS },
    );
    expect(stdout).toMatch(/SUCCESS: \d+ rules found/);
    const metricsDoc = readFileSync(join(root, 'docs/metrics.md'), 'utf8');
    // The rules and the dashboard alike.
    const rules =
      readFileSync(join(root, 'ops/prometheus/alerts.yml'), 'utf8') +
      readFileSync(join(root, 'ops/grafana/tollgate.json'), 'utf8');
    const used = new Set([...rules.matchAll(/\b(tollgate_[a-z_]+?)(?:_bucket)?\b/g)].map((m) => m[1]!));
    for (const name of used)
      if (name !== 'tollgate_webhook_queue_depth')
        expect(metricsDoc, `${name} is in docs/metrics.md`).toContain(`\`${name}\``);
  });

  it('scrapes a running gateway and answers a dashboard query', async () => {
    const prometheus = binary('prometheus');
    const gw = await startGateway({ routes: [{ id: 'demo', path: '/demo', mock: { body: { ok: true } } }] });
    cleanup.push(() => gw.close());
    const port = await freePort();
    const config = join(dir, 'prometheus.yml');
    writeFileSync(
      config,
      [
        'global: { scrape_interval: 1s, evaluation_interval: 1s }',
        'scrape_configs:',
        '  - job_name: tollgate',
        `    static_configs: [ { targets: ["${new URL(gw.adminUrl).host}"] } ]`,
        '',
      ].join('\n'),
    );
    let log = '';
    const child: ChildProcess = spawn(
      prometheus,
      [
        `--config.file=${config}`,
        `--storage.tsdb.path=${join(dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${port}`,
        '--storage.tsdb.retention.time=1h',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    child.stdout!.on('data', (c: Buffer) => (log += c.toString()));
    child.stderr!.on('data', (c: Buffer) => (log += c.toString()));
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    cleanup.push(async () => {
      child.kill('SIGTERM');
      await exited;
    });
    const api = `http://127.0.0.1:${port}`;
    await waitFor(
      async () => (await fetch(`${api}/-/ready`).catch(() => undefined))?.status === 200,
      WAIT_MS,
    ).catch(() => {
      throw new Error(`prometheus did not get ready in ${WAIT_MS} ms:\n${log.slice(-2000)}`);
    });

    // Traffic for the dashboard's first panel, then its query until Prometheus has two scrapes of it.
    for (let i = 0; i < 5; i++) expect((await fetch(`${gw.url}/demo`)).status).toBe(200);
    const query = dashboardQuery('Requests per second by route');
    let last: unknown;
    let found: { metric: Record<string, string>; value: [number, string] } | undefined;
    await waitFor(
      async () => {
        for (let i = 0; i < 2; i++) await fetch(`${gw.url}/demo`);
        const res = await fetch(`${api}/api/v1/query?query=${encodeURIComponent(query)}`);
        const body = (await res.json()) as {
          status: string;
          data: { result: Array<{ metric: Record<string, string>; value: [number, string] }> };
        };
        last = body;
        found = body.data.result.find((r) => r.metric.route === 'demo' && Number(r.value[1]) > 0);
        return found !== undefined;
      },
      WAIT_MS,
      250,
      () => `no rate for route demo: ${JSON.stringify(last)}\n${log.slice(-2000)}`,
    );
    expect(found!.metric).toEqual({ route: 'demo' });
  });
});
