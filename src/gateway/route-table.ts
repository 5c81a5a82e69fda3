import type { RouteConfig } from '../config/schema.js';
import type { Stage } from '../core/stage.js';
import { withoutParams } from '../core/path.js';

/**
 * `Allow` of a route without a `methods` list: any method but TRACE (RFC 9110 §9.3.8: it echoes
 * the request, cookies included) and CONNECT (the gateway is no forward proxy).
 */
export const ANY_METHOD_ALLOW = 'GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS';

/** A route as the gateway runs it: config plus everything precomputed from it. */
export interface CompiledRoute {
  readonly config: RouteConfig;
  /** The route's front stages (IP rules, CORS): they run before the method check. */
  readonly front?: readonly Stage[];
  /** The route's stages, in pipeline order (pipeline.ts decides the order). */
  readonly stages: readonly Stage[];
  /** Allowed methods; `undefined` means any but TRACE and CONNECT. HEAD is allowed wherever GET is. */
  readonly methods: ReadonlySet<string> | undefined;
  /** The `Allow` header value for 405. */
  readonly allow: string;
}

/**
 * Segment-aware longest-prefix matching: `/v1/orders` serves `/v1/orders` and `/v1/orders/7`,
 * never `/v1/ordersx`. A lookup walks the request path's own prefixes from longest to shortest,
 * one map lookup per segment, so the cost does not grow with the number of routes.
 *
 * Unless `caseSensitive`, case is ignored (`/v1/ORDERS/7` is the `/v1/orders` route), and
 * `;params` inside a segment always are: upstream frameworks (Express, ASP.NET, IIS; Java's
 * `;jsessionid`) read such a path as the plain one, so matching it any other way would hand a
 * protected path to a broader, weaker route.
 */
export class RouteTable {
  readonly #byPath = new Map<string, CompiledRoute>();
  readonly #caseSensitive: boolean;

  constructor(routes: readonly CompiledRoute[], options: { caseSensitive?: boolean } = {}) {
    this.#caseSensitive = options.caseSensitive === true;
    for (const r of routes)
      this.#byPath.set(this.#caseSensitive ? r.config.path : r.config.path.toLowerCase(), r);
  }

  match(path: string): CompiledRoute | undefined {
    const byPath = this.#byPath;
    let p = path.includes(';') ? withoutParams(path) : path;
    // Cheap when there is nothing to lower: V8 returns the same string without copying.
    if (!this.#caseSensitive) p = p.toLowerCase();
    if (p.length > 1 && p.charCodeAt(p.length - 1) === 47) p = p.slice(0, -1);
    for (;;) {
      const route = byPath.get(p);
      if (route !== undefined) return route;
      if (p === '/') return undefined;
      const cut = p.lastIndexOf('/');
      p = cut <= 0 ? '/' : p.slice(0, cut);
    }
  }

  get size(): number {
    return this.#byPath.size;
  }
}

export function allowedMethods(methods: readonly string[] | undefined): {
  methods: ReadonlySet<string> | undefined;
  allow: string;
} {
  if (methods === undefined) return { methods: undefined, allow: ANY_METHOD_ALLOW };
  const set = new Set(methods);
  if (set.has('GET')) set.add('HEAD');
  return { methods: set, allow: [...set].join(', ') };
}
