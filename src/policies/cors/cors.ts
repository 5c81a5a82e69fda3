import type { RequestContext } from '../../core/context.js';
import type { Stage } from '../../core/stage.js';
import { Problem } from '../../problems/problem.js';
import { HEADER_NAME, type CorsConfig } from './schema.js';

/** What a browser page may always read: its request id and its limits (SPEC §9). */
export const ALWAYS_EXPOSED = ['X-Request-Id', 'RateLimit', 'RateLimit-Policy', 'Retry-After'];

/** The `cors` package's default `Access-Control-Allow-Methods`. */
export const DEFAULT_METHODS = ['GET', 'HEAD', 'PUT', 'PATCH', 'POST', 'DELETE'];

/**
 * Response headers the gateway owns on a CORS route: an upstream's copies are dropped (replaced,
 * never doubled, and never let through where the gateway's policy says no).
 */
const OWNED = [
  'access-control-allow-origin',
  'access-control-allow-credentials',
  'access-control-expose-headers',
  'access-control-allow-methods',
  'access-control-allow-headers',
  'access-control-max-age',
];

/** At most this many names of `Access-Control-Request-Headers` are reflected. */
const MAX_REFLECTED = 64;

export interface CorsStageOptions {
  /** The route's `methods`: the default `Access-Control-Allow-Methods`. */
  routeMethods?: readonly string[] | undefined;
  /** Constant headers (helmet's) on the preflight answer, as on every gateway answer. */
  securityHeaders?: ReadonlyArray<readonly [string, string]>;
}

/**
 * The CORS stage. Everything is computed here, once; per request it is a header read, a set
 * lookup and a few `setHeader`s. It runs before the method check and authentication (pipeline.ts),
 * so a preflight is answered on any route, and the headers it sets stay on whatever answers the
 * request afterwards: a problem (`ProblemWriter` sets its own headers beside them), a mock, or an
 * upstream (whose CORS headers the proxy drops, and whose `Vary` it merges with `Origin`).
 */
export function createCorsStage(cors: CorsConfig, options: CorsStageOptions = {}): Stage {
  const anyOrigin = cors.origins === '*';
  const origins = new Set(cors.origins === '*' ? [] : cors.origins);
  const methods = (cors.methods ?? options.routeMethods ?? DEFAULT_METHODS).join(', ');
  const allowHeaders = cors.headers?.join(', ');
  const expose = unique([...ALWAYS_EXPOSED, ...cors.exposeHeaders]).join(', ');
  const maxAge = String(cors.maxAgeSec);
  const credentials = cors.credentials;
  const security = options.securityHeaders ?? [];
  // The answer differs by Origin unless it is `*` for everyone (caches must key on it).
  const vary = anyOrigin ? undefined : 'Origin';
  const preflightVary =
    allowHeaders === undefined
      ? (vary === undefined ? '' : `${vary}, `) + 'Access-Control-Request-Headers'
      : vary;
  return {
    name: 'cors',
    run(ctx: RequestContext) {
      const owned = (ctx.responseHeaderNames ??= []);
      for (const name of OWNED) if (!owned.includes(name)) owned.push(name);
      if (vary !== undefined) ctx.setResponseHeader('vary', vary);
      const headers = ctx.req.headers;
      const origin = headers.origin;
      if (origin === undefined) return;
      const allowed = anyOrigin || origins.has(origin);
      const requested = headers['access-control-request-method'];
      const preflight = requested !== undefined && ctx.req.method === 'OPTIONS';
      if (!allowed) {
        if (preflight)
          throw new Problem('forbidden', {
            detail: 'This origin is not allowed to call this API from a browser.',
          });
        return; // no CORS headers: the browser keeps the answer from the page
      }
      const res = ctx.res;
      res.setHeader('access-control-allow-origin', anyOrigin ? '*' : origin);
      if (credentials) res.setHeader('access-control-allow-credentials', 'true');
      if (!preflight) {
        res.setHeader('access-control-expose-headers', expose);
        return;
      }
      for (const [k, v] of security) res.setHeader(k, v);
      res.setHeader('access-control-allow-methods', methods);
      const names = allowHeaders ?? reflect(headers['access-control-request-headers']);
      if (names !== '') res.setHeader('access-control-allow-headers', names);
      res.setHeader('access-control-max-age', maxAge);
      if (preflightVary !== undefined) ctx.setResponseHeader('vary', preflightVary);
      res.setHeader('x-request-id', ctx.requestId);
      res.setHeader('content-length', '0');
      res.statusCode = 204;
      res.end();
      ctx.handled = true;
    },
  };
}

/** The header names a preflight asks for, as they may be echoed: field names only, bounded. */
function reflect(requested: string | undefined): string {
  if (requested === undefined) return '';
  const names: string[] = [];
  for (const part of requested.split(',')) {
    const name = part.trim().toLowerCase();
    if (name !== '' && HEADER_NAME.test(name) && !names.includes(name)) names.push(name);
    if (names.length === MAX_REFLECTED) break;
  }
  return names.join(', ');
}

function unique(names: readonly string[]): string[] {
  const seen = new Set<string>();
  return names.filter((n) => {
    const lower = n.toLowerCase();
    if (seen.has(lower)) return false;
    seen.add(lower);
    return true;
  });
}
