import type { Env } from './interpolate.js';
import type { ConfigIssue } from './issues.js';
import type { Config } from './schema.js';

/** Valid but probably not what the operator meant: printed by `validate` and logged at start. */
export function configWarnings(config: Config, env: Env): ConfigIssue[] {
  const out: ConfigIssue[] = [];
  if (config.admin && !isLoopback(config.admin.host))
    out.push({
      path: 'admin.host',
      message: `"${config.admin.host}" is not loopback: the admin listener (key management, audit, metrics) is reachable from the network — keep it on a private network, never published to the internet`,
    });
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
    if (route.auth !== 'none' && route.auth.claims !== undefined && route.auth.methods.includes('apiKey'))
      out.push({
        path: `routes[${i}].auth.claims`,
        message:
          'API keys carry no claims: every API key is refused here (403 forbidden, required_claim). Write `methods: [jwt]` to say so.',
      });
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
  const otlp = config.telemetry.otlp;
  if (otlp !== undefined && Object.keys(otlp.headers).length > 0) {
    const url = new URL(otlp.endpoint);
    if (url.protocol === 'http:' && !isLoopback(url.hostname))
      out.push({
        path: 'telemetry.otlp.endpoint',
        message:
          'is http:// to a host that is not loopback: the headers (credentials) travel in clear text — use https:// unless the network is private',
      });
  }
  out.push(...weakerPrefixWarnings(config));
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

type Route = Config['routes'][number];

/**
 * Route confusion: a route with weaker auth (public, or scopes that are not a superset) whose path
 * is a segment prefix of a stronger route's, on the same upstream targets. A request the stronger
 * route would refuse can reach the same service through the weaker one, under a spelling the
 * gateway routes to the weaker route but the upstream reads as the protected path.
 */
function weakerPrefixWarnings(config: Config): ConfigIssue[] {
  const out: ConfigIssue[] = [];
  const key = (p: string) => (config.routing.caseSensitive ? p : p.toLowerCase());
  // Per-method routes (SPEC §9) share a path: every route of a path is a candidate.
  const byPath = new Map<string, number[]>();
  config.routes.forEach((r, i) => {
    const list = byPath.get(key(r.path));
    if (list === undefined) byPath.set(key(r.path), [i]);
    else list.push(i);
  });
  config.routes.forEach((strong, j) => {
    if (strong.upstream === undefined || strong.auth === 'none') return;
    const targets = targetSet(strong);
    let p = key(strong.path);
    while (p !== '/') {
      const cut = p.lastIndexOf('/');
      p = cut <= 0 ? '/' : p.slice(0, cut);
      for (const i of byPath.get(p) ?? []) {
        const weak = config.routes[i]!;
        if (weak.upstream === undefined || targetSet(weak) !== targets || !weaker(weak, strong)) continue;
        // A weaker route that takes none of the stronger one's methods cannot carry its requests.
        const shared = sharedMethods(weak, strong);
        if (shared !== undefined && shared.length === 0) continue;
        const via = shared === undefined ? '' : ` (${shared.join(', ')})`;
        out.push({
          path: `routes[${i}].path`,
          message: `"${weak.path}" (route "${weak.id}", ${authSummary(weak)}) is a segment prefix of "${strong.path}" (routes[${j}], route "${strong.id}", ${authSummary(strong)}) on the same upstream targets: a request${via} "${strong.id}" would refuse can reach that service through "${weak.id}". Give "${weak.id}" the same auth, or another upstream.`,
        });
      }
    }
  });
  return out;
}

/** Methods both routes take (HEAD with GET); undefined when both take any method. */
function sharedMethods(a: Route, b: Route): string[] | undefined {
  const of = (r: Route) => {
    if (r.methods === undefined) return undefined;
    const set = new Set<string>(r.methods);
    if (set.has('GET')) set.add('HEAD');
    return set;
  };
  const ma = of(a);
  const mb = of(b);
  if (ma === undefined && mb === undefined) return undefined;
  if (ma === undefined) return [...mb!];
  if (mb === undefined) return [...ma];
  return [...ma].filter((m) => mb.has(m));
}

function targetSet(route: Route): string {
  return (route.upstream?.targets ?? [])
    .map((t) => t.replace(/\/+$/, ''))
    .sort()
    .join(' ');
}

function weaker(weak: Route, strong: Route): boolean {
  if (strong.auth === 'none') return false;
  if (weak.auth === 'none') return true;
  const has = new Set(weak.auth.scopes);
  return !strong.auth.scopes.every((s) => has.has(s));
}

function authSummary(route: Route): string {
  if (route.auth === 'none') return 'public';
  return route.auth.scopes.length === 0 ? 'any credential' : `scopes: ${route.auth.scopes.join(' ')}`;
}

/** 127.0.0.0/8, ::1 and localhost: the only hosts the admin listener binds without a warning. */
export function isLoopback(host: string): boolean {
  const h = host
    .trim()
    .toLowerCase()
    .replace(/^\[|\]$/g, '');
  return (
    h === 'localhost' || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h) || h === '::ffff:127.0.0.1'
  );
}
