import type { ConfigIssue } from './issues.js';
import type { Config } from './schema.js';

/** Settings a running process cannot change without a restart. */
export function restartOnly(before: Config, after: Config): ConfigIssue[] {
  const out: ConfigIssue[] = [];
  const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);
  if (!same(before.listen, after.listen))
    out.push({ path: 'listen', message: 'changed; takes effect after a restart' });
  if (!same(before.server, after.server))
    out.push({ path: 'server', message: 'changed; takes effect after a restart' });
  if (!same(before.redis, after.redis))
    out.push({ path: 'redis', message: 'changed; takes effect after a restart' });
  if (!same(before.workers, after.workers))
    out.push({ path: 'workers', message: 'changed; takes effect after a restart' });
  if (before.admin?.host !== after.admin?.host || before.admin?.port !== after.admin?.port)
    out.push({ path: 'admin', message: 'listener address changed; takes effect after a restart' });
  if (!same(before.auth.hmac.replayCache, after.auth.hmac.replayCache))
    out.push({ path: 'auth.hmac.replayCache', message: 'changed; takes effect after a restart' });
  if (!same(before.idempotency, after.idempotency))
    out.push({ path: 'idempotency', message: 'changed; takes effect after a restart' });
  if (!same(before.logging, after.logging))
    out.push({ path: 'logging', message: 'changed; takes effect after a restart' });
  if (
    before.auth.apiKeys.prefix !== after.auth.apiKeys.prefix ||
    before.auth.apiKeys.cacheTtlMs !== after.auth.apiKeys.cacheTtlMs
  )
    out.push({ path: 'auth.apiKeys', message: 'prefix and cacheTtlMs take effect after a restart' });
  return out;
}
