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
 * Everything routed at one path: one route taking any method (`any`), or the routes of that path
 * by method (SPEC §9 per-method routes: their `methods` lists are disjoint, the schema checks it).
 */
export interface PathEntry {
  /** The route without a `methods` list (then the only one of its path). */
  readonly any: CompiledRoute | undefined;
  /** Method (HEAD included where GET is) → route. Empty when `any` is set. */
  readonly byMethod: ReadonlyMap<string, CompiledRoute>;
  /** `Allow` of a 405: the union of the path's routes' methods. */
  readonly allow: string;
  /** The path's routes, in config order. */
  readonly routes: readonly CompiledRoute[];
}

/**
 * Segment-aware longest-prefix matching: `/v1/orders` serves `/v1/orders` and `/v1/orders/7`,
 * never `/v1/ordersx`. A lookup walks the request path's own prefixes from longest to shortest,
 * one map lookup per segment, so the cost does not grow with the number of routes; the request's
 * method then picks the route of that path with one more map lookup.
 *
 * Unless `caseSensitive`, case is ignored (`/v1/ORDERS/7` is the `/v1/orders` route), and
 * `;params` inside a segment always are: upstream frameworks (Express, ASP.NET, IIS; Java's
 * `;jsessionid`) read such a path as the plain one, so matching it any other way would hand a
 * protected path to a broader, weaker route.
 */
export class RouteTable {
  readonly #byPath = new Map<string, PathEntry>();
  readonly #caseSensitive: boolean;
  readonly #size: number;

  constructor(routes: readonly CompiledRoute[], options: { caseSensitive?: boolean } = {}) {
    this.#caseSensitive = options.caseSensitive === true;
    this.#size = routes.length;
    const grouped = new Map<string, CompiledRoute[]>();
    for (const r of routes) {
      const key = this.#caseSensitive ? r.config.path : r.config.path.toLowerCase();
      const list = grouped.get(key);
      if (list === undefined) grouped.set(key, [r]);
      else list.push(r);
    }
    for (const [key, list] of grouped) this.#byPath.set(key, pathEntry(list));
  }

  /** Everything routed at the longest segment prefix of `path` that has routes. */
  lookup(path: string): PathEntry | undefined {
    const byPath = this.#byPath;
    let p = path.includes(';') ? withoutParams(path) : path;
    // Cheap when there is nothing to lower: V8 returns the same string without copying.
    if (!this.#caseSensitive) p = p.toLowerCase();
    if (p.length > 1 && p.charCodeAt(p.length - 1) === 47) p = p.slice(0, -1);
    for (;;) {
      const entry = byPath.get(p);
      if (entry !== undefined) return entry;
      if (p === '/') return undefined;
      const cut = p.lastIndexOf('/');
      p = cut <= 0 ? '/' : p.slice(0, cut);
    }
  }

  /**
   * The route serving `path` (and `method`, when given): without a method, the first route of the
   * matched path. Undefined when no path matches or no route of it takes the method.
   */
  match(path: string, method?: string): CompiledRoute | undefined {
    const entry = this.lookup(path);
    if (entry === undefined) return undefined;
    if (method === undefined) return entry.routes[0];
    return routeFor(entry, method);
  }

  /** How many routes the table holds. */
  get size(): number {
    return this.#size;
  }
}

/**
 * The route of `entry` for `method`, or undefined (405). A route without a `methods` list takes
 * any method but TRACE, which would echo the request (cookies included) back; CONNECT never gets
 * here (server.ts refuses it).
 */
export function routeFor(entry: PathEntry, method: string): CompiledRoute | undefined {
  const any = entry.any;
  if (any !== undefined) return method === 'TRACE' ? undefined : any;
  return entry.byMethod.get(method);
}

function pathEntry(routes: readonly CompiledRoute[]): PathEntry {
  const first = routes[0]!;
  if (routes.length === 1 && first.methods === undefined)
    return { any: first, byMethod: new Map(), allow: first.allow, routes };
  const byMethod = new Map<string, CompiledRoute>();
  // Config validation refuses overlapping lists; should two overlap anyway, the first route wins.
  for (const r of routes)
    for (const m of r.methods ?? ANY_METHOD_ALLOW.split(', ')) if (!byMethod.has(m)) byMethod.set(m, r);
  return {
    any: undefined,
    byMethod,
    allow: routes.length === 1 ? first.allow : [...byMethod.keys()].join(', '),
    routes,
  };
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
