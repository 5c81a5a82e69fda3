import { catalog, type ProblemSlug } from './catalog.js';

export interface ProblemOptions {
  /** Written for the client. Defaults to the catalog's title. Never put internals here. */
  detail?: string;
  /** Extension members added to the body (`policy`, `required_scope`, `errors`, ...). */
  extensions?: Record<string, unknown>;
  /** Response headers that belong to this problem (`Retry-After`, `Allow`, `WWW-Authenticate`, ...). */
  headers?: Record<string, string>;
  /** The internal side of the failure: logged, never sent. */
  cause?: unknown;
}

/**
 * The one error type of the gateway. Code throws (or rejects with) a Problem; only the problem
 * writer turns it into a response.
 *
 * @example
 * throw new Problem('rate-limit-exceeded', { detail: 'Too many requests', extensions: { policy: 'burst' } });
 */
export class Problem extends Error {
  readonly slug: ProblemSlug;
  readonly status: number;
  readonly title: string;
  readonly detail: string;
  readonly extensions: Record<string, unknown> | undefined;
  readonly headers: Record<string, string> | undefined;

  constructor(slug: ProblemSlug, options: ProblemOptions = {}) {
    const entry = catalog[slug];
    super(options.detail ?? entry.title, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'Problem';
    this.slug = slug;
    this.status = entry.status;
    this.title = entry.title;
    this.detail = options.detail ?? entry.title;
    this.extensions = options.extensions;
    this.headers = options.headers;
  }
}

export function isProblem(value: unknown): value is Problem {
  return value instanceof Problem;
}
