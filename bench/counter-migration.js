#!/usr/bin/env node
// The counter layout migration's sweep (src/policies/rate-limit/layout-migration.ts) over old-layout
// keys, on a private redis-server (127.0.0.1, ephemeral port): how long a sweep takes, the commands
// it sends, Redis CPU, and how long a PING waits on another connection meanwhile (a request's
// script would wait as long). `npm run build && node bench/counter-migration.js [--keys 10000] [--other 10000] [--count 1000]`
import { spawn } from 'node:child_process';
import { parseArgs } from 'node:util';
import { Processes, startRedis } from './lib/harness.js';
import { createRedis } from '../dist/shared/redis.js';
import { CounterLayoutMigration } from '../dist/policies/rate-limit/layout-migration.js';

const { values: opts } = parseArgs({
  options: {
    keys: { type: 'string', default: '10000' },
    other: { type: 'string', default: '10000' },
    count: { type: 'string', default: '1000' },
  },
});
const N = Number(opts.keys);
const OTHER = Number(opts.other);

const procs = new Processes('counter-migration');
const { url, client: admin } = await startRedis(procs);
try {
  const prefix = 'tg:';
  const month = new Date().toISOString().slice(0, 7).replace('-', '');
  const index = Math.floor(Date.now() / 3_600_000);
  // What an old build left: half monthly quotas, half hourly windows, each a string with PX.
  const writeOld = async () => {
    let p = admin.pipeline();
    for (let i = 0; i < N; i++) {
      const key =
        i % 2 === 0
          ? `${prefix}q:{key:key_${i}}:month:m${month}`
          : `${prefix}rl:{key:key_${i}}:plan:pro:per-key:3600:${index}`;
      p.set(key, String(1 + (i % 50)), 'PX', 3_600_000);
      if (i % 1000 === 999) {
        await p.exec();
        p = admin.pipeline();
      }
    }
    await p.exec();
  };
  await writeOld();
  let p = admin.pipeline();
  // And what it keeps: remaining uses and lifetime quotas (no TTL), key records (hashes).
  for (let i = 0; i < OTHER; i++) {
    if (i % 3 === 0) p.set(`${prefix}rem:{key:key_${i}}:key_${i}`, '5');
    else if (i % 3 === 1) p.set(`${prefix}q:{key:key_${i}}:lifetime:l`, '7');
    else p.hset(`${prefix}{keys}:rec:key_${i}`, 'id', `key_${i}`);
    if (i % 1000 === 999) {
      await p.exec();
      p = admin.pipeline();
    }
  }
  await p.exec();
  const dbsize = await admin.dbsize();

  const stats = async () => {
    const info = await admin.info('commandstats');
    const cpu = await admin.info('cpu');
    const by = {};
    for (const m of info.matchAll(/cmdstat_([\w|]+):calls=(\d+),usec=(\d+)/g))
      if (!['info', 'ping', 'config|resetstat'].includes(m[1])) by[m[1]] = Number(m[2]);
    const field = (name) => Number(new RegExp(`${name}:([\\d.]+)`).exec(cpu)?.[1] ?? 0);
    return { by, cpuMs: (field('used_cpu_user') + field('used_cpu_sys')) * 1000 };
  };

  const logger = { info() {}, warn() {}, debug() {}, error() {} };
  const redis = createRedis({ url, keyPrefix: prefix, commandTimeoutMs: 2000 });
  await redis.whenReady(5000);
  const migration = new CounterLayoutMigration(redis, { logger, scanCount: Number(opts.count) });
  // Another process PINGs in a loop (Redis-side waits, apart from this event loop); this
  // process's own event-loop delay is measured too (the gateway's requests would wait as long).
  const PINGER = `
    const { Redis } = await import('ioredis');
    const r = new Redis(${JSON.stringify(url)});
    await r.ping();
    process.send('ready');
    let waits = [], on = false;
    process.on('message', async (m) => {
      if (m === 'start') { on = true; waits = []; while (on) { const t = performance.now(); await r.ping(); waits.push(performance.now() - t); } }
      else if (m === 'stop') { on = false; setTimeout(() => process.send(waits), 20); }
      else if (m === 'exit') { r.disconnect(); process.exit(0); }
    });`;
  const pinger = spawn(process.execPath, ['--input-type=module', '-e', PINGER], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    cwd: new URL('..', import.meta.url).pathname,
  });
  await new Promise((resolve) => pinger.once('message', resolve));
  const { monitorEventLoopDelay } = await import('node:perf_hooks');

  const sweep = async (label) => {
    await admin.config('RESETSTAT');
    const before = await stats();
    pinger.send('start');
    await new Promise((r) => setTimeout(r, 50));
    const loop = monitorEventLoopDelay({ resolution: 1 });
    loop.enable();
    const s = await migration.sweep();
    loop.disable();
    const got = new Promise((resolve) => pinger.once('message', resolve));
    pinger.send('stop');
    const waits = await got;
    const after = await stats();
    waits.sort((a, b) => a - b);
    const q = (f) => waits[Math.min(waits.length - 1, Math.floor(f * waits.length))]?.toFixed(2);
    console.log(
      `${label}: ${s.ms} ms, scanned ${s.scanned}, folded ${s.folded} (${s.units} units), skipped ${s.skipped}, ` +
        `failed ${s.failed}; SCAN calls ${s.scans}; Redis commands ${JSON.stringify(after.by)}; ` +
        `Redis CPU ${(after.cpuMs - before.cpuMs).toFixed(0)} ms; PING on another connection p50 ${q(0.5)} ms, ` +
        `p99 ${q(0.99)} ms, max ${q(1)} ms (${waits.length} pings); this event loop's delay max ` +
        `${(loop.max / 1e6).toFixed(1)} ms, mean ${(loop.mean / 1e6).toFixed(2)} ms`,
    );
    return s;
  };

  console.log(`redis: ${dbsize} keys (${N} old counters, ${OTHER} others), prefix ${prefix}`);
  await sweep('first sweep (cold process)');
  await sweep('second sweep (nothing left)');
  await writeOld();
  await sweep('old keys written again, swept (warm process)');
  const folded = await admin.exists(`${prefix}q:{key:key_0}:month:m${month}`);
  console.log(`old key left after the sweeps: ${folded}; keys now: ${await admin.dbsize()}`);
  await migration.close();
  pinger.send('exit');
  await redis.close();
} finally {
  admin.disconnect();
  await procs.stop();
}
