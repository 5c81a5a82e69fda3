import { DEFAULT_TYPE_BASE } from './schema.js';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ErrorRequestHandler, RequestHandler } from 'express';
import { catalog, type ProblemSlug } from './catalog.js';
import { Problem, isProblem } from './problem.js';
import { securityHeaders } from '../shared/security-headers.js';
import { reasonPhrase } from '../shared/http.js';
import { answerHead, contextOf } from '../core/context.js';
import { requestIdFrom } from '../core/request-id.js';

export const PROBLEM_CONTENT_TYPE = 'application/problem+json';

/** Header fields `raw()` writes itself. */
const RAW_FIXED = new Set(['content-type', 'content-length', 'x-request-id', 'cache-control', 'connection']);

/** Headers of the answer a problem replaces, never on a problem (a transform's, an Express middleware's). */
const NOT_ON_A_PROBLEM = [
  'content-encoding',
  'content-range',
  'etag',
  'last-modified',
  'content-disposition',
];

/** Members RFC 9457 and SPEC §3 reserve; extensions never overwrite them. */
const RESERVED = new Set(['type', 'title', 'status', 'detail', 'instance', 'request_id']);

export interface ProblemWriterOptions {
  /** `type` = typeBase + slug. */
  typeBase: string;
  /** Constant headers (helmet's) added to every problem response. */
  securityHeaders?: ReadonlyArray<readonly [string, string]>;
  /** `instance` of a request id. Default `/requests/<id>` (the gateway's audit record). */
  instance?: InstanceOption | undefined;
}

/**
 * How a problem's `instance` is made from its request id: a base (`https://api.example.com/requests/`,
 * the id appended, URL-encoded) or a function. Library users whose app has no `/requests/{id}`
 * point it at where their own request records are.
 */
export type InstanceOption = string | ((requestId: string) => string);

/** The `instance` function of an option (default `/requests/<id>`). */
export function instanceFunction(option: InstanceOption | undefined): (requestId: string) => string {
  if (option === undefined) return instanceOf;
  if (typeof option === 'function') return option;
  return (requestId) => option + encodeURIComponent(requestId);
}

/**
 * The one writer of error bodies. Everything that fails ends here, as an RFC 9457 problem with
 * `instance` = `/requests/<request id>` and `request_id`.
 */
export class ProblemWriter {
  readonly typeBase: string;
  /** `instance` of a request id. */
  readonly instanceOf: (requestId: string) => string;
  readonly #security: ReadonlyArray<readonly [string, string]>;

  constructor(options: ProblemWriterOptions) {
    this.typeBase = options.typeBase;
    this.instanceOf = instanceFunction(options.instance);
    this.#security = options.securityHeaders ?? securityHeaders();
  }

  typeOf(slug: ProblemSlug): string {
    return this.typeBase + slug;
  }

  /** The problem document of a Problem, for a request id. */
  document(problem: Problem, requestId: string): Record<string, unknown> {
    const doc: Record<string, unknown> = {
      type: problem.slug === 'about:blank' ? 'about:blank' : this.typeOf(problem.slug),
      title: problem.title,
      status: problem.status,
      detail: problem.detail,
      instance: this.instanceOf(requestId),
      request_id: requestId,
    };
    if (problem.extensions) {
      for (const [k, v] of Object.entries(problem.extensions)) if (!RESERVED.has(k)) doc[k] = v;
    }
    return doc;
  }

  /** Writes a Problem as the response. If the response has already started, the connection is cut instead. */
  write(res: ServerResponse, problem: Problem, requestId: string): void {
    this.send(res, problem.status, this.document(problem, requestId), requestId, problem.headers);
  }

  /** Writes any problem document (an upstream's rewritten problem included). */
  send(
    res: ServerResponse,
    status: number,
    doc: Record<string, unknown>,
    requestId: string,
    headers?: Record<string, string>,
  ): void {
    if (res.headersSent) {
      // A body already streamed: the only honest signal left is to cut the connection.
      res.destroy();
      return;
    }
    const answer = this.render(status, doc, headers);
    for (const name of NOT_ON_A_PROBLEM) res.removeHeader(name);
    const list = answer.headers;
    const ctx = contextOf(res.req);
    if (ctx?.collectsHeaders !== true) {
      // Express (the app's own answer headers are on res, and its audit reads Content-Length there).
      for (let i = 0; i < list.length; i += 2) res.setHeader(list[i]!, list[i + 1]!);
      res.setHeader('x-request-id', requestId);
      res.setHeader('content-length', answer.body.length);
      res.statusCode = status;
      res.end(answer.body);
      return;
    }
    // The gateway: its collected headers (CORS, RateLimit, transforms) go in the same writeHead, the
    // problem's own winning over them and over any set with res.setHeader, as setHeader after them did.
    list.push('x-request-id', requestId, 'content-length', String(answer.body.length));
    if (ctx.bytesOut === 0) ctx.bytesOut = answer.body.length; // the audit read it from Content-Length
    // A local route's meters read what the answer set (rate-limit.ts read it with res.getHeader).
    if (ctx.meterFields !== undefined && ctx.meterValues === undefined) ctx.readMeters(list);
    res.writeHead(status, answerHead(ctx, list, NOT_ON_A_PROBLEM));
    res.end(answer.body);
  }

  /**
   * A problem response as data (status, headers without `X-Request-Id` and `Content-Length`, body):
   * what `send` writes, for an answer that goes somewhere other than a client (an idempotency
   * record of a client that left).
   */
  render(
    status: number,
    doc: Record<string, unknown>,
    headers?: Record<string, string>,
  ): { status: number; headers: string[]; body: Buffer } {
    const list: string[] = [];
    for (const [k, v] of this.#security) list.push(k, v);
    if (headers) for (const [k, v] of Object.entries(headers)) list.push(k, v);
    list.push('content-type', PROBLEM_CONTENT_TYPE, 'cache-control', 'no-store');
    return { status, headers: list, body: Buffer.from(JSON.stringify(doc), 'utf8') };
  }

  /**
   * A complete HTTP/1.1 response for a request Node refused before it became a request (the
   * `clientError` path), written straight to the socket. The connection is closed after it.
   */
  raw(problem: Problem, requestId: string): string {
    const body = JSON.stringify(this.document(problem, requestId));
    const lines = [
      `HTTP/1.1 ${problem.status} ${reasonPhrase(problem.status)}`,
      `content-type: ${PROBLEM_CONTENT_TYPE}`,
      `content-length: ${Buffer.byteLength(body)}`,
      `x-request-id: ${requestId}`,
      'cache-control: no-store',
      'connection: close',
      ...this.#security.map(([k, v]) => `${k}: ${v}`),
      // The problem's own headers (`Allow` of a refused CONNECT); the framing above is fixed.
      ...Object.entries(problem.headers ?? {})
        .filter(([k]) => !RAW_FIXED.has(k.toLowerCase()))
        .map(([k, v]) => `${k}: ${v}`),
    ];
    return `${lines.join('\r\n')}\r\n\r\n${body}`;
  }
}

export function instanceOf(requestId: string): string {
  return `/requests/${requestId}`;
}

/** Maps anything thrown to a Problem; unknown errors become a generic internal-error. */
export function toProblem(err: unknown): Problem {
  if (isProblem(err)) return err;
  // Errors from body parsers and similar carry an HTTP status; keep the ones the catalog names.
  const status =
    (err as { status?: unknown; statusCode?: unknown } | null)?.status ??
    (err as { statusCode?: unknown } | null)?.statusCode;
  const type = (err as { type?: unknown } | null)?.type;
  if (status === 413 || type === 'entity.too.large') return new Problem('payload-too-large', { cause: err });
  if (status === 404) return new Problem('not-found', { detail: 'Not found.', cause: err });
  if (type === 'entity.parse.failed')
    return new Problem('validation-failed', {
      detail: 'The request body is not valid JSON.',
      extensions: { errors: [{ pointer: '', message: 'is not valid JSON' }] },
      cause: err,
    });
  // The body parser's other refusals (an unsupported charset or content encoding, a body whose
  // length does not match): the client's request, not the gateway, is at fault.
  if (typeof status === 'number' && status >= 400 && status < 500 && typeof type === 'string')
    return new Problem('validation-failed', {
      detail: 'The request body cannot be read.',
      extensions: { errors: [{ pointer: '', message: (err as Error).message }] },
      cause: err,
    });
  return new Problem('internal-error', { detail: 'An unexpected error occurred.', cause: err });
}

export interface ProblemDetailsOptions {
  /** `type` = typeBase + slug (a function is read per error, so a reload can change it). Default `https://tollgate.dev/problems/`. */
  typeBase?: string | (() => string);
  /** Where internal errors are reported (their stack never reaches the client). */
  onInternalError?: (err: unknown, req: IncomingMessage) => void;
  /** How the request id is found; default: the context `requestId()` set, else `X-Request-Id`. */
  requestIdOf?: (req: IncomingMessage, res: ServerResponse) => string;
  /** `instance` of each problem: a base the request id is appended to, or a function. Default `/requests/<id>`. */
  instance?: InstanceOption;
}

/**
 * Express error handler that answers every error as `application/problem+json`.
 *
 * @example
 * app.use(requestId());
 * app.get('/x', () => { throw new Problem('forbidden'); });
 * app.use(problemDetails({ typeBase: 'https://errors.example.com/problems/' }));
 */
export function problemDetails(options: ProblemDetailsOptions = {}): ErrorRequestHandler {
  const typeBase = options.typeBase ?? DEFAULT_TYPE_BASE;
  const security = securityHeaders();
  const instance = instanceFunction(options.instance);
  let writer = new ProblemWriter({
    typeBase: typeof typeBase === 'string' ? typeBase : typeBase(),
    securityHeaders: security,
    instance,
  });
  const idOf =
    options.requestIdOf ??
    ((req: IncomingMessage, res: ServerResponse) => {
      const known = contextOf(req)?.requestId ?? res.getHeader('x-request-id');
      return typeof known === 'string' ? known : requestIdFrom(req.headers['x-request-id']);
    });
  return function problemDetailsHandler(err: unknown, req, res, _next) {
    const problem = toProblem(err);
    if (problem.slug === 'internal-error') options.onInternalError?.(err, req);
    if (typeof typeBase === 'function' && typeBase() !== writer.typeBase)
      writer = new ProblemWriter({ typeBase: typeBase(), securityHeaders: security, instance });
    writer.write(res, problem, idOf(req, res));
  };
}

/**
 * The last handler before `problemDetails()`: a request no route answered becomes a 404
 * `not-found` problem (Express' own 404 is an HTML page).
 *
 * @example
 * app.use('/orders', orders);
 * app.use(notFound(), problemDetails());
 */
export function notFound(options: { detail?: string } = {}): RequestHandler {
  const detail = options.detail ?? 'No route matches the request path.';
  return function notFoundHandler(_req, _res, next) {
    next(new Problem('not-found', { detail }));
  };
}

export { catalog, Problem };
