#!/usr/bin/env node
// WebSocket bench (issue 17): echo round trips per second through Tollgate (`websocket: true`)
// against the same `ws` echo server directly, at 1 and at 50 connections, interleaved round by
// round, with a bare TCP relay (the floor of any tunnel) beside them. Each connection keeps one
// message in flight (send, wait for the echo, send again), so a "message" is one round trip: one
// frame each way through the relay. The relay's (gateway's) CPU per message comes from /proc
// (user + system of its process tree) over the measured window.
// `npm run bench -- --ws` (or `node bench/ws.js [--rounds 3] [--duration 5] [--size 128]` after a build).
import { writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import WebSocket from 'ws';
import { cpuMicros } from './lib/proc.js';
import { Processes, fmt, freePort, log, machine, median, sleep, waitForHttp } from './lib/harness.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = join(HERE, '..');

export async function runWsBench(argv = process.argv.slice(2)) {
  const { values: o } = parseArgs({
    args: argv,
    strict: false,
    options: {
      rounds: { type: 'string', default: '3' },
      duration: { type: 'string', default: '4' },
      warmup: { type: 'string', default: '1' },
      connections: { type: 'string', default: '1,50' },
      size: { type: 'string', default: '128' },
      full: { type: 'boolean', default: false },
    },
  });
  const S = {
    rounds: Number(o.full ? 5 : o.rounds),
    duration: Number(o.full ? 8 : o.duration),
    warmup: Number(o.warmup),
    connections: String(o.connections).split(',').map(Number),
    size: Number(o.size),
  };
  const procs = new Processes('ws-bench');
  try {
    const upPort = await freePort();
    const upstream = procs.start('ws-echo', process.execPath, [join(HERE, 'servers/ws-echo.cjs')], {
      PORT: String(upPort),
    });
    await waitForHttp(`http://127.0.0.1:${upPort}/`);

    const port = await freePort();
    const adminPort = await freePort();
    const file = join(procs.dir, 'ws.yaml');
    writeFileSync(
      file,
      [
        `listen: { host: 127.0.0.1, port: ${port} }`,
        `admin: { host: 127.0.0.1, port: ${adminPort} }`,
        `logging: { level: info, format: json }`,
        'routes:',
        '  - id: ws',
        '    path: /ws',
        '    auth: none',
        '    websocket: true',
        `    upstream: { targets: ["http://127.0.0.1:${upPort}"] }`,
      ].join('\n') + '\n',
    );
    const gateway = procs.start(
      'tollgate',
      process.execPath,
      [join(ROOT, 'bin/tollgate.js'), '--config', file],
      {
        NODE_ENV: 'production',
      },
    );
    await waitForHttp(`http://127.0.0.1:${adminPort}/healthz`);

    const pipePort = await freePort();
    const pipe = procs.start('tcp-pipe', process.execPath, [join(HERE, 'servers/tcp-pipe.cjs')], {
      PORT: String(pipePort),
      UPSTREAM_PORT: String(upPort),
    });
    await waitForHttp(`http://127.0.0.1:${pipePort}/`);

    const targets = [
      { key: 'direct', name: 'direct to the ws echo server', url: `ws://127.0.0.1:${upPort}/ws` },
      {
        key: 'floor',
        name: 'through a bare TCP relay (Node net pipe, the floor)',
        url: `ws://127.0.0.1:${pipePort}/ws`,
        pid: pipe.pid,
      },
      {
        key: 'tollgate',
        name: 'through Tollgate (websocket: true)',
        url: `ws://127.0.0.1:${port}/ws`,
        pid: gateway.pid,
      },
    ];
    const payload = Buffer.alloc(S.size, 'x').toString();
    const results = [];
    for (let round = 1; round <= S.rounds; round++) {
      const order = targets
        .flatMap((t) => S.connections.map((c) => ({ t, c })))
        .sort(() => Math.random() - 0.5);
      for (const { t, c } of order) {
        const m = await measure(t.url, c, payload, S, { gateway: t.pid, upstream: upstream.pid });
        results.push({ key: t.key, connections: c, round, ...m });
      }
      log(`ws round ${round}/${S.rounds} done`);
    }
    const rows = [];
    for (const c of S.connections)
      for (const t of targets) {
        const mine = results.filter((r) => r.key === t.key && r.connections === c);
        const ratios = mine.map((r) => {
          const d = results.find((x) => x.key === 'direct' && x.connections === c && x.round === r.round);
          return d ? r.rate / d.rate : undefined;
        });
        rows.push({
          name: t.name,
          key: t.key,
          connections: c,
          rate: median(mine.map((r) => r.rate)),
          gatewayUs: median(mine.map((r) => r.gatewayUs)),
          upstreamUs: median(mine.map((r) => r.upstreamUs)),
          clientUs: median(mine.map((r) => r.clientUs)),
          ratio: median(ratios),
          errors: mine.reduce((a, r) => a + r.errors, 0),
        });
      }
    const m = machine();
    const lines = [
      `npm run bench -- --ws${o.full ? ' --full' : ''} — ${new Date().toISOString().slice(0, 10)} — ${m.text}`,
      `${S.rounds} rounds, ${S.duration} s measured after ${S.warmup} s warm-up, ${S.size}-byte text messages, one in flight per connection; medians; ${m.load} at the end.`,
      '',
      '| WebSocket echo | connections | msgs/s | × direct | relay CPU µs/msg | upstream CPU µs/msg | client CPU µs/msg |',
      '|---|--:|--:|--:|--:|--:|--:|',
      ...rows.map(
        (r) =>
          `| ${r.name} | ${r.connections} | ${fmt(r.rate)} | ${r.key === 'direct' ? '1.00' : fmt(r.ratio, 2)} | ${fmt(r.gatewayUs, 1)} | ${fmt(r.upstreamUs, 1)} | ${fmt(r.clientUs, 1)} |`,
      ),
    ];
    const text = lines.join('\n');
    console.log('\n' + text + '\n');
    mkdirSync(join(HERE, 'results'), { recursive: true });
    writeFileSync(
      join(HERE, 'results', `ws-${new Date().toISOString().replace(/[:.]/g, '-')}.json`),
      JSON.stringify({ settings: S, machine: m, results, rows }, null, 2),
    );
    return { rows, text };
  } finally {
    await procs.stop();
  }
}

/** Opens `n` connections, runs the closed loop for warm-up + duration, and reports the measured window. */
async function measure(url, n, payload, S, pids) {
  const sockets = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise((resolve, reject) => {
          const ws = new WebSocket(url, { perMessageDeflate: false, handshakeTimeout: 5000 });
          ws.once('open', () => resolve(ws));
          ws.once('error', reject);
        }),
    ),
  );
  let count = 0;
  let errors = 0;
  let running = true;
  for (const ws of sockets) {
    ws.on('error', () => errors++);
    ws.on('message', () => {
      count++;
      if (running) ws.send(payload);
    });
    ws.send(payload);
  }
  await sleep(S.warmup * 1000);
  const c0 = count;
  const t0 = process.hrtime.bigint();
  const g0 = pids.gateway ? cpuMicros(pids.gateway) : 0;
  const u0 = cpuMicros(pids.upstream);
  const me0 = process.cpuUsage();
  await sleep(S.duration * 1000);
  const c1 = count;
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const g1 = pids.gateway ? cpuMicros(pids.gateway) : 0;
  const u1 = cpuMicros(pids.upstream);
  const me = process.cpuUsage(me0);
  running = false;
  await Promise.all(
    sockets.map(
      (ws) =>
        new Promise((resolve) => {
          const timer = setTimeout(() => {
            ws.terminate();
            resolve();
          }, 3000);
          ws.once('close', () => {
            clearTimeout(timer);
            resolve();
          });
          ws.close(1000);
        }),
    ),
  );
  const msgs = c1 - c0;
  return {
    messages: msgs,
    rate: msgs / seconds,
    gatewayUs: pids.gateway ? (g1 - g0) / msgs : undefined,
    upstreamUs: (u1 - u0) / msgs,
    clientUs: (me.user + me.system) / msgs,
    errors,
  };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  runWsBench().catch((err) => {
    console.error(err);
    process.exitCode = 1;
  });
}
