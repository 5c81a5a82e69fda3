#!/usr/bin/env node
// Redis' CPU per audit record: the audit flush of this build (RedisAuditStore, its real flush)
// against the earlier layout's flush script (test/fixtures/audit-flush-earlier.lua, called with
// the arguments the earlier store sent), on a private redis-server (127.0.0.1, ephemeral port),
// alternating rounds (the order swapped each round), medians. Records are realistic (~560 bytes
// of AuditRecord JSON, unique request ids). Measured per record: the top-level commands' usec from
// INFO commandstats (a script's own commands are counted again under their names, so they are
// left out), and the redis-server process CPU (INFO cpu, user + sys).
// `npm run build && node bench/audit-flush.js [--batch 100|10-20] [--rounds 10] [--records 5000]`
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { Processes, commandStats, startRedis } from './lib/harness.js';
import { createRedis } from '../dist/shared/redis.js';
import { RedisAuditStore } from '../dist/observability/audit.js';
import { shardTags } from '../dist/shared/shards.js';
import { systemClock } from '../dist/core/clock.js';
import { mintRequestId } from '../dist/core/request-id.js';

const { values: opts } = parseArgs({
  options: {
    batch: { type: 'string', default: '100' },
    rounds: { type: 'string', default: '10' },
    records: { type: 'string', default: '5000' },
  },
});
const [lo, hi = lo] = opts.batch.split('-').map(Number);
const ROUNDS = Number(opts.rounds);
const PER_ROUND = Number(opts.records);
const MAX_ENTRIES = 10_000;
const RETENTION_MS = 86_400_000;
const BUCKET_MS = Math.max(60_000, Math.ceil(RETENTION_MS / 24));
const EARLIER = readFileSync(new URL('../test/fixtures/audit-flush-earlier.lua', import.meta.url), 'utf8');

let seq = 0;
/** A record; its id random (as a client's, indexed by id) or minted by this process (`minted`). */
function record(minted = false) {
  const id = minted
    ? mintRequestId()
    : randomBytes(16)
        .toString('hex')
        .replace(/^(.{8})(.{4})(.{4})(.{4})/, '$1-$2-$3-$4-');
  seq++;
  return {
    time: new Date().toISOString(),
    request_id: id,
    trace_id: randomBytes(16).toString('hex'),
    method: 'GET',
    path: `/v1/orders/${100_000 + (seq % 900_000)}/items`,
    route: 'orders',
    status: seq % 50 === 0 ? 429 : 200,
    aborted: false,
    latency_ms: 3.217,
    client_ip: '203.0.113.77',
    auth_method: 'api_key',
    credential_id: `key_${seq % 1000}`,
    subject: 'tenant-acme:svc-billing',
    tenant: 'acme',
    problem: null,
    upstream_status: 200,
    upstream_target: 'http://10.0.3.17:8080',
    upstream_latency_ms: 2.904,
    bytes_in: 0,
    bytes_out: 1834,
    idempotent_replay: false,
    rate_limit_policy: 'plan:pro:per-key',
  };
}
const batchSize = () => lo + Math.floor(Math.random() * (hi - lo + 1));

const procs = new Processes('audit-flush');
const { url, client } = await startRedis(procs);
const logger = {
  info() {},
  warn() {},
  debug() {},
  error() {},
  child() {
    return logger;
  },
};
const redis = createRedis({ url, keyPrefix: 'new:', commandTimeoutMs: 5000 });
const mintedRedis = createRedis({ url, keyPrefix: 'mnt:', commandTimeoutMs: 5000 });
try {
  await redis.whenReady(5000);
  await mintedRedis.whenReady(5000);
  const storeOf = (r) =>
    new RedisAuditStore({
      redis: r,
      maxEntries: MAX_ENTRIES,
      retentionSec: RETENTION_MS / 1000,
      clock: systemClock,
      logger,
    });
  const store = storeOf(redis);
  const mintedStore = storeOf(mintedRedis);
  const sha = await client.script('LOAD', EARLIER);
  const tag = `{${shardTags('a', 1)[0]}}`;
  const variants = {
    // The earlier store's flush: one script call per batch (one shard on a single node).
    earlier: async (records) => {
      const bucket = Math.floor(Date.now() / BUCKET_MS);
      await client.evalsha(
        sha,
        2,
        `old:${tag}:stream`,
        `old:${tag}:reqs:${bucket}`,
        RETENTION_MS,
        Math.max(1, Math.ceil(MAX_ENTRIES / records.length)),
        RETENTION_MS + 2 * BUCKET_MS,
        MAX_ENTRIES,
        ...records.flatMap((r) => [r.request_id, JSON.stringify(r)]),
      );
    },
    // This build's store: append the batch (JSON serialised once, as the gateway does), flush.
    current: async (records) => {
      for (const r of records) store.append(r, JSON.stringify(r));
      await store.flush();
    },
    // The same with the ids this gateway mints (no per-record index, no script).
    minted: async (records) => {
      for (const r of records) mintedStore.append(r, JSON.stringify(r));
      await mintedStore.flush();
    },
  };
  const NAMES = Object.keys(variants);
  const cpu = async () => {
    const text = await client.info('cpu');
    const f = (n) => Number(new RegExp(`${n}:([\\d.]+)`).exec(text)[1]);
    return (f('used_cpu_user') + f('used_cpu_sys')) * 1e6;
  };
  const results = { earlier: [], current: [], minted: [] };
  const round = async (name) => {
    const batches = [];
    for (let n = 0; n < PER_ROUND;) {
      const b = Array.from({ length: Math.min(batchSize(), PER_ROUND - n) }, () => record(name === 'minted'));
      batches.push(b);
      n += b.length;
    }
    const s0 = await commandStats(client);
    const c0 = await cpu();
    for (const b of batches) await variants[name](b);
    const c1 = await cpu();
    const s1 = await commandStats(client);
    const d = {};
    for (const [k, v] of Object.entries(s1)) {
      const calls = v.calls - (s0[k]?.calls ?? 0);
      if (calls > 0) d[k] = { calls, usec: v.usec - (s0[k]?.usec ?? 0) };
    }
    // Top level: the scripts, and this build's direct HSETNX and its one PEXPIRE per flush (the
    // script's own two PEXPIREs counted apart by their share of the calls).
    // The minted ids' flush runs no script: every command is top level.
    const evalsha = d.evalsha?.usec ?? 0;
    const direct =
      name === 'current'
        ? (d.hsetnx?.usec ?? 0) +
          ((d.pexpire?.usec ?? 0) * (d.pexpire.calls - 2 * d.evalsha.calls)) / d.pexpire.calls
        : name === 'minted'
          ? Object.values(d).reduce((sum, v) => sum + v.usec, 0)
          : 0;
    results[name].push({
      evalsha: evalsha / PER_ROUND,
      top: (evalsha + direct) / PER_ROUND,
      cpu: (c1 - c0) / PER_ROUND,
      calls: d,
      batches: batches.length,
    });
  };
  for (const name of NAMES) await round(name); // warm-up, not counted
  for (const name of NAMES) results[name] = [];
  for (let r = 0; r < ROUNDS; r++) for (const name of r % 2 ? [...NAMES].reverse() : NAMES) await round(name);
  const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
  const size = JSON.stringify(record()).length;
  console.log(
    `batches of ${opts.batch} records (${size}-byte JSON, unique ids: random, or minted by the gateway for \`minted\`), ${ROUNDS} rounds × ${PER_ROUND} records per layout, alternating; medians, µs per record:`,
  );
  for (const name of NAMES) {
    const rs = results[name];
    const last = rs[rs.length - 1].calls;
    const per = Object.entries(last)
      .map(([k, v]) => `${k} ${(v.calls / PER_ROUND).toFixed(3)}×/${(v.usec / PER_ROUND).toFixed(2)}`)
      .join(', ');
    console.log(
      `${name.padEnd(8)} evalsha ${median(rs.map((r) => r.evalsha)).toFixed(2)}  top-level commands ${median(rs.map((r) => r.top)).toFixed(2)}  redis-server CPU ${median(rs.map((r) => r.cpu)).toFixed(2)}   (per record, last round, script commands included: ${per})`,
    );
  }
  // What each layout keeps (its keys' MEMORY USAGE, every field counted), per record written.
  const written = (ROUNDS + 1) * PER_ROUND;
  for (const [name, pattern] of [
    ['earlier', 'old:*'],
    ['current', 'new:*'],
    ['minted', 'mnt:*'],
  ]) {
    let bytes = 0;
    for (const key of await client.keys(pattern)) bytes += await client.memory('USAGE', key, 'SAMPLES', 0);
    console.log(`${name.padEnd(8)} keeps ${(bytes / written).toFixed(0)} bytes per record`);
  }
  await store.close();
  await mintedStore.close();
} finally {
  await redis.close();
  await mintedRedis.close();
  client.disconnect();
  await procs.stop();
}
