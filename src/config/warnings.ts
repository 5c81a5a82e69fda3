import type { Env } from './interpolate.js';
import type { ConfigIssue } from './issues.js';
import type { Config } from './schema.js';

/** Valid but probably not what the operator meant: printed by `validate` and logged at start. */
export function configWarnings(config: Config, env: Env): ConfigIssue[] {
  const out: ConfigIssue[] = [];
  const sealing = env.TOLLGATE_SECRET_KEY ?? '';
  if (sealing !== '' && sealing.length < 32)
    out.push({
      path: 'TOLLGATE_SECRET_KEY (environment)',
      message: 'is shorter than 32 characters: use 32+ random ones (openssl rand -base64 32)',
    });
  const signed = config.routes.findIndex((r) => r.auth !== 'none' && r.auth.hmac !== 'off');
  if (signed !== -1 && (env.TOLLGATE_SECRET_KEY ?? '') === '')
    out.push({
      path: `routes[${signed}].auth.hmac`,
      message:
        env.NODE_ENV === 'development'
          ? 'without TOLLGATE_SECRET_KEY, signing secrets are sealed with a throwaway key (lost on restart)'
          : 'without TOLLGATE_SECRET_KEY, keys with signing secrets cannot be created (the gateway will not seal them with a throwaway key)',
    });
  config.routes.forEach((route, i) => {
    if (route.auth !== 'none') return;
    route.rateLimits.forEach((rl, j) => {
      if (rl.by === 'key' || rl.by === 'subject' || rl.by === 'tenant')
        out.push({
          path: `routes[${i}].rateLimits[${j}].by`,
          message: `"${rl.by}" on a public route counts by client IP (requests there carry no credential)`,
        });
    });
    if (route.quota)
      out.push({
        path: `routes[${i}].quota`,
        message: 'has no effect on a public route (no credential, no plan)',
      });
  });
  // `workers` above 1 without redis is no warning but an error (the schema refuses it): the
  // workers' keys, limits and idempotency records would not be shared.
  if (config.admin && config.admin.tokens.length === 0)
    out.push({
      path: 'admin.tokens',
      message:
        'is empty: the admin API is off; the admin listener serves only /healthz, /readyz, /metrics and the console (which says so)',
    });
  return out;
}
