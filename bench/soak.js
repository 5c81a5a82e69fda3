#!/usr/bin/env node
// Soak: the full pipeline on Redis at a fixed request rate for DURATION seconds (default 60),
// reporting errors (must be 0), latency percentiles and the gateway's RSS over time.
// `npm run soak` (env: DURATION, RATE, CONNECTIONS). 127.0.0.1 only; every process is stopped.
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { rssMb } from './lib/proc.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = join(HERE, '..');
const DURATION = Number(process.env.DURATION ?? 60);
const RATE = Number(process.env.RATE ?? 2000);
const CONNECTIONS = Number(process.env.CONNECTIONS ?? 20);
const TOKEN = 'soak-admin-token-0123456789';
const TMP = mkdtempSync(join(os.tmpdir(), 'tollgate-soak-'));
const children = [];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const freePort = () =>
  new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });

function start(name, cmd, args, env = {}) {
  const out = openSync(join(TMP, `${name}.log`), 'a');
  const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', out, out] });
  children.push(child);
  return child;
}

async function until(check, ms) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await check().catch(() => false)) return;
    await sleep(100);
  }
  throw new Error('timed out waiting');
}

const get = (url) =>
  new Promise((resolve) => {
    const req = http.get(url, { agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('error', () => resolve(0));
  });

function postJson(url, body, headers) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      url,
      { method: 'POST', agent: false, headers: { 'content-type': 'application/json', ...headers } },
      (res) => {
        let text = '';
        res.on('data', (c) => (text += c));
        res.on('end', () => resolve(JSON.parse(text)));
      },
    );
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

async function main() {
  if (spawnSync('redis-server', ['--version']).error) throw new Error('needs redis-server');
  const upPort = await freePort();
  start('upstream', process.execPath, [join(HERE, 'servers/upstream.cjs')], { PORT: String(upPort) });
  const redisPort = await freePort();
  start('redis', 'redis-server', [
    '--port',
    String(redisPort),
    '--bind',
    '127.0.0.1',
    '--save',
    '',
    '--appendonly',
    'no',
  ]);
  const port = await freePort();
  const adminPort = await freePort();
  const config = join(TMP, 'gateway.yaml');
  writeFileSync(
    config,
    `listen: { host: 127.0.0.1, port: ${port} }
admin: { host: 127.0.0.1, port: ${adminPort}, tokens: ["${TOKEN}"] }
redis: { url: "redis://127.0.0.1:${redisPort}", keyPrefix: "soak:" }
logging: { level: info, format: json }
plans:
  soak:
    quota: { limit: 1000000000, period: month }
    rateLimits: [ { name: per-key, by: key, limit: 1000000000, windowSec: 60 } ]
routes:
  - id: api
    path: /api
    auth: { methods: [apiKey] }
    upstream: { targets: ["http://127.0.0.1:${upPort}"] }
    rateLimits:
      - { name: burst, by: ip, limit: 1000000000, windowSec: 1 }
      - { name: hourly, by: key, limit: 1000000000, windowSec: 3600 }
    quota: { cost: 1 }
`,
  );
  const gateway = start('gateway', process.execPath, [join(ROOT, 'bin/tollgate.js'), '--config', config], {
    NODE_ENV: 'production',
  });
  await until(async () => (await get(`http://127.0.0.1:${adminPort}/readyz`)) === 200, 20_000);
  const { key } = await postJson(
    `http://127.0.0.1:${adminPort}/keys`,
    { name: 'soak', plan: 'soak' },
    { authorization: `Bearer ${TOKEN}` },
  );
  const url = `http://127.0.0.1:${port}/api/hello`;
  // Warm up, then measure.
  spawnSync(
    process.execPath,
    [
      join(ROOT, 'node_modules/autocannon/autocannon.js'),
      '-c',
      '10',
      '-d',
      '3',
      '-H',
      `x-api-key: ${key}`,
      url,
    ],
    { stdio: 'ignore' },
  );
  const rss = [{ t: 0, mb: rssMb(gateway.pid) }];
  const sampler = setInterval(() => rss.push({ t: rss.length * 5, mb: rssMb(gateway.pid) }), 5000);
  const out = await new Promise((resolve, reject) => {
    const ac = spawn(
      process.execPath,
      [
        join(ROOT, 'node_modules/autocannon/autocannon.js'),
        '-c',
        String(CONNECTIONS),
        '-R',
        String(RATE),
        '-d',
        String(DURATION),
        '-j',
        '-H',
        `x-api-key: ${key}`,
        url,
      ],
      { stdio: ['ignore', 'pipe', 'ignore'] },
    );
    children.push(ac);
    let text = '';
    ac.stdout.on('data', (c) => (text += c));
    const timer = setTimeout(() => ac.kill('SIGKILL'), (DURATION + 30) * 1000);
    // 'close', not 'exit': the output may still be in the pipe when the process has exited.
    ac.on('close', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(JSON.parse(text.slice(text.indexOf('{'))));
      else reject(new Error(`autocannon exited ${code}`));
    });
  });
  clearInterval(sampler);
  if (rss.at(-1).t < DURATION) rss.push({ t: DURATION, mb: rssMb(gateway.pid) });
  const errors = out.errors + out.timeouts + out.non2xx;
  const report = {
    date: new Date().toISOString(),
    machine: `${os.cpus()[0]?.model} × ${os.cpus().length}, Node ${process.version}`,
    durationSec: DURATION,
    targetRate: RATE,
    connections: CONNECTIONS,
    requests: out.requests.total,
    achievedRate: Math.round(out.requests.average),
    errors,
    latencyMs: { p50: out.latency.p50, p99: out.latency.p99, max: out.latency.max },
    rssMb: {
      start: Math.round(rss[0].mb),
      end: Math.round(rss.at(-1).mb),
      max: Math.round(Math.max(...rss.map((r) => r.mb))),
    },
    rssSamples: rss.map((r) => ({ t: r.t, mb: Math.round(r.mb) })),
  };
  mkdirSync(join(HERE, 'results'), { recursive: true });
  writeFileSync(
    join(HERE, 'results', `soak-${report.date.replace(/[:.]/g, '-')}.json`),
    JSON.stringify(report, null, 2),
  );
  console.log(JSON.stringify(report, null, 2));
  if (errors > 0) process.exitCode = 1;
}

main()
  .catch((err) => {
    console.error(err);
    process.exitCode = 1;
  })
  .finally(async () => {
    for (const c of children) c.kill('SIGTERM');
    await sleep(500);
    for (const c of children) c.kill('SIGKILL');
    rmSync(TMP, { recursive: true, force: true });
  });
