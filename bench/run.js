#!/usr/bin/env node
// Tollgate benchmark: Tollgate in several configurations against the baselines, interleaved
// round by round, on 127.0.0.1 only. `npm run bench` (quick, < 3 min) or `npm run bench -- --full`
// (which ends with bench/side-by-side.js: proxy only and the Node floor loaded at the same time).
// Options: --full · --only a,b · --tools wrk,autocannon · --readme · --ws (bench/ws.js) · --scale [--variants] (bench/scale.js)
// · --rounds N · --duration S · --base <checkout> (same-round A/B) · --slowlog (Redis time by script) · --pin-redis (Redis on a core of its own)
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { SignJWT, exportSPKI, generateKeyPair } from 'jose';
import { writeReadmeBlock } from './lib/harness.js';
import { cpuMicros, rssMb } from './lib/proc.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = join(HERE, '..');
const { values: opts } = parseArgs({
  options: {
    full: { type: 'boolean', default: false },
    only: { type: 'string' },
    tools: { type: 'string' },
    readme: { type: 'boolean', default: false },
    // Separate benches, own files: the WebSocket echo rows (issue 17) and the scale bench (issue 20).
    ws: { type: 'boolean', default: false },
    scale: { type: 'boolean', default: false },
    variants: { type: 'boolean', default: false },
    rounds: { type: 'string' },
    duration: { type: 'string' },
    // Same-round A/B: every Tollgate row also runs from another built checkout (its bin/ and dist/).
    base: { type: 'string' },
    // Where each Redis row's Redis time goes, by script and key (SLOWLOG of every command; it
    // costs Redis a little itself, so the CPU columns of such a run read a little high).
    slowlog: { type: 'boolean', default: false },
    // Redis on a core of its own (the last), everything else on the others, as a production Redis
    // would run: its CPU per request without the cache and scheduling noise of sharing a core with
    // the gateway, the upstream and the load generator (on 2 cores those get one core between them).
    'pin-redis': { type: 'boolean', default: false },
  },
});
/** The checkout the next startTollgate call runs (read before its first await). */
let tollgateRoot = ROOT;
const hasWrk = spawnSync('wrk', ['--version']).error === undefined;
const S = opts.full
  ? { rounds: 3, duration: 8, warmup: 2, c1Ms: 4000, connections: 50 }
  : { rounds: 2, duration: 3, warmup: 1, c1Ms: 1500, connections: 50 };
// `--rounds N` and `--duration S` override the preset's.
if (opts.rounds !== undefined) S.rounds = Number(opts.rounds);
if (opts.duration !== undefined) S.duration = Number(opts.duration);
const TOOLS = opts.tools
  ? opts.tools.split(',')
  : hasWrk
    ? opts.full
      ? ['wrk', 'autocannon']
      : ['wrk']
    : ['autocannon'];
const PATH = '/api/hello';
const ADMIN_TOKEN = 'bench-admin-token-0123456789';
const JWT_SECRET = 'tollgate-bench-secret-0123456789abcdef';
const children = new Set();
const log = (...a) => console.error(`[${new Date().toISOString().slice(11, 19)}]`, ...a);

// ---------------------------------------------------------------------------------- helpers
function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function start(name, cmd, args, env = {}) {
  const out = openSync(join(TMP, `${name}.log`), 'a');
  const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', out, out, 'ipc'] });
  children.add(child);
  child.on('exit', () => children.delete(child));
  return child;
}

async function waitForHttp(url, headers = {}, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise((resolve) => {
      const req = http.get(url, { headers, agent: false }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode !== undefined && res.statusCode < 500));
      });
      req.on('error', () => resolve(false));
      req.setTimeout(1000, () => req.destroy());
    });
    if (ok) return;
    if (Date.now() > deadline)
      throw new Error(`${url} did not answer within ${timeoutMs} ms (logs in ${TMP})`);
    await sleep(100);
  }
}

function httpJson(method, url, body, headers = {}, agent = false) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request(
      url,
      { method, agent, headers: { 'content-type': 'application/json', ...headers } },
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

function run(cmd, args, timeoutMs) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    let out = '';
    child.stdout.on('data', (c) => (out += c));
    child.stderr.on('data', (c) => (out += c));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    // 'close', not 'exit': the output may still be in the pipe when the process has exited.
    child.on('close', (code) => {
      clearTimeout(timer);
      children.delete(child);
      if (code === 0) resolve(out);
      else reject(new Error(`${cmd} exited ${code}: ${out.slice(-500)}`));
    });
  });
}

// ------------------------------------------------------------------------------ load tools
async function load(tool, url, headers, seconds, keysFile) {
  const hdr = Object.entries(headers).flatMap(([k, v]) => ['-H', `${k}: ${v}`]);
  if (tool === 'wrk') {
    // With a keys file, every request carries the next of many keys (bench/lib/keys.lua).
    process.env.TOLLGATE_BENCH_KEYS = keysFile ?? '';
    process.env.TOLLGATE_BENCH_REPORT = join(HERE, 'lib/report.lua');
    const script = join(HERE, keysFile ? 'lib/keys.lua' : 'lib/report.lua');
    const out = await run(
      'wrk',
      ['-t1', `-c${S.connections}`, `-d${seconds}s`, '-s', script, ...hdr, url],
      (seconds + 15) * 1000,
    );
    const r = JSON.parse(out.slice(out.indexOf('WRKJSON ') + 8).split('\n')[0]);
    const errors = r.err_connect + r.err_read + r.err_write + r.err_status + r.err_timeout;
    return { requests: r.requests, rps: r.rps, p50: r.p50_ms, p99: r.p99_ms, errors };
  }
  const bin = join(ROOT, 'node_modules/autocannon/autocannon.js');
  const out = keysFile
    ? await run(
        process.execPath,
        [join(HERE, 'lib/keys-load.js'), url, keysFile, String(S.connections), String(seconds)],
        (seconds + 20) * 1000,
      )
    : await run(
        process.execPath,
        [bin, '-c', String(S.connections), '-d', String(seconds), '-j', ...hdr, url],
        (seconds + 20) * 1000,
      );
  const r = JSON.parse(out.slice(out.indexOf('{')));
  return {
    requests: r.requests.total,
    rps: r.requests.average,
    p50: r.latency.p50,
    p99: r.latency.p99,
    errors: r.errors + r.timeouts + r.non2xx,
  };
}

/** One connection, one request at a time: the unloaded round trip, in µs (wrk when installed: µs resolution, no JS client jitter). */
async function roundTrip(url, headers, ms) {
  if (hasWrk) {
    const hdr = Object.entries(headers).flatMap(([k, v]) => ['-H', `${k}: ${v}`]);
    const seconds = Math.max(1, Math.round(ms / 1000));
    const out = await run(
      'wrk',
      ['-t1', '-c1', `-d${seconds}s`, '-s', join(HERE, 'lib/report.lua'), ...hdr, url],
      (seconds + 15) * 1000,
    );
    const r = JSON.parse(out.slice(out.indexOf('WRKJSON ') + 8).split('\n')[0]);
    return { p50: r.p50_ms * 1000, p99: r.p99_ms * 1000 };
  }
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const samples = [];
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const t0 = process.hrtime.bigint();
    await new Promise((resolve, reject) => {
      const req = http.get(url, { agent, headers }, (res) => {
        res.resume();
        res.on('end', resolve);
      });
      req.on('error', reject);
    });
    samples.push(Number(process.hrtime.bigint() - t0) / 1000);
  }
  agent.destroy();
  samples.sort((a, b) => a - b);
  const q = (p) => samples[Math.min(samples.length - 1, Math.floor((samples.length * p) / 100))];
  return { p50: q(50), p99: q(99) };
}

// ------------------------------------------------------------------------------- scenarios
const TMP = mkdtempSync(join(os.tmpdir(), 'tollgate-bench-'));
const RESULTS = join(HERE, 'results');

const BENCH_ORIGIN = 'http://app.bench.test';

function tollgateYaml(o) {
  const limits = `rateLimits:
      - { name: burst, by: ip, limit: 1000000000, windowSec: 1 }
      - { name: hourly, by: key, limit: 1000000000, windowSec: 3600 }`;
  const lines = [
    `listen: { host: 127.0.0.1, port: ${o.port} }`,
    `admin: { host: 127.0.0.1, port: ${o.adminPort}, tokens: ["${ADMIN_TOKEN}"] }`,
    `logging: { level: info, format: json }`,
    `workers: ${o.workers ?? 1}`,
    `server: { viaExpress: ${o.viaExpress === true} }`,
  ];
  if (o.redis) lines.push(`redis: { url: "${o.redis}", keyPrefix: "bench:${o.name}:" }`);
  if (o.auth === 'apiKey') {
    lines.push(`plans:
  bench:
    quota: { limit: 1000000000000, period: month }
    rateLimits: [ { name: per-key, by: key, limit: 1000000000, windowSec: 60 } ]`);
  }
  if (o.auth === 'hs256')
    lines.push(
      `auth: { jwt: [ { issuer: bench-issuer, audience: bench-audience, secret: "${JWT_SECRET}" } ] }`,
    );
  if (o.auth === 'rs256')
    lines.push(
      `auth:\n  jwt:\n    - issuer: bench-issuer\n      audience: bench-audience\n      algorithms: [RS256]\n      publicKey: |\n${o.publicKey
        .trim()
        .split('\n')
        .map((l) => '        ' + l)
        .join('\n')}`,
    );
  // CORS + IP rules (issue 16): an allowed origin from an allowed address, so both do their work.
  if (o.corsIp)
    lines.push(
      `cors: { origins: ["${BENCH_ORIGIN}"] }`,
      `ipRules: { allow: ["127.0.0.0/8", "::1"], deny: ["203.0.113.0/24", "2001:db8::/32"] }`,
    );
  lines.push('routes:');
  if (o.mock)
    lines.push(
      `  - { id: api, path: /api, mock: { body: { ok: true, service: bench-mock, items: [1, 2, 3] } } }`,
    );
  else {
    const auth = o.auth === undefined ? 'none' : `{ methods: [${o.auth === 'apiKey' ? 'apiKey' : 'jwt'}] }`;
    lines.push(`  - id: api
    path: /api
    auth: ${auth}
    upstream: { targets: ["${o.upstream}"] }`);
    // issue 18: one meter limit more (the upstream reports x-usage-tokens); issue 17: a concurrency limit.
    const meter = o.meter
      ? '\n      - { name: tokens, by: key, limit: 1000000000000000, windowSec: 86400, meter: tokens }'
      : '';
    if (o.auth) lines.push(`    ${limits}${meter}\n    quota: { cost: 1 }`);
    if (o.meter) lines.push('    meters: { tokens: { responseHeader: x-usage-tokens } }');
    if (o.concurrency) lines.push('    concurrency: { limit: 1000000, by: key }');
    if (o.corsIp)
      lines.push(
        `    headers: { request: { set: { x-api-version: "2" } }, response: { set: { cache-control: no-store } } }`,
      );
  }
  return lines.join('\n') + '\n';
}

async function startTollgate(given, o) {
  const root = tollgateRoot;
  const name = root === ROOT ? given : `${given}-base`;
  const port = await freePort();
  const adminPort = await freePort();
  const file = join(TMP, `${name}.yaml`);
  writeFileSync(file, tollgateYaml({ ...o, name, port, adminPort }));
  const child = start(name, process.execPath, [join(root, 'bin/tollgate.js'), '--config', file], {
    NODE_ENV: 'production',
  });
  const admin = `http://127.0.0.1:${adminPort}`;
  await waitForHttp(`${admin}/healthz`);
  await waitForHttp(`http://127.0.0.1:${port}/api`, {}, 20_000).catch(() => undefined);
  let headers = {};
  if (o.auth === 'apiKey') {
    const created = await httpJson(
      'POST',
      `${admin}/keys`,
      { name: 'bench', plan: 'bench' },
      { authorization: `Bearer ${ADMIN_TOKEN}` },
    );
    if (created.status !== 201)
      throw new Error(`${name}: creating a key failed (${created.status} ${JSON.stringify(created.body)})`);
    headers = { 'x-api-key': created.body.key };
  }
  let keysFile;
  if (o.keys !== undefined) {
    // Many distinct keys (an API product's real cardinality): created through the admin API,
    // 16 at a time, and sent in turn by the load generator.
    const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
    const keys = [];
    let made = 0;
    let failed;
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (made < o.keys && failed === undefined) {
          made++;
          // A loaded machine may answer 503 (a Redis command timed out): tried again, a few times.
          for (let attempt = 1; ; attempt++) {
            const created = await httpJson(
              'POST',
              `${admin}/keys`,
              { name: 'bench', plan: 'bench' },
              { authorization: `Bearer ${ADMIN_TOKEN}` },
              agent,
            );
            if (created.status === 201) {
              keys.push(created.body.key);
              break;
            }
            if (attempt === 5) {
              failed = new Error(`${name}: creating a key failed (${created.status})`);
              break;
            }
            await sleep(100 * attempt);
          }
        }
      }),
    );
    if (failed) throw failed;
    agent.destroy();
    keysFile = join(TMP, `${name}.keys`);
    writeFileSync(keysFile, keys.join('\n') + '\n');
    headers = {};
  }
  if (o.token) headers = { authorization: `Bearer ${o.token}` };
  if (o.corsIp) headers = { ...headers, origin: BENCH_ORIGIN };
  return { pid: child.pid, url: `http://127.0.0.1:${port}${PATH}`, headers, redis: o.redis, keysFile };
}

async function startBaseline(name, script, env) {
  const port = await freePort();
  const child = start(name, process.execPath, [join(HERE, 'servers', script)], {
    ...env,
    PORT: String(port),
    NODE_PATH: join(HERE, 'baselines/node_modules'),
  });
  await waitForHttp(`http://127.0.0.1:${port}${PATH}`);
  return { pid: child.pid, url: `http://127.0.0.1:${port}${PATH}`, headers: {} };
}

async function signTokens() {
  const base = () =>
    new SignJWT({ scope: 'bench' })
      .setSubject('bench-client')
      .setIssuer('bench-issuer')
      .setAudience('bench-audience')
      .setIssuedAt()
      .setExpirationTime('2h');
  const hs256 = await base().setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode(JWT_SECRET));
  const { publicKey, privateKey } = await generateKeyPair('RS256');
  const rs256 = await base().setProtectedHeader({ alg: 'RS256' }).sign(privateKey);
  return { hs256, rs256, publicPem: await exportSPKI(publicKey) };
}

// ------------------------------------------------------------------------------------ main
async function main() {
  if (!existsSync(join(ROOT, 'dist/cli/index.js'))) throw new Error('build first: npm run build');
  if (opts.ws) return (await import('./ws.js')).runWsBench(process.argv.slice(2));
  if (opts.scale) return (await import('./scale.js')).runScaleBench(process.argv.slice(2));
  if (!existsSync(join(HERE, 'baselines/node_modules'))) {
    log('installing the baselines (bench/baselines)…');
    spawnSync('npm', ['ci', '--no-audit', '--no-fund', '--loglevel=error'], {
      cwd: join(HERE, 'baselines'),
      stdio: 'inherit',
    });
  }
  const cpus = os.availableParallelism();
  const pin = opts['pin-redis'] && cpus > 1 && spawnSync('taskset', ['-V']).error === undefined;
  if (opts['pin-redis'] && !pin) log('--pin-redis needs taskset and 2 or more CPUs: not pinned');
  // Everything started after this (upstreams, gateways, wrk) inherits the bench's CPUs.
  if (pin) spawnSync('taskset', ['-a', '-p', '-c', `0-${cpus - 2}`, String(process.pid)]);
  const upPort = await freePort();
  start('upstream', process.execPath, [join(HERE, 'servers/upstream.cjs')], { PORT: String(upPort) });
  const upstream = `http://127.0.0.1:${upPort}`;
  await waitForHttp(`${upstream}${PATH}`);

  let redisUrl;
  if (spawnSync('redis-server', ['--version']).error === undefined) {
    const port = await freePort();
    start('redis', pin ? 'taskset' : 'redis-server', [
      ...(pin ? ['-c', String(cpus - 1), 'redis-server'] : []),
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--save',
      '',
      '--appendonly',
      'no',
    ]);
    redisUrl = `redis://127.0.0.1:${port}`;
    const probe = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 });
    probe.on('error', () => undefined);
    for (let i = 0; i < 50; i++) {
      try {
        await probe.connect();
        break;
      } catch {
        await sleep(100);
      }
    }
    probe.disconnect();
  }
  const tokens = await signTokens();

  const scenarios = [
    {
      name: 'direct upstream (ceiling)',
      key: 'direct',
      start: async () => ({ pid: undefined, url: `${upstream}${PATH}`, headers: {} }),
    },
    {
      name: 'Express 5 + http-proxy-middleware (baseline)',
      key: 'express',
      baseline: true,
      start: () => startBaseline('express', 'express-hpm.cjs', { UPSTREAM: upstream }),
    },
    {
      name: 'Node floor: node:http + http.request, no framework (reference)',
      key: 'node-floor',
      start: () => startBaseline('node-floor', 'node-floor.cjs', { UPSTREAM: upstream }),
    },
    {
      name: 'Express 5 res.json (mock baseline)',
      key: 'express-json',
      start: () => startBaseline('express-json', 'express-json.cjs', {}),
    },
    {
      name: 'fast-gateway 5.0.1',
      key: 'fast-gateway',
      start: () => startBaseline('fast-gateway', 'fast-gateway.cjs', { UPSTREAM: upstream }),
    },
    {
      name: 'express-gateway 1.16.11',
      key: 'express-gateway',
      start: () => startBaseline('express-gateway', 'express-gateway/run.cjs', { UPSTREAM: upstream }),
    },
    {
      name: 'Tollgate mock route',
      key: 'tg-mock',
      ratioTo: 'express-json',
      start: () => startTollgate('tg-mock', { mock: true }),
    },
    { name: 'Tollgate proxy only', key: 'tg-proxy', start: () => startTollgate('tg-proxy', { upstream }) },
    {
      // Issue 16's row: CORS, IP rules and two header transforms (one request, one response).
      name: 'Tollgate proxy, cors+ip+headers (CORS + IP rules + two header transforms)',
      key: 'tg-cors-ip',
      start: () => startTollgate('tg-cors-ip', { upstream, corsIp: true }),
    },
    {
      name: 'Tollgate proxy only, through Express (server.viaExpress)',
      key: 'tg-proxy-express',
      start: () => startTollgate('tg-proxy-express', { upstream, viaExpress: true }),
    },
    {
      name: 'Tollgate full pipeline, memory',
      key: 'tg-full',
      start: () => startTollgate('tg-full', { upstream, auth: 'apiKey' }),
    },
    ...(redisUrl
      ? [
          {
            name: 'Tollgate full pipeline, Redis',
            key: 'tg-full-redis',
            start: () => startTollgate('tg-full-redis', { upstream, auth: 'apiKey', redis: redisUrl }),
          },
          {
            name: 'Tollgate full pipeline, Redis + one meter limit',
            key: 'tg-full-redis-meter',
            start: async () => {
              // Its own upstream, which reports the meter (x-usage-tokens: 17) on every answer.
              const port = await freePort();
              start('upstream-meter', process.execPath, [join(HERE, 'servers/upstream.cjs')], {
                PORT: String(port),
                USAGE_TOKENS: '17',
              });
              await waitForHttp(`http://127.0.0.1:${port}${PATH}`);
              return startTollgate('tg-full-redis-meter', {
                upstream: `http://127.0.0.1:${port}`,
                auth: 'apiKey',
                redis: redisUrl,
                meter: true,
              });
            },
          },
          {
            name: 'Tollgate full pipeline, Redis + concurrency limit',
            key: 'tg-full-redis-cc',
            start: () =>
              startTollgate('tg-full-redis-cc', {
                upstream,
                auth: 'apiKey',
                redis: redisUrl,
                concurrency: true,
              }),
          },
          {
            name: 'Tollgate full pipeline, Redis, 12,000 keys',
            key: 'tg-full-redis-12k',
            start: () =>
              startTollgate('tg-full-redis-12k', { upstream, auth: 'apiKey', redis: redisUrl, keys: 12_000 }),
          },
        ]
      : []),
    {
      name: 'Tollgate JWT HS256 (full)',
      key: 'tg-jwt-hs256',
      start: () => startTollgate('tg-jwt-hs256', { upstream, auth: 'hs256', token: tokens.hs256 }),
    },
    {
      name: 'Tollgate JWT RS256 (full)',
      key: 'tg-jwt-rs256',
      start: () =>
        startTollgate('tg-jwt-rs256', {
          upstream,
          auth: 'rs256',
          token: tokens.rs256,
          publicKey: tokens.publicPem,
        }),
    },
    // More than one worker needs Redis (the config is refused without it).
    ...(redisUrl
      ? [
          {
            name: 'Tollgate proxy only, workers: 2',
            key: 'tg-proxy-2w',
            start: () => startTollgate('tg-proxy-2w', { upstream, workers: 2, redis: redisUrl }),
          },
        ]
      : []),
    {
      name: 'Express + HPM, node:cluster × 2',
      key: 'express-2w',
      start: () => startBaseline('express-2w', 'express-hpm-cluster.cjs', { UPSTREAM: upstream }),
    },
  ].filter((s) => !opts.only || opts.only.split(',').includes(s.key) || s.baseline || s.key === 'direct');
  if (opts.base)
    for (const s of scenarios.filter((x) => x.key.startsWith('tg-')))
      scenarios.push({
        ...s,
        name: `${s.name} [base]`,
        key: `${s.key}@base`,
        start: () => {
          tollgateRoot = opts.base;
          const started = s.start();
          tollgateRoot = ROOT;
          return started;
        },
      });

  log(`starting ${scenarios.length} servers (logs in ${TMP})`);
  const running = new Map();
  for (const s of scenarios) {
    try {
      running.set(s.key, await s.start());
    } catch (err) {
      log(`skipping ${s.name}: ${err.message}`);
    }
  }
  const active = scenarios.filter((s) => running.has(s.key));
  const results = []; // {key, tool, round, rps, p50, p99, cpuPerReq, rss, errors, redisCmds}
  const c1 = []; // {key, round, p50, p99}
  const redis = redisUrl ? new Redis(redisUrl) : undefined;
  // Commands Redis ran (those inside scripts included), by command; script calls (the hot path's
  // round trips); the time spent in commands (commandstats usec, a script's counted once: its usec
  // already holds the commands it ran, which are left out of the sum); and the server's own CPU
  // time (INFO cpu: commands, networking and all — this private redis-server serves only the bench).
  const commandCount = async () => {
    const info = await redis.info('commandstats');
    const cpu = await redis.info('cpu');
    let all = 0;
    let scripts = 0;
    const byCmd = {};
    for (const m of info.matchAll(/cmdstat_([\w|]+):calls=(\d+),usec=(\d+)/g)) {
      if (['info', 'ping', 'config|resetstat'].includes(m[1])) continue;
      all += Number(m[2]);
      byCmd[m[1]] = { calls: Number(m[2]), usec: Number(m[3]) };
      if (m[1] === 'evalsha' || m[1] === 'eval') scripts += Number(m[2]);
    }
    const field = (name) => Number(new RegExp(`${name}:([\\d.]+)`).exec(cpu)?.[1] ?? 0);
    return { all, scripts, byCmd, cpuUs: (field('used_cpu_user') + field('used_cpu_sys')) * 1e6 };
  };
  // Commands that Tollgate runs inside its scripts (their usec is inside the script's), left out
  // of the sum: counting them would count every script's writes twice. Some of them also run on
  // their own, and are left out with the rest (commandstats cannot tell the two apart): the audit
  // flush's HSETNX, HSET, PEXPIRE and XADD (about 0.5 µs per record, `node bench/audit-flush.js`),
  // `lastUsedAt`'s HSET every 5 s, and the key lookups' MGET when a cached record's 5 s are up
  // (with 12,000 keys, about one lookup per 1.7 requests, in MGETs of ten or so). So the sum is
  // low by about that much; the redis-server CPU column (INFO cpu) counts everything.
  const IN_SCRIPTS_ONLY = new Set([
    'incrby',
    'decrby',
    'mget',
    'hmget',
    'hgetall',
    'hincrby',
    'hdel',
    'hset',
    'hsetnx',
    'set',
    'pexpire',
    'expireat',
    'xadd',
  ]);
  const redisDelta = (a, b, requests) => {
    const byCmd = {};
    let usec = 0;
    for (const [cmd, v] of Object.entries(b.byCmd)) {
      const calls = v.calls - (a.byCmd[cmd]?.calls ?? 0);
      const us = v.usec - (a.byCmd[cmd]?.usec ?? 0);
      if (calls > 0) byCmd[cmd] = calls / requests;
      if (!IN_SCRIPTS_ONLY.has(cmd)) usec += us;
    }
    return { byCmd, usecPerReq: usec / requests, cpuPerReq: (b.cpuUs - a.cpuUs) / requests };
  };

  const t0 = Date.now();
  for (let round = 1; round <= S.rounds; round++) {
    const order = [...active].sort(() => Math.random() - 0.5);
    for (const tool of TOOLS) {
      for (const s of order) {
        const r = running.get(s.key);
        await load(tool, r.url, r.headers, S.warmup, r.keysFile).catch(() => undefined);
        const cpu0 = r.pid ? cpuMicros(r.pid) : 0;
        const cmds0 = r.redis ? await commandCount() : undefined;
        if (opts.slowlog && r.redis) {
          await redis.config('SET', 'slowlog-log-slower-than', '0');
          await redis.config('SET', 'slowlog-max-len', '1000000');
          await redis.slowlog('RESET');
        }
        let m;
        try {
          m = await load(tool, r.url, r.headers, S.duration, r.keysFile);
        } catch (err) {
          log(`${s.key} ${tool}: ${err.message}`);
          continue;
        }
        const cpu = r.pid ? cpuMicros(r.pid) - cpu0 : undefined;
        const cmds1 = r.redis ? await commandCount() : undefined;
        if (opts.slowlog && r.redis)
          log(`${s.key} ${tool} round ${round}:\n${await slowlogTable(redis, m.requests)}`);
        const redisCmds = cmds1 && cmds0 ? (cmds1.all - cmds0.all) / m.requests : undefined;
        const redisScripts = cmds1 && cmds0 ? (cmds1.scripts - cmds0.scripts) / m.requests : undefined;
        const redisUse = cmds1 && cmds0 ? redisDelta(cmds0, cmds1, m.requests) : undefined;
        results.push({
          key: s.key,
          tool,
          round,
          ...m,
          cpuPerReq: cpu === undefined ? undefined : cpu / m.requests,
          rss: r.pid ? rssMb(r.pid) : undefined,
          redisCmds,
          redisScripts,
          redisByCmd: redisUse?.byCmd,
          redisUsec: redisUse?.usecPerReq,
          redisCpu: redisUse?.cpuPerReq,
        });
        if (m.errors > 0) log(`warning: ${s.key} ${tool} had ${m.errors} errors/non-2xx`);
      }
    }
    for (const s of order) {
      const r = running.get(s.key);
      c1.push({ key: s.key, round, ...(await roundTrip(r.url, r.headers, S.c1Ms)) });
    }
    log(`round ${round}/${S.rounds} done (${Math.round((Date.now() - t0) / 1000)} s)`);
  }
  redis?.disconnect();

  const median = (xs) => {
    const v = xs.filter((x) => x !== undefined && !Number.isNaN(x)).sort((a, b) => a - b);
    if (v.length === 0) return undefined;
    const mid = Math.floor(v.length / 2);
    return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
  };
  const tables = [];
  const summary = [];
  for (const tool of TOOLS) {
    const rows = [];
    for (const s of active) {
      const mine = results.filter((r) => r.key === s.key && r.tool === tool);
      if (mine.length === 0) continue;
      const ratioKey = s.ratioTo ?? 'express';
      const ratios = mine.map((r) => {
        const base = results.find((b) => b.key === ratioKey && b.tool === tool && b.round === r.round);
        return base ? r.rps / base.rps : undefined;
      });
      const cpuRatios = mine.map((r) => {
        const base = results.find((b) => b.key === ratioKey && b.tool === tool && b.round === r.round);
        return base?.cpuPerReq && r.cpuPerReq ? base.cpuPerReq / r.cpuPerReq : undefined;
      });
      const trips = c1.filter((c) => c.key === s.key);
      const row = {
        name: s.name,
        key: s.key,
        ratioTo: ratioKey,
        rps: median(mine.map((r) => r.rps)),
        p50: median(mine.map((r) => r.p50)),
        p99: median(mine.map((r) => r.p99)),
        cpu: median(mine.map((r) => r.cpuPerReq)),
        rss: Math.max(...mine.map((r) => r.rss ?? 0)) || undefined,
        c1p50: median(trips.map((t) => t.p50)),
        c1p99: median(trips.map((t) => t.p99)),
        ratio: median(ratios),
        cpuRatio: median(cpuRatios),
        redisCmds: median(mine.map((r) => r.redisCmds)),
        redisScripts: median(mine.map((r) => r.redisScripts)),
        redisUsec: median(mine.map((r) => r.redisUsec)),
        redisCpu: median(mine.map((r) => r.redisCpu)),
        redisByCmd:
          mine.find((r) => r.redisCmds === median(mine.map((x) => x.redisCmds)))?.redisByCmd ??
          mine[0]?.redisByCmd,
        errors: mine.reduce((a, r) => a + r.errors, 0),
      };
      rows.push(row);
    }
    summary.push({ tool, rows });
    tables.push(formatTable(tool, rows));
    if (rows.some((r) => r.redisCmds !== undefined)) tables.push(formatRedisTable(tool, rows));
  }
  const machine = `${os.cpus()[0]?.model ?? 'cpu'} × ${os.cpus().length}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, ${os.type()} ${os.release()}, Node ${process.version}`;
  const command = `npm run bench${opts.full ? ' -- --full' : ''}`;
  const header = `${command} — ${new Date().toISOString().slice(0, 10)} — ${machine}\n${S.rounds} rounds, ${S.duration} s measured after ${S.warmup} s warm-up, ${S.connections} connections; medians of per-round values.`;
  const text = `${header}\n\n${tables.join('\n\n')}\n`;
  console.log('\n' + text);
  mkdirSync(RESULTS, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  writeFileSync(
    join(RESULTS, `${stamp}.json`),
    JSON.stringify({ settings: S, tools: TOOLS, machine, results, c1, summary }, null, 2),
  );
  if (opts.readme) {
    await writeReadmeBlock(join(ROOT, 'README.md'), 'bench', text);
    log('README.md updated');
  }
}

function formatTable(tool, rows) {
  const f = (v, d = 0) =>
    v === undefined ? '–' : v.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });
  const lines = [
    `**${tool}**${tool === 'autocannon' ? ' (latency resolution 1 ms)' : ''}`,
    '',
    '| configuration | req/s | p50 ms | p99 ms | CPU µs/req | RSS MB | c=1 p50 µs | c=1 p99 µs | × baseline req/s | × baseline CPU | Redis EVALSHA/req | Redis cmds/req |',
    '|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|',
  ];
  for (const r of rows) {
    const vs =
      r.key === r.ratioTo ? '1.00' : `${f(r.ratio, 2)}${r.ratioTo === 'express' ? '' : ' (vs res.json)'}`;
    const cpuVs = r.key === r.ratioTo ? '1.00' : f(r.cpuRatio, 2);
    lines.push(
      `| ${r.name} | ${f(r.rps)} | ${f(r.p50, 2)} | ${f(r.p99, 2)} | ${f(r.cpu)} | ${f(r.rss)} | ${f(r.c1p50)} | ${f(r.c1p99)} | ${vs} | ${cpuVs} | ${f(r.redisScripts, 2)} | ${f(r.redisCmds, 2)} |`,
    );
  }
  return lines.join('\n');
}

/**
 * Redis time per request by top-level command (a script by its first key's shape), from a SLOWLOG
 * holding every command since the measured load began.
 */
async function slowlogTable(redis, requests) {
  const entries = await redis.slowlog('GET', -1);
  await redis.config('SET', 'slowlog-log-slower-than', '10000');
  await redis.slowlog('RESET');
  const by = new Map();
  for (const [, , us, args] of entries) {
    const cmd = String(args[0]).toLowerCase();
    if (['info', 'config', 'slowlog', 'ping'].includes(cmd)) continue;
    const script = cmd === 'evalsha' || cmd === 'eval';
    const key = String((script ? args[3] : args[1]) ?? '')
      .replace(/\d+/g, 'N')
      .slice(0, 60);
    const name = `${cmd} ${key}`;
    const e = by.get(name) ?? { calls: 0, us: 0 };
    e.calls++;
    e.us += Number(us);
    by.set(name, e);
  }
  const rows = [...by].sort((a, b) => b[1].us - a[1].us);
  return rows
    .map(
      ([name, e]) =>
        `  ${(e.us / requests).toFixed(2).padStart(6)} µs/req  ${(e.calls / requests).toFixed(3)} calls/req  ${(e.us / e.calls).toFixed(0).padStart(5)} µs/call  ${name}`,
    )
    .join('\n');
}

/**
 * What each request costs Redis: commands by command (those a script runs included), the time in
 * commands (commandstats usec), the server's CPU time (INFO cpu), and the ceiling that implies for
 * one shard — requests per second at 100 % of one Redis core, from the larger of the two.
 */
function formatRedisTable(tool, rows) {
  const f = (v, d = 0) =>
    v === undefined ? '–' : v.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });
  const lines = [
    `**Redis per request (${tool})**`,
    '',
    '| configuration | cmds/req | by command | µs in commands/req | Redis CPU µs/req | one shard, req/s at 100 % of a core |',
    '|---|--:|---|--:|--:|--:|',
  ];
  for (const r of rows) {
    if (r.redisCmds === undefined) continue;
    const by = Object.entries(r.redisByCmd ?? {})
      .filter(([, v]) => v >= 0.005)
      .sort((a, b) => b[1] - a[1])
      .map(([cmd, v]) => `${cmd.toUpperCase()} ${f(v, 2)}`)
      .join(', ');
    const worst = Math.max(r.redisUsec ?? 0, r.redisCpu ?? 0);
    lines.push(
      `| ${r.name} | ${f(r.redisCmds, 2)} | ${by} | ${f(r.redisUsec, 1)} | ${f(r.redisCpu, 1)} | ${worst > 0 ? f(1e6 / worst) : '–'} |`,
    );
  }
  return lines.join('\n');
}

function stopAll() {
  for (const c of children) c.kill('SIGTERM');
}
process.on('SIGINT', () => {
  stopAll();
  process.exit(130);
});
main()
  .catch((err) => {
    console.error(err);
    process.exitCode = 1;
  })
  .finally(async () => {
    stopAll();
    await sleep(500);
    for (const c of children) c.kill('SIGKILL');
    rmSync(TMP, { recursive: true, force: true });
    // The full run ends with proxy only and the Node floor loaded at the same time
    // (bench/side-by-side.js): taken one after the other, as the rows above are, the same build's
    // CPU per request moves ±20 % between runs on a shared VM; side by side both pay the same
    // machine, so their ratio is the one to read for "proxy only against the floor".
    if (opts.full && opts.only === undefined && opts.base === undefined && hasWrk && !process.exitCode) {
      log('side by side: proxy only and the Node floor loaded at once (bench/side-by-side.js)');
      const args = [join(HERE, 'side-by-side.js'), '--rounds', '10', '--duration', '4'];
      const run = spawnSync(process.execPath, opts.readme ? [...args, '--readme'] : args, {
        stdio: 'inherit',
      });
      if (run.status !== 0) process.exitCode = run.status ?? 1;
    }
  });
