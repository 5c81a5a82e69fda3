#!/usr/bin/env node
// Two servers under load at the same time, each from its own wrk (1 thread × 50 connections), on
// one upstream: Tollgate proxy only against the Node floor (default), or against another built
// checkout's proxy only (`--base DIR`). Taken one after the other, as `npm run bench` does, the
// CPU per request of the same build moves by ±20 % from run to run on a shared 2-vCPU VM (the
// host's neighbours, frequency, steal); loaded side by side, both pay the same machine, and the
// ratio of their CPU per request moves by a few percent. What it measures is each process's
// user + system time over the requests it served (all its threads: libuv's pool, V8's).
// `npm run build && node bench/side-by-side.js [--base DIR] [--rounds 10] [--duration 4] [--readme]`
// (`--readme`, against the floor only: the table goes into README.md's side-by-side block)
import { spawn, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import {
  Processes,
  freePort,
  log,
  machine,
  median,
  sleep,
  waitForHttp,
  writeReadmeBlock,
} from './lib/harness.js';
import { cpuMicros } from './lib/proc.js';

const HERE = fileURLToPath(new URL('.', import.meta.url));
const ROOT = join(HERE, '..');
const { values: opts } = parseArgs({
  options: {
    base: { type: 'string' },
    rounds: { type: 'string', default: '10' },
    duration: { type: 'string', default: '4' },
    readme: { type: 'boolean', default: false },
  },
});
const ROUNDS = Number(opts.rounds);
const SECONDS = Number(opts.duration);
if (spawnSync('wrk', ['-v']).error !== undefined) {
  console.error('side-by-side needs wrk (apt-get install wrk)');
  process.exit(2);
}

/** Runs wrk against `url` for `seconds`; resolves with the requests it completed. */
function wrk(url, seconds) {
  return new Promise((resolveRun, reject) => {
    const child = spawn('wrk', ['-t1', '-c50', `-d${seconds}s`, url], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c) => (out += c));
    const timer = setTimeout(() => child.kill('SIGKILL'), (seconds + 15) * 1000);
    child.on('close', (code) => {
      clearTimeout(timer);
      const m = /(\d+) requests in/.exec(out);
      if (code === 0 && m) resolveRun(Number(m[1]));
      else reject(new Error(`wrk exited ${code}: ${out.slice(-300)}`));
    });
  });
}

const procs = new Processes('side-by-side');
const stop = async () => {
  await procs.stop();
};
process.on('SIGINT', () => void stop().then(() => process.exit(130)));
try {
  const upstreamPort = await freePort();
  const upstream = `http://127.0.0.1:${upstreamPort}`;
  procs.start('upstream', process.execPath, [join(HERE, 'servers/upstream.cjs')], {
    PORT: String(upstreamPort),
  });
  await waitForHttp(`${upstream}/`);

  const tollgate = async (name, root) => {
    const port = await freePort();
    const adminPort = await freePort();
    const file = join(procs.dir, `${name}.yaml`);
    writeFileSync(
      file,
      [
        `listen: { host: 127.0.0.1, port: ${port} }`,
        `admin: { host: 127.0.0.1, port: ${adminPort} }`,
        'logging: { level: info, format: json }',
        'routes:',
        `  - { id: api, path: /api, auth: none, upstream: { targets: ["${upstream}"] } }`,
        '',
      ].join('\n'),
    );
    const child = procs.start(name, process.execPath, [join(root, 'bin/tollgate.js'), '--config', file], {
      NODE_ENV: 'production',
    });
    await waitForHttp(`http://127.0.0.1:${port}/api`);
    return { name, pid: child.pid, url: `http://127.0.0.1:${port}/api` };
  };
  const floor = async () => {
    const port = await freePort();
    const child = procs.start('node-floor', process.execPath, [join(HERE, 'servers/node-floor.cjs')], {
      PORT: String(port),
      UPSTREAM: upstream,
    });
    await waitForHttp(`http://127.0.0.1:${port}/api`);
    return { name: 'node floor', pid: child.pid, url: `http://127.0.0.1:${port}/api` };
  };

  const a = opts.base !== undefined ? await tollgate('base proxy only', resolve(opts.base)) : await floor();
  const b = await tollgate('proxy only', ROOT);
  log(`${b.name} against ${a.name}: ${ROUNDS} rounds × ${SECONDS} s, both loaded at once`);
  // Warm both (JIT, pools) before the first measured round.
  await Promise.all([wrk(a.url, 3), wrk(b.url, 3)]);
  const ratios = [];
  const rows = [];
  for (let round = 1; round <= ROUNDS; round++) {
    const before = [cpuMicros(a.pid), cpuMicros(b.pid)];
    const [ra, rb] = await Promise.all([wrk(a.url, SECONDS), wrk(b.url, SECONDS)]);
    const ua = (cpuMicros(a.pid) - before[0]) / ra;
    const ub = (cpuMicros(b.pid) - before[1]) / rb;
    ratios.push(ub / ua);
    rows.push(`| ${round} | ${ra} | ${ua.toFixed(1)} | ${rb} | ${ub.toFixed(1)} | ${(ub / ua).toFixed(3)} |`);
    await sleep(200);
  }
  const sorted = [...ratios].sort((x, y) => x - y);
  const text = [
    `node bench/side-by-side.js --rounds ${ROUNDS} --duration ${SECONDS} — ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC — ${machine().text}, ${machine().load}`,
    `${b.name} and ${a.name} loaded at the same time, each by its own wrk (1 thread × 50 connections), one upstream.`,
    '',
    `| round | ${a.name} requests | CPU µs/req | ${b.name} requests | CPU µs/req | ratio |`,
    '|--:|--:|--:|--:|--:|--:|',
    ...rows,
    '',
    `**${b.name} / ${a.name}, CPU per request: median ${median(ratios).toFixed(3)}** (min ${sorted[0].toFixed(3)}, max ${sorted.at(-1).toFixed(3)})`,
    '',
  ].join('\n');
  console.log(`\n${text}`);
  if (opts.readme && opts.base === undefined) {
    await writeReadmeBlock(join(ROOT, 'README.md'), 'side-by-side', text);
    log('README.md updated');
  }
} finally {
  await stop();
}
