// Shared plumbing of the benches (bench/ws.js, bench/scale.js, bench/side-by-side.js, README blocks): child
// processes with their logs in a temporary directory, a private redis-server, bounded waits,
// and Redis' own accounting (INFO commandstats). Everything binds 127.0.0.1.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const log = (...a) => console.error(`[${new Date().toISOString().slice(11, 19)}]`, ...a);

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Child processes of one bench run; `stop()` ends them (SIGTERM, then SIGKILL) and removes the logs. */
export class Processes {
  constructor(name) {
    this.dir = mkdtempSync(join(os.tmpdir(), `tollgate-${name}-`));
    this.children = new Set();
  }

  start(name, cmd, args, env = {}) {
    const out = openSync(join(this.dir, `${name}.log`), 'a');
    const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', out, out] });
    this.children.add(child);
    child.on('exit', () => this.children.delete(child));
    return child;
  }

  async kill(child) {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  }

  async stop() {
    await Promise.all([...this.children].map((c) => this.kill(c)));
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export async function waitForHttp(url, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise((resolve) => {
      const req = http.get(url, { agent: false }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode !== undefined && res.statusCode < 500));
      });
      req.on('error', () => resolve(false));
      req.setTimeout(1000, () => req.destroy());
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`${url} did not answer within ${timeoutMs} ms`);
    await sleep(100);
  }
}

export function httpJson(method, url, body, headers = {}) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request(
      url,
      { method, agent: false, headers: { 'content-type': 'application/json', ...headers } },
      (res) => {
        let text = '';
        res.on('data', (c) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode, body: text ? JSON.parse(text) : undefined }));
      },
    );
    req.on('error', reject);
    req.setTimeout(5000, () => req.destroy(new Error('timeout')));
    req.end(data);
  });
}

export const hasRedisServer = () => spawnSync('redis-server', ['--version']).error === undefined;

/** A private redis-server (no persistence) on a free port: `{url, pid, client}`. */
export async function startRedis(procs, name = 'redis') {
  const port = await freePort();
  const child = procs.start(name, 'redis-server', [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--save',
    '',
    '--appendonly',
    'no',
  ]);
  const url = `redis://127.0.0.1:${port}`;
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  client.on('error', () => undefined);
  for (let i = 0; ; i++) {
    try {
      await client.connect();
      // The port could have been taken between freePort() and the bind: make sure it is ours.
      const info = await client.info('server');
      if (Number(/process_id:(\d+)/.exec(info)?.[1]) !== child.pid) throw new Error('not our redis-server');
      break;
    } catch (err) {
      if (i >= 50) throw err;
      client.disconnect();
      await sleep(100);
    }
  }
  return { url, pid: child.pid, client };
}

/** Redis' per-command accounting: `{ name: {calls, usec} }`, INFO and CONFIG left out. */
export async function commandStats(client) {
  const out = {};
  for (const m of (await client.info('commandstats')).matchAll(/cmdstat_([\w|]+):calls=(\d+),usec=(\d+)/g)) {
    if (/^(info|config|ping)/.test(m[1])) continue;
    out[m[1]] = { calls: Number(m[2]), usec: Number(m[3]) };
  }
  return out;
}

/** `after - before` of two `commandStats`, per request: `{ calls, usec, byCommand: {name: calls} }`. */
export function commandDelta(before, after, requests) {
  let calls = 0;
  let usec = 0;
  const byCommand = {};
  for (const [name, a] of Object.entries(after)) {
    const b = before[name] ?? { calls: 0, usec: 0 };
    const c = a.calls - b.calls;
    if (c <= 0) continue;
    calls += c;
    usec += a.usec - b.usec;
    byCommand[name] = c / requests;
  }
  return { calls: calls / requests, usec: usec / requests, byCommand };
}

export const median = (xs) => {
  const v = xs.filter((x) => x !== undefined && !Number.isNaN(x)).sort((a, b) => a - b);
  if (v.length === 0) return undefined;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
};

export const fmt = (v, d = 0) =>
  v === undefined ? '–' : v.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });

export function machine() {
  const load = os.loadavg().map((l) => l.toFixed(2));
  return {
    text: `${os.cpus()[0]?.model ?? 'cpu'} × ${os.cpus().length}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, ${os.type()} ${os.release()}, Node ${process.version}`,
    load: `load average ${load.join(', ')}`,
  };
}

/**
 * Replaces what README.md holds between `<!-- <name>:start -->` and `<!-- <name>:end -->` with
 * `text`, written as Prettier would (so `npm run format:check` stays green after a bench run).
 */
export async function writeReadmeBlock(readmePath, name, text) {
  const readme = readFileSync(readmePath, 'utf8');
  const start = readme.indexOf(`<!-- ${name}:start -->`);
  const end = readme.indexOf(`<!-- ${name}:end -->`);
  if (start === -1 || end === -1)
    throw new Error(`README.md has no <!-- ${name}:start --> / <!-- ${name}:end --> markers`);
  const updated = `${readme.slice(0, start)}<!-- ${name}:start -->\n\n${text}\n${readme.slice(end)}`;
  const prettier = await import('prettier');
  const options = (await prettier.resolveConfig(readmePath)) ?? {};
  writeFileSync(readmePath, await prettier.format(updated, { ...options, filepath: readmePath }));
}
