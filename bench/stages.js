#!/usr/bin/env node
// In-process cost of the request path, no sockets: `gateway.handle(req, res)` driven with the
// recording request/response of `fakeExchange`, for route configurations that differ by one
// feature. What a feature costs per request is the difference between two rows, measured in the
// same process, interleaved round by round (medians). Used for costs too small for wrk to resolve
// on a noisy VM (a custom policy, CORS, IP rules, header transforms).
// `npm run bench:stages` (or `node bench/stages.js [--rounds 21] [--requests 5000] [--only a,b] [--close]` after a build).
import http from 'node:http';
import { parseArgs } from 'node:util';
import { createGateway, definePolicy } from '../dist/index.js';
import { fakeExchange } from '../dist/core/fake-context.js';

const { values: opts } = parseArgs({
  options: {
    rounds: { type: 'string', default: '21' },
    requests: { type: 'string', default: '5000' },
    only: { type: 'string' },
    json: { type: 'boolean', default: false },
    // Adds the Redis rows (rate limits on Redis, and one meter limit more): `--redis redis://127.0.0.1:6379`.
    redis: { type: 'string' },
    // Ends every exchange as a server does ('close' after 'finish'): the observer (access log,
    // metrics, audit record) runs and is measured on every row, not only on the Redis rows.
    close: { type: 'boolean', default: false },
  },
});
const ROUNDS = Number(opts.rounds);
const REQUESTS = Number(opts.requests);

const noop = definePolicy({ name: 'noop', create: () => () => undefined });
const vary = definePolicy({
  name: 'vary',
  create: () => (ctx) => {
    ctx.setResponseHeader('vary', 'Origin');
  },
});

/** name → [config, request headers, gateway options] */
const VARIANTS = {
  'mock route': [{ routes: [{ id: 'm', path: '/m', mock: { body: { ok: true } } }] }, {}],
  'mock route + one trivial custom policy': [
    {
      policies: { noop: {} },
      routes: [{ id: 'm', path: '/m', policies: ['noop'], mock: { body: { ok: true } } }],
    },
    {},
    { policies: { noop } },
  ],
  // issue 16 part A: two header transforms (one request, one response); two routes on one path.
  'mock route + two header transforms': [
    {
      routes: [
        {
          id: 'm',
          path: '/m',
          headers: {
            request: { set: { 'x-api-version': '2' } },
            response: { set: { 'cache-control': 'no-store' } },
          },
          mock: { body: { ok: true } },
        },
      ],
    },
    {},
  ],
  'mock route, per-method (GET and POST routes on /m)': [
    {
      routes: [
        { id: 'm', path: '/m', methods: ['GET'], mock: { body: { ok: true } } },
        { id: 'w', path: '/m', methods: ['POST'], mock: { body: { ok: true } } },
      ],
    },
    {},
  ],
  // Any gateway-set response header moves Node's writeHead onto its merging path (~10 µs here);
  // this row pays that alone, so the next two show what CORS + IP rules add on top of it.
  'mock route + one gateway response header (custom policy)': [
    {
      policies: { vary: {} },
      routes: [{ id: 'm', path: '/m', policies: ['vary'], mock: { body: { ok: true } } }],
    },
    {},
    { policies: { vary } },
  ],
  'mock route + cors+ip (CORS, IP rules)': [
    {
      cors: { origins: ['http://app.bench.test'] },
      ipRules: { allow: ['127.0.0.0/8', '::1'], deny: ['203.0.113.0/24', '2001:db8::/32'] },
      routes: [{ id: 'm', path: '/m', mock: { body: { ok: true } } }],
    },
    { origin: 'http://app.bench.test' },
  ],
  // The configuration: CORS + IP rules + two header transforms together.
  'mock route + cors+ip+headers (CORS, IP rules, two header transforms)': [
    {
      cors: { origins: ['http://app.bench.test'] },
      ipRules: { allow: ['127.0.0.0/8', '::1'], deny: ['203.0.113.0/24', '2001:db8::/32'] },
      routes: [
        {
          id: 'm',
          path: '/m',
          headers: {
            request: { set: { 'x-api-version': '2' } },
            response: { set: { 'cache-control': 'no-store' } },
          },
          mock: { body: { ok: true } },
        },
      ],
    },
    { origin: 'http://app.bench.test' },
  ],
  // Three rate limits (one sliding) in memory: the synchronous memory counters (issue 20 item 5).
  'mock route + three rate limits in memory (one sliding)': [
    {
      routes: [
        {
          id: 'm',
          path: '/m',
          rateLimits: [
            { name: 'burst', by: 'ip', limit: 1e9, windowSec: 1 },
            { name: 'minute', by: 'ip', limit: 1e9, windowSec: 60, algorithm: 'sliding-window' },
            { name: 'hourly', by: 'global', limit: 1e9, windowSec: 3600 },
          ],
          mock: { body: { ok: true } },
        },
      ],
    },
    {},
  ],
};

// issue 20: telemetry on and off. Both rows emit 'close', so observers run (and the server span
// ends); the sink is a local OTLP receiver that reads and discards the exports.
const sink = http.createServer((req, res) => req.resume().on('end', () => res.end()));
await new Promise((r) => sink.listen(0, '127.0.0.1', r));
const mockRoute = [{ id: 'm', path: '/m', mock: { body: { ok: true } } }];
const traced = { traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' };
VARIANTS['closed: mock route, telemetry off'] = [{ routes: mockRoute }, traced];
VARIANTS['closed: mock route, telemetry.otlp on'] = [
  { telemetry: { otlp: { endpoint: `http://127.0.0.1:${sink.address().port}` } }, routes: mockRoute },
  traced,
];

if (opts.redis) {
  const redis = () => ({
    url: opts.redis,
    keyPrefix: `tollgate-bench:${process.pid}:${Math.random().toString(36).slice(2)}:`,
  });
  const limits = [
    { name: 'burst', by: 'ip', limit: 1e9, windowSec: 1 },
    { name: 'minute', by: 'ip', limit: 1e9, windowSec: 60, algorithm: 'sliding-window' },
    { name: 'hourly', by: 'global', limit: 1e9, windowSec: 3600 },
  ];
  const route = (extra) => ({
    id: 'm',
    path: '/m',
    mock: { body: { ok: true }, headers: { 'x-usage-tokens': '17' } },
    meters: { tokens: { responseHeader: 'x-usage-tokens' } },
    ...extra,
  });
  VARIANTS['Redis: three rate limits (one sliding)'] = [
    { redis: redis(), routes: [route({ rateLimits: limits })] },
    {},
  ];
  VARIANTS['Redis: three rate limits + one meter limit'] = [
    {
      redis: redis(),
      routes: [
        route({
          rateLimits: [
            ...limits,
            { name: 'tokens', by: 'ip', limit: 1e15, windowSec: 86400, meter: 'tokens' },
          ],
        }),
      ],
    },
    {},
  ];
  // issue 17: a concurrency limit on Redis (a slot taken before the request, freed after it).
  VARIANTS['Redis: three rate limits + concurrency limit'] = [
    { redis: redis(), routes: [route({ rateLimits: limits, concurrency: { limit: 1e6, by: 'ip' } })] },
    {},
  ];
}

function gatewayOf([config, , options]) {
  return createGateway({ listen: { host: '127.0.0.1', port: 0 }, ...config }, options ?? {});
}

function once(gateway, headers, closing) {
  const { req, res } = fakeExchange({ url: '/m/x', headers });
  return new Promise((resolve) => {
    res.once('finish', () => {
      // A real server emits 'close' after 'finish'; the recording socket does not. The Redis rows
      // emit it, so close hooks (meter settlements) and observers run and are measured.
      if (closing) res.emit('close');
      resolve();
    });
    gateway.handle(req, res);
  });
}

async function measure(gateway, headers, n) {
  const start = process.cpuUsage();
  const closing = opts.close || gateway.config.redis !== undefined || closed.has(gateway);
  for (let i = 0; i < n; i++) await once(gateway, headers, closing);
  const used = process.cpuUsage(start);
  return (used.user + used.system) / n;
}

const names = Object.keys(VARIANTS).filter(
  (n) => !opts.only || opts.only.split(',').some((o) => n.includes(o)),
);
const gateways = Object.fromEntries(names.map((n) => [n, gatewayOf(VARIANTS[n])]));
const closed = new Set(names.filter((n) => n.startsWith('closed:')).map((n) => gateways[n]));
for (const n of names) await measure(gateways[n], VARIANTS[n][1], 3000); // warm-up
// Redis commands per request of each Redis row (EVALSHA: the check, and the batched settlements).
const commands = {};
if (opts.redis) {
  const { Redis } = await import('ioredis');
  const admin = new Redis(opts.redis);
  for (const n of names.filter((x) => x.startsWith('Redis'))) {
    await admin.config('RESETSTAT');
    await measure(gateways[n], VARIANTS[n][1], 2000);
    await new Promise((r) => setTimeout(r, 50)); // the last settlement batch (5 ms)
    const stats = await admin.info('commandstats');
    commands[n] = Number(/cmdstat_evalsha:calls=(\d+)/.exec(stats)?.[1] ?? 0) / 2000;
  }
  admin.disconnect();
}
const samples = Object.fromEntries(names.map((n) => [n, []]));
for (let r = 0; r < ROUNDS; r++) {
  const order = [...names].sort(() => Math.random() - 0.5);
  for (const n of order) samples[n].push(await measure(gateways[n], VARIANTS[n][1], REQUESTS));
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const base = median(samples[names[0]]);
const rows = names.map((n) => ({ name: n, us: median(samples[n]), delta: median(samples[n]) - base }));
if (opts.json) console.log(JSON.stringify(rows));
else {
  console.log(
    `in-process, ${ROUNDS} rounds × ${REQUESTS} requests, CPU µs per request (medians), Node ${process.version}`,
  );
  console.log('| configuration | CPU µs/req | vs first row | Redis commands/req |\n|---|--:|--:|--:|');
  for (const r of rows)
    console.log(
      `| ${r.name} | ${r.us.toFixed(2)} | ${r.delta >= 0 ? '+' : ''}${r.delta.toFixed(2)} | ${commands[r.name]?.toFixed(3) ?? ''} |`,
    );
}
for (const g of Object.values(gateways)) await g.close();
sink.close();
