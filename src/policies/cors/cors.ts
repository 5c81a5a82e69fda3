import { answerHead, setField, type RequestContext } from '../../core/context.js';
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
  // The names the gateway owns on this route, `Vary` with them when it sets one.
  const ownedNames = vary === undefined ? OWNED : [...OWNED, 'vary'];
  return {
    name: 'cors',
    run(ctx: RequestContext) {
      // Hand-written instead of setResponseHeader per header: the names are known here, lower case
      // (profiled: this stage's per-request cost is these few list operations).
      const names = ctx.responseHeaderNames;
      if (names === undefined) ctx.responseHeaderNames = ownedNames.slice();
      else for (const name of ownedNames) if (!names.includes(name)) names.push(name);
      if (vary !== undefined) put(ctx, 'vary', vary);
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
      put(ctx, 'access-control-allow-origin', anyOrigin ? '*' : origin);
      if (credentials) put(ctx, 'access-control-allow-credentials', 'true');
      if (!preflight) {
        put(ctx, 'access-control-expose-headers', expose);
        return;
      }
      const res = ctx.res;
      const reflected = allowHeaders ?? reflect(headers['access-control-request-headers']);
      ctx.handled = true;
      if (ctx.collectsHeaders) {
        if (preflightVary !== undefined) ctx.setResponseHeader('vary', preflightVary);
        // The gateway's collected headers (this stage's, an earlier stage's) and the preflight's
        // own in one writeHead (see answerHead).
        const list: string[] = [];
        for (const [k, v] of security) list.push(k, v);
        list.push('access-control-allow-methods', methods);
        if (reflected !== '') list.push('access-control-allow-headers', reflected);
        list.push('access-control-max-age', maxAge, 'x-request-id', ctx.requestId, 'content-length', '0');
        res.writeHead(204, answerHead(ctx, list));
        res.end();
        return;
      }
      for (const [k, v] of security) res.setHeader(k, v);
      res.setHeader('access-control-allow-methods', methods);
      if (reflected !== '') res.setHeader('access-control-allow-headers', reflected);
      res.setHeader('access-control-max-age', maxAge);
      if (preflightVary !== undefined) ctx.setResponseHeader('vary', preflightVary);
      res.setHeader('x-request-id', ctx.requestId);
      res.setHeader('content-length', '0');
      res.statusCode = 204;
      res.end();
    },
  };
}

/** A gateway response header whose name is already owned (see RequestContext.setResponseHeader). */
function put(ctx: RequestContext, name: string, value: string): void {
  if (ctx.collectsHeaders) setField((ctx.responseHeaders ??= []), name, value);
  else ctx.res.setHeader(name, value);
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
