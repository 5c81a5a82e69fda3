import { Redis } from 'ioredis';
import { RedisHandle } from '/work/wt/redis/dist/src/shared/redis.js';
import { RedisCounters } from '/work/wt/redis/dist/src/policies/rate-limit/counters.js';
import { rateCounter } from '/work/wt/redis/dist/src/policies/rate-limit/rate-limit.js';
const h = new RedisHandle({ url: 'redis://127.0.0.1:6398', keyPrefix: 'b:', commandTimeoutMs: 5000, connectTimeoutMs: 1000, onError: 'closed' }, { info(){}, warn(){}, error(){}, debug(){}, child(){return this} });
const admin = new Redis('redis://127.0.0.1:6398');
await new Promise(r => setTimeout(r, 300));
const c = new RedisCounters(h);
const keys = Number(process.argv[2] ?? 1);
const specs = (i) => {
  const now = Date.now();
  const k = `k${i % keys}`;
  return [
    rateCounter('route:api', { name: 'burst', by: 'ip', limit: 1e9, windowSec: 1, cost: 1 }, '127.0.0.1', now).spec,
    rateCounter('route:api', { name: 'hourly', by: 'key', limit: 1e9, windowSec: 3600, cost: 1 }, k, now).spec,
    rateCounter('plan:bench', { name: 'per-key', by: 'key', limit: 1e9, windowSec: 60, cost: 1 }, k, now).spec,
    { kind: 'quota', key: `q:{key:${k}}:month:2026-12`, tag: `key:${k}`, limit: 1e12, cost: 1, ttlMs: 86400000, spanSec: 0 },
  ];
};
await c.consume(specs(0));
await admin.config('RESETSTAT');
const cpu0 = await admin.info('cpu');
const N = 20000;
let done = 0;
for (let b = 0; b < N / 20; b++) await Promise.all(Array.from({ length: 20 }, (_, j) => c.consume(specs(b * 20 + j))));
const st = await admin.info('commandstats');
const cpu1 = await admin.info('cpu');
const f = (s, n) => Number(new RegExp(n + ':([\\d.]+)').exec(s)[1]);
console.log(st.split('\n').filter(l => l.startsWith('cmdstat')).join('\n'));
console.log('cpu us/req', ((f(cpu1,'used_cpu_user') + f(cpu1,'used_cpu_sys')) - (f(cpu0,'used_cpu_user') + f(cpu0,'used_cpu_sys'))) * 1e6 / N);
await h.close(); admin.disconnect();
