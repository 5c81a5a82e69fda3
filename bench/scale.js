#!/usr/bin/env node
// Scale bench (issue 20 item 3): the full pipeline on Redis (API key, two route rate limits, a plan
// limit, quota, access log, audit to Redis) served by 1, 2 and 3 gateway processes sharing one
// Redis, and by one gateway with `workers: 2` and `workers: 3` (node:cluster). On a 2-core machine
// the absolute req/s cannot grow with more processes — the load generator, the upstream and Redis
// share the same cores — so what it reports is each component's CPU per request: gateway
// (all its processes), Redis (the redis-server process, and INFO commandstats' own usec), the
// upstream, and the load generator (wrk, from its own /proc/self/stat). Those are the figures
// that size a deployment (docs/performance.md#sizing). Each configuration gets its own private
// redis-server, so one configuration's idle timers are not counted in another's Redis CPU.
// `npm run bench -- --scale [--full]` (or `node bench/scale.js [--rounds 3] [--duration 5]`).
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { cpuMicros } from './lib/proc.js';
import {
  Processes,
  commandDelta,
  commandStats,
  fmt,
  freePort,
  hasRedisServer,
  httpJson,
  log,
  machine,
  median,
  sleep,
  startRedis,
  waitForHttp,
} from './lib/harness.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = join(HERE, '..');
const ADMIN_TOKEN = 'bench-admin-token-0123456789';
const TICK_US = 1e6 / 100;

/** The full pipeline of bench/run.js's "Tollgate full pipeline, Redis" row. */
function yaml(o) {
  return `listen: { host: 127.0.0.1, port: ${o.port} }
admin: { host: 127.0.0.1, port: ${o.adminPort}, tokens: ["${ADMIN_TOKEN}"] }
logging: { level: info, format: json }
workers: ${o.workers}
redis: { url: "${o.redis}", keyPrefix: "bench:scale:", commandTimeoutMs: 1000 }
plans:
  bench:
    quota: { limit: 1000000000000, period: month }
    rateLimits: [ { name: per-key, by: key, limit: 1000000000, windowSec: 60 } ]
routes:
  - id: api
    path: /api
    auth: { methods: [apiKey] }
    upstream: { targets: ["${o.upstream}"] }
    rateLimits:
      - { name: burst, by: ip, limit: 1000000000, windowSec: 1 }
      - { name: hourly, by: key, limit: 1000000000, windowSec: 3600 }${o.meter ? '\n      - { name: tokens, by: key, limit: 1000000000000000, windowSec: 86400, meter: tokens }' : ''}
    quota: { cost: 1 }${o.meter ? '\n    meters: { tokens: { responseHeader: x-usage-tokens } }' : ''}${o.concurrency ? '\n    concurrency: { limit: 1000000, by: key }' : ''}
`;
}

export async function runScaleBench(argv = process.argv.slice(2)) {
  const { values: o } = parseArgs({
    args: argv,
    strict: false,
    options: {
      rounds: { type: 'string', default: '3' },
      duration: { type: 'string', default: '4' },
      warmup: { type: 'string', default: '2' },
      connections: { type: 'string', default: '48' },
      full: { type: 'boolean', default: false },
      // Instead of the process counts: one gateway, the full pipeline against the same with one
      // meter limit (issue 18) and with a concurrency limit (issue 17), Redis commands by command.
      variants: { type: 'boolean', default: false },
    },
  });
  if (!hasRedisServer()) throw new Error('the scale bench needs a redis-server binary');
  if (spawnSync('wrk', ['--version']).error !== undefined)
    throw new Error('the scale bench needs wrk (apt-get install wrk)');
  const S = {
    rounds: Number(o.full ? 3 : o.rounds),
    duration: Number(o.full ? 8 : o.duration),
    warmup: Number(o.full ? 3 : o.warmup),
    connections: Number(o.connections),
  };
  const procs = new Processes('scale-bench');
  try {
    const upPort = await freePort();
    const upChild = procs.start('upstream', process.execPath, [join(HERE, 'servers/upstream.cjs')], {
      PORT: String(upPort),
    });
    const upstream = `http://127.0.0.1:${upPort}`;
    await waitForHttp(`${upstream}/api/hello`);

    const meterPort = await freePort();
    const meterChild = o.variants
      ? procs.start('upstream-meter', process.execPath, [join(HERE, 'servers/upstream.cjs')], {
          PORT: String(meterPort),
          USAGE_TOKENS: '17',
        })
      : undefined;
    if (meterChild) await waitForHttp(`http://127.0.0.1:${meterPort}/api/hello`);
    const variants = [
      { key: 'full', name: 'full pipeline, Redis', processes: 1, workers: 1 },
      { key: 'meter', name: 'full pipeline, Redis + one meter limit', processes: 1, workers: 1, meter: true },
      {
        key: 'cc',
        name: 'full pipeline, Redis + concurrency limit',
        processes: 1,
        workers: 1,
        concurrency: true,
      },
    ];
    const scaling = [
      { key: 'p1', name: '1 gateway process', processes: 1, workers: 1 },
      { key: 'p2', name: '2 gateway processes', processes: 2, workers: 1 },
      { key: 'p3', name: '3 gateway processes', processes: 3, workers: 1 },
      { key: 'w2', name: '1 gateway, workers: 2', processes: 1, workers: 2 },
      { key: 'w3', name: '1 gateway, workers: 3', processes: 1, workers: 3 },
    ];
    const configs = o.variants ? variants : scaling;
    const running = new Map();
    for (const c of configs) {
      const redis = await startRedis(procs, `redis-${c.key}`);
      const gateways = [];
      for (let i = 0; i < c.processes; i++) {
        const port = await freePort();
        const adminPort = await freePort();
        const file = join(procs.dir, `${c.key}-${i}.yaml`);
        const up = c.meter ? `http://127.0.0.1:${meterPort}` : upstream;
        writeFileSync(file, yaml({ ...c, port, adminPort, redis: redis.url, upstream: up }));
        const child = procs.start(
          `${c.key}-${i}`,
          process.execPath,
          [join(ROOT, 'bin/tollgate.js'), '--config', file],
          { NODE_ENV: 'production' },
        );
        gateways.push({
          child,
          url: `http://127.0.0.1:${port}/api/hello`,
          admin: `http://127.0.0.1:${adminPort}`,
        });
      }
      for (const g of gateways) await waitForHttp(`${g.admin}/healthz`, 60_000);
      const created = await httpJson(
        'POST',
        `${gateways[0].admin}/keys`,
        { name: 'bench', plan: 'bench' },
        { authorization: `Bearer ${ADMIN_TOKEN}` },
      );
      if (created.status !== 201) throw new Error(`${c.key}: creating a key failed (${created.status})`);
      for (const g of gateways)
        await waitForHttp(g.url.replace('/api/hello', '/api'), 60_000).catch(() => {});
      const r = { redis, gateways, apiKey: created.body.key };
      // JIT warm-up once (optimised code for the hot path in every process), then a short one per run.
      await load(r, S.warmup * 3, S.connections, join(HERE, 'lib/report-cpu.lua'));
      running.set(c.key, r);
      log(`${c.name}: started`);
    }

    const results = [];
    for (let round = 1; round <= S.rounds; round++) {
      for (const c of [...configs].sort(() => Math.random() - 0.5)) {
        const r = running.get(c.key);
        await load(r, S.warmup, S.connections, join(HERE, 'lib/report-cpu.lua'));
        const gw0 = r.gateways.reduce((a, g) => a + cpuMicros(g.child.pid), 0);
        const rd0 = cpuMicros(r.redis.pid);
        const upPid = c.meter ? meterChild.pid : upChild.pid;
        const up0 = cpuMicros(upPid);
        const cs0 = await commandStats(r.redis.client);
        const m = await load(r, S.duration, S.connections, join(HERE, 'lib/report-cpu.lua'));
        const gw = r.gateways.reduce((a, g) => a + cpuMicros(g.child.pid), 0) - gw0;
        const rd = cpuMicros(r.redis.pid) - rd0;
        const up = cpuMicros(upPid) - up0;
        await sleep(150); // the last audit batch
        const cmds = commandDelta(cs0, await commandStats(r.redis.client), m.requests);
        results.push({
          key: c.key,
          round,
          requests: m.requests,
          rps: m.rps,
          p99: m.p99,
          errors: m.errors,
          gatewayUs: gw / m.requests,
          redisUs: rd / m.requests,
          redisCmdUs: cmds.usec,
          redisCmds: cmds.calls,
          byCommand: cmds.byCommand,
          upstreamUs: up / m.requests,
          loadgenUs: m.cpuUs / m.requests,
        });
      }
      log(`scale round ${round}/${S.rounds} done`);
    }
    for (const r of running.values()) r.redis.client.disconnect();

    // A run with errors (a 503 while an overloaded machine kept Redis from answering within the
    // command timeout, say) served cheaper answers: it is left out of the medians, and counted.
    const clean = (r) => r.errors <= r.requests * 0.001;
    const rows = configs.map((c) => {
      const mine = results.filter((r) => r.key === c.key && clean(r));
      const pick = (f) => median(mine.map((r) => r[f]));
      const row = {
        ...c,
        rps: pick('rps'),
        p99: pick('p99'),
        gatewayUs: pick('gatewayUs'),
        redisUs: pick('redisUs'),
        redisCmdUs: pick('redisCmdUs'),
        redisCmds: pick('redisCmds'),
        upstreamUs: pick('upstreamUs'),
        loadgenUs: pick('loadgenUs'),
        errors: results.filter((r) => r.key === c.key).reduce((a, r) => a + r.errors, 0),
        dropped: results.filter((r) => r.key === c.key && !clean(r)).length,
      };
      row.totalUs = row.gatewayUs + row.redisUs + row.upstreamUs + row.loadgenUs;
      const names = [...new Set(mine.flatMap((r) => Object.keys(r.byCommand)))];
      row.byCommand = Object.fromEntries(
        names
          .map((n) => [n, median(mine.map((r) => r.byCommand[n] ?? 0))])
          .filter(([, v]) => v >= 0.005)
          .sort((a, b) => b[1] - a[1]),
      );
      return row;
    });
    const m = machine();
    const lines = [
      `npm run bench -- --scale${o.variants ? ' --variants' : ''}${o.full ? ' --full' : ''} — ${new Date().toISOString().slice(0, 10)} — ${m.text}`,
      `Full pipeline on Redis; ${S.rounds} rounds, ${S.duration} s measured after ${S.warmup} s warm-up, wrk ${S.connections} connections in all (split over the processes); medians; ${m.load} at the end.`,
      '',
      '| configuration | req/s | p99 ms | gateway CPU µs/req | Redis CPU µs/req (process) | Redis µs/req (commandstats) | Redis cmds/req | upstream µs/req | wrk µs/req | all µs/req | req/s per gateway core | req/s per Redis core |',
      '|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|',
      ...rows.map(
        (r) =>
          `| ${r.name} | ${fmt(r.rps)} | ${fmt(r.p99, 1)} | ${fmt(r.gatewayUs)} | ${fmt(r.redisUs, 1)} | ${fmt(r.redisCmdUs, 1)} | ${fmt(r.redisCmds, 2)} | ${fmt(r.upstreamUs)} | ${fmt(r.loadgenUs)} | ${fmt(r.totalUs)} | ${fmt(1e6 / r.gatewayUs)} | ${fmt(1e6 / r.redisUs)} |`,
      ),
    ];
    lines.push(
      '',
      'Redis commands per request, by command (medians; commands run inside scripts included):',
      '',
    );
    for (const r of rows)
      lines.push(
        `- ${r.name}: ${Object.entries(r.byCommand)
          .map(([n, v]) => `${n.toUpperCase()} ${fmt(v, 2)}`)
          .join(', ')}`,
      );
    if (o.variants) {
      const base = rows[0];
      lines.push('', 'Against the full pipeline, same rounds (medians of per-round differences):', '');
      for (const r of rows.slice(1)) {
        const d = (f) =>
          median(
            results
              .filter((x) => x.key === r.key)
              .map((x) => {
                const b = results.find((y) => y.key === base.key && y.round === x.round);
                return b && clean(b) && clean(x) ? x[f] - b[f] : undefined;
              }),
          );
        lines.push(
          `- ${r.name}: gateway CPU ${d('gatewayUs') >= 0 ? '+' : ''}${fmt(d('gatewayUs'), 1)} µs/req, Redis commands ${d('redisCmds') >= 0 ? '+' : ''}${fmt(d('redisCmds'), 2)}/req (EVALSHA ${fmt((r.byCommand.evalsha ?? 0) - (base.byCommand.evalsha ?? 0), 2)}), Redis CPU ${d('redisUs') >= 0 ? '+' : ''}${fmt(d('redisUs'), 1)} µs/req`,
        );
      }
    }
    for (const r of rows.filter((x) => x.errors > 0))
      lines.push(
        `- ${r.name}: ${r.errors} errors or non-2xx answers; ${r.dropped} run(s) left out of the medians`,
      );
    const text = lines.join('\n');
    console.log('\n' + text + '\n');
    mkdirSync(join(HERE, 'results'), { recursive: true });
    writeFileSync(
      join(HERE, 'results', `scale-${new Date().toISOString().replace(/[:.]/g, '-')}.json`),
      JSON.stringify({ settings: S, machine: m, results, rows }, null, 2),
    );
    return { rows, text };
  } finally {
    await procs.stop();
  }
}

/** One wrk per gateway process, all at once, `connections` split between them; summed. */
async function load(r, seconds, connections, script) {
  const per = Math.max(1, Math.round(connections / r.gateways.length));
  const runs = await Promise.all(
    r.gateways.map((g) =>
      wrk(['-t1', `-c${per}`, `-d${seconds}s`, '-s', script, '-H', `x-api-key: ${r.apiKey}`, g.url], seconds),
    ),
  );
  const requests = runs.reduce((a, x) => a + x.requests, 0);
  return {
    requests,
    rps: runs.reduce((a, x) => a + x.rps, 0),
    p99: Math.max(...runs.map((x) => x.p99_ms)),
    errors: runs.reduce((a, x) => a + x.errors + x.non2xx, 0),
    cpuUs: runs.reduce((a, x) => a + x.cpu_ticks * TICK_US, 0),
  };
}

function wrk(args, seconds) {
  return new Promise((resolve, reject) => {
    const child = spawn('wrk', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c) => (out += c));
    child.stderr.on('data', (c) => (out += c));
    const timer = setTimeout(() => child.kill('SIGKILL'), (seconds + 15) * 1000);
    // 'close', not 'exit': the output may still be in the pipe when the process has exited.
    child.on('close', (code) => {
      clearTimeout(timer);
      const at = out.indexOf('WRKJSON ');
      if (code !== 0 || at === -1) return reject(new Error(`wrk exited ${code}: ${out.slice(-300)}`));
      resolve(JSON.parse(out.slice(at + 8).split('\n')[0]));
    });
  });
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  runScaleBench().catch((err) => {
    console.error(err);
    process.exitCode = 1;
  });
}
