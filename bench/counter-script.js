#!/usr/bin/env node
// Redis' CPU and the gateway's per request for the counter checks alone: this build's
// RedisCounters (its real batching, encoding and script) on a private redis-server (127.0.0.1,
// ephemeral port), the bench's full-pipeline limits (a burst limit by IP, an hourly limit and a
// plan limit by key, a monthly quota: four checks, three of them per key) for `--keys` distinct
// keys sent in turn, `--batch` requests per event-loop turn (what one script call decides under
// load: about 20 at 50 connections). With `--base DIR` (another built checkout) the two builds
// alternate rounds (the order swapped each round) on the same server; medians. Measured per
// request: the script's usec from INFO commandstats (its own HMGET and HSET are counted there and
// again under their names, so only EVALSHA is taken), the redis-server process CPU (INFO cpu),
// and this process's CPU (building the batch's argument and reading the reply, ioredis included).
// `npm run build && node bench/counter-script.js [--keys 12000] [--batch 21] [--rounds 9] [--calls 1500] [--base DIR]`
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { Processes, commandStats, startRedis } from './lib/harness.js';

const { values: opts } = parseArgs({
  options: {
    keys: { type: 'string', default: '12000' },
    batch: { type: 'string', default: '21' },
    rounds: { type: 'string', default: '9' },
    calls: { type: 'string', default: '1500' },
    base: { type: 'string' },
  },
});
const KEYS = Number(opts.keys);
const BATCH = Number(opts.batch);
const ROUNDS = Number(opts.rounds);
const CALLS = Number(opts.calls);

const builds = { current: new URL('../dist/', import.meta.url) };
if (opts.base !== undefined) builds.base = pathToFileURL(resolve(opts.base, 'dist') + '/');

const procs = new Processes('counter-script');
const { url, client } = await startRedis(procs);
const cpu = async () => {
  const text = await client.info('cpu');
  const f = (n) => Number(new RegExp(`${n}:([\\d.]+)`).exec(text)[1]);
  return (f('used_cpu_user') + f('used_cpu_sys')) * 1e6;
};
const variants = {};
try {
  for (const [name, dist] of Object.entries(builds)) {
    const { createRedis } = await import(new URL('shared/redis.js', dist).href);
    const { RedisCounters } = await import(new URL('policies/rate-limit/counters.js', dist).href);
    const redis = createRedis({ url, keyPrefix: `${name}:`, commandTimeoutMs: 5000 });
    await redis.whenReady(5000);
    variants[name] = { redis, counters: new RedisCounters(redis), next: 0 };
  }
  const now = Date.now();
  // As quota.ts names the period: m<yyyymm>.
  const month = new Date(now).toISOString().slice(0, 7).replace('-', '');
  // The checks a request of the bench's full pipeline makes (their keys as the rate-limit policy
  // builds them: the subject in braces, the window's length and index at the end).
  const specs = (k) => [
    {
      kind: 'rate',
      key: `rl:{127.0.0.1}:route:api:burst:1:${Math.floor(Date.now() / 1000)}`,
      tag: '127.0.0.1',
      limit: 1e9,
      cost: 1,
      ttlMs: 2_000,
      spanSec: 1,
    },
    {
      kind: 'rate',
      key: `rl:{k${k}}:route:api:hourly:3600:${Math.floor(now / 3_600_000)}`,
      tag: `k${k}`,
      limit: 1e9,
      cost: 1,
      ttlMs: 3_600_000,
      spanSec: 3600,
    },
    {
      kind: 'rate',
      key: `rl:{k${k}}:plan:bench:per-key:60:${Math.floor(now / 60_000)}`,
      tag: `k${k}`,
      limit: 1e9,
      cost: 1,
      ttlMs: 60_000,
      spanSec: 60,
    },
    {
      kind: 'quota',
      key: `q:{k${k}}:month:m${month}`,
      tag: `k${k}`,
      limit: 1e12,
      cost: 1,
      ttlMs: 30 * 86_400_000,
      spanSec: 30 * 86_400,
    },
  ];
  const turn = (v) => {
    const calls = [];
    for (let i = 0; i < BATCH; i++) calls.push(v.counters.consume(specs(v.next++ % KEYS)));
    return Promise.all(calls);
  };
  const results = Object.fromEntries(Object.keys(variants).map((n) => [n, []]));
  const round = async (name, keep = true) => {
    const v = variants[name];
    const s0 = await commandStats(client);
    const c0 = await cpu();
    const p0 = process.cpuUsage();
    for (let i = 0; i < CALLS; i++) await turn(v);
    const p = process.cpuUsage(p0);
    const c1 = await cpu();
    const s1 = await commandStats(client);
    const requests = CALLS * BATCH;
    if (keep)
      results[name].push({
        evalsha: ((s1.evalsha?.usec ?? 0) - (s0.evalsha?.usec ?? 0)) / requests,
        perCall:
          ((s1.evalsha?.usec ?? 0) - (s0.evalsha?.usec ?? 0)) /
          ((s1.evalsha?.calls ?? 0) - (s0.evalsha?.calls ?? 0)),
        cpu: (c1 - c0) / requests,
        node: (p.user + p.system) / requests,
      });
  };
  // Warm-up: every key's fields made, the scripts loaded.
  for (const name of Object.keys(variants)) {
    for (let i = 0; i < Math.ceil(KEYS / BATCH); i++) await turn(variants[name]);
    await round(name, false);
  }
  const names = Object.keys(variants);
  for (let r = 0; r < ROUNDS; r++) for (const name of r % 2 ? [...names].reverse() : names) await round(name);
  const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
  console.log(
    `${KEYS} keys, ${BATCH} requests per script call (4 checks each), ${ROUNDS} rounds × ${CALLS} calls per build${names.length > 1 ? ', alternating' : ''}; medians, µs per request:`,
  );
  for (const name of names) {
    const rs = results[name];
    console.log(
      `${name.padEnd(8)} EVALSHA ${median(rs.map((r) => r.evalsha)).toFixed(2)} (${median(rs.map((r) => r.perCall)).toFixed(0)} per call)  redis-server CPU ${median(rs.map((r) => r.cpu)).toFixed(2)}  this process ${median(rs.map((r) => r.node)).toFixed(2)}`,
    );
  }
  if (names.length > 1) {
    const d = (f) => median(results.current.map((r, i) => f(r) - f(results.base[i])));
    console.log(
      `current − base, paired by round: EVALSHA ${d((r) => r.evalsha).toFixed(2)}  redis-server CPU ${d((r) => r.cpu).toFixed(2)}  this process ${d((r) => r.node).toFixed(2)}`,
    );
  }
} finally {
  for (const v of Object.values(variants)) await v.redis.close();
  client.disconnect();
  await procs.stop();
}
