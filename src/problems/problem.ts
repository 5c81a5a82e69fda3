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
const BRAND = Symbol.for('tollgate.problem');

export class Problem extends Error {
  /** The catalog slug, or `about:blank` for a status the catalog has no entry for (`Problem.ofStatus`). */
  readonly slug: ProblemSlug | 'about:blank';
  readonly status: number;
  readonly title: string;
  readonly detail: string;
  readonly extensions: Record<string, unknown> | undefined;
  readonly headers: Record<string, string> | undefined;

  constructor(slug: ProblemSlug, options: ProblemOptions = {}, blank?: { status: number; title: string }) {
    const entry = blank ?? catalog[slug];
    super(options.detail ?? entry.title, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'Problem';
    (this as unknown as Record<symbol, boolean>)[BRAND] = true;
    this.slug = blank === undefined ? slug : 'about:blank';
    this.status = entry.status;
    this.title = entry.title;
    this.detail = options.detail ?? entry.title;
    this.extensions = options.extensions;
    this.headers = options.headers;
  }

  /**
   * A problem of `type: about:blank` (RFC 9457 §4.2.1) for a 4xx or 5xx status the catalog does
   * not name (an Express middleware's `next(err)` with, say, 422). `title` is the reason phrase.
   */
  static ofStatus(status: number, title: string, options: ProblemOptions = {}): Problem {
    return new Problem('internal-error', options, { status, title });
  }
}

/**
 * Whether `value` is a Problem — also one made by another copy of this package (a policy
 * module with its own `tollgate` dependency): the check is a registered symbol, not `instanceof`.
 */
export function isProblem(value: unknown): value is Problem {
  return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[BRAND] === true;
}
