import type { RouteConfig } from '../config/schema.js';
import type { Stage } from './stage.js';

/** A route as the gateway runs it: config plus everything precomputed from it. */
export interface CompiledRoute {
  readonly config: RouteConfig;
  /** The route's stages, in pipeline order (pipeline.ts decides the order). */
  readonly stages: readonly Stage[];
  /** Allowed methods; `undefined` means any. HEAD is allowed wherever GET is. */
  readonly methods: ReadonlySet<string> | undefined;
  /** The `Allow` header value for 405. */
  readonly allow: string;
}

/**
 * Segment-aware longest-prefix matching: `/v1/orders` serves `/v1/orders` and `/v1/orders/7`,
 * never `/v1/ordersx`. A lookup walks the request path's own prefixes from longest to shortest,
 * one map lookup per segment, so the cost does not grow with the number of routes.
 */
export class RouteTable {
  readonly #byPath = new Map<string, CompiledRoute>();

  constructor(routes: readonly CompiledRoute[]) {
    for (const r of routes) this.#byPath.set(r.config.path, r);
  }

  match(path: string): CompiledRoute | undefined {
    const byPath = this.#byPath;
    let p = path.length > 1 && path.charCodeAt(path.length - 1) === 47 ? path.slice(0, -1) : path;
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
  if (methods === undefined) return { methods: undefined, allow: '' };
  const set = new Set(methods);
  if (set.has('GET')) set.add('HEAD');
  return { methods: set, allow: [...set].join(', ') };
}
