import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import express, { type Express } from 'express';
import type { RequestContext } from '../../core/context.js';
import type { Stage } from '../../core/stage.js';
import { Problem, isProblem } from '../../problems/problem.js';
import { formatPath, type ConfigIssue } from '../../config/issues.js';
import { reasonPhrase } from '../../shared/http.js';
import { PROTECTED_REQUEST_HEADERS } from '../headers/schema.js';
import {
  isPolicy,
  type PolicyHandler,
  type PolicyIdentity,
  type PolicyPhase,
  type PolicyRequest,
} from './define-policy.js';

/** A custom policy built for one config: its stage and where in the pipeline it runs. */
export interface CompiledPolicy {
  readonly name: string;
  readonly phase: PolicyPhase;
  readonly stage: Stage;
}

export type CompileResult = { ok: true; policy: CompiledPolicy } | { ok: false; issues: ConfigIssue[] };

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
// Visible ASCII, space and tab (RFC 9110 §5.5): no CR/LF can be smuggled into a header.
const FIELD_VALUE = /^[\t\x20-\x7e]*$/;

function checkHeader(policy: string, name: string, value: string, upstream: boolean): string {
  if (typeof name !== 'string' || !TOKEN.test(name))
    throw new TypeError(`policy ${policy}: ${JSON.stringify(name)} is not a header name`);
  if (typeof value !== 'string' || !FIELD_VALUE.test(value))
    throw new TypeError(`policy ${policy}: the value of ${name} is not a valid header value`);
  const lower = name.toLowerCase();
  if (upstream && PROTECTED_REQUEST_HEADERS.has(lower))
    throw new TypeError(`policy ${policy}: ${name} is set by the gateway and cannot be set by a policy`);
  return lower;
}

/** The request as a `definePolicy` handler sees it: a thin view of the context, made per call. */
class PolicyRequestView implements PolicyRequest {
  readonly #ctx: RequestContext;
  readonly #policy: string;

  constructor(ctx: RequestContext, policy: string) {
    this.#ctx = ctx;
    this.#policy = policy;
  }

  get method(): string {
    return this.#ctx.req.method ?? 'GET';
  }
  get path(): string {
    return this.#ctx.path;
  }
  get query(): string {
    return this.#ctx.search;
  }
  get headers(): Readonly<IncomingHttpHeaders> {
    return this.#ctx.req.headers;
  }
  get requestId(): string {
    return this.#ctx.requestId;
  }
  get routeId(): string {
    return this.#ctx.routeId ?? '';
  }
  get clientIp(): string {
    return this.#ctx.clientIp;
  }
  get identity(): PolicyIdentity | undefined {
    const id = this.#ctx.identity;
    if (id === undefined) return undefined;
    return {
      consumerId: id.subject,
      tenantId: id.tenant,
      credentialId: id.credentialId,
      authMethod: id.method,
      scopes: id.scopes,
      claims: id.claims ?? {},
    };
  }
  setUpstreamHeader(name: string, value: string): void {
    this.#ctx.setUpstreamHeader(checkHeader(this.#policy, name, value, true), value);
  }
  setResponseHeader(name: string, value: string): void {
    this.#ctx.setResponseHeader(checkHeader(this.#policy, name, value, false), value);
  }
}

/** Anything but a Problem is the policy's bug: a 500 with the cause logged, never a crash. */
function asProblem(policy: string, err: unknown): Problem {
  if (isProblem(err)) return err;
  return new Problem('internal-error', {
    detail: 'An unexpected error occurred.',
    cause: new Error(`policy ${policy} failed: ${err instanceof Error ? err.message : String(err)}`, {
      cause: err,
    }),
  });
}

function definedStage(policy: string, handler: PolicyHandler): Stage {
  const name = `policy:${policy}`;
  const fail = (err: unknown): never => {
    throw asProblem(policy, err);
  };
  return {
    name,
    run(ctx) {
      let out: void | Promise<void> = undefined;
      try {
        out = handler(new PolicyRequestView(ctx, policy));
      } catch (err) {
        fail(err);
      }
      if (out !== undefined && typeof (out as { then?: unknown }).then === 'function')
        return Promise.resolve(out).then(() => undefined, fail);
    },
  };
}

type Middleware = (req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void) => unknown;

/**
 * An Express middleware's `next(err)` as a problem (SPEC §12): a 4xx `status`/`statusCode` keeps
 * its status (401 invalid-credentials, 403 forbidden, 404 not-found, 429 rate-limit-exceeded,
 * others `about:blank`), with the error's message as `detail` unless it says it is not for
 * clients (`expose: false`); anything else is a 500.
 */
export function middlewareProblem(policy: string, err: unknown): Problem {
  if (isProblem(err)) return err;
  const e = (err ?? {}) as {
    status?: unknown;
    statusCode?: unknown;
    message?: unknown;
    expose?: unknown;
    headers?: unknown;
  };
  const status = typeof e.status === 'number' ? e.status : e.statusCode;
  if (typeof status !== 'number' || !Number.isInteger(status) || status < 400 || status > 499)
    return asProblem(policy, err);
  const detail =
    e.expose !== false && typeof e.message === 'string' && e.message.trim() !== ''
      ? e.message.slice(0, 1000)
      : undefined;
  const headers: Record<string, string> = {};
  if (e.headers !== null && typeof e.headers === 'object')
    for (const [k, v] of Object.entries(e.headers as Record<string, unknown>))
      if (typeof v === 'string' && TOKEN.test(k) && FIELD_VALUE.test(v)) headers[k.toLowerCase()] = v;
  const options = { detail, headers, cause: err };
  switch (status) {
    case 401:
      return new Problem('invalid-credentials', options);
    case 403:
      return new Problem('forbidden', options);
    case 404:
      return new Problem('not-found', options);
    case 429:
      return new Problem('rate-limit-exceeded', options);
    default:
      return Problem.ofStatus(status, reasonPhrase(status), options);
  }
}

/**
 * An Express middleware as a stage: run inside an Express app of its own (it gets the `req`/`res`
 * it expects), `next()` goes on, `next(err)` becomes a problem, and an answer it sends itself ends
 * the pipeline (that answer is logged and audited like any other).
 */
function middlewareStage(policy: string, middleware: Middleware): Stage {
  const app: Express = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.use(middleware as express.RequestHandler);
  // `app.handle` is Express' own entry (what `http.createServer(app)` calls), untyped in @types/express.
  const handle = (
    app as unknown as { handle(req: unknown, res: unknown, done: (err?: unknown) => void): void }
  ).handle.bind(app);
  return {
    name: `policy:${policy}`,
    run(ctx) {
      const res = ctx.res;
      // The middleware may answer itself (with the gateway's headers so far) or read them on res.
      ctx.flushResponseHeaders();
      // SPEC §4: every response carries the request id, one the middleware writes itself too.
      res.setHeader('x-request-id', ctx.requestId);
      return new Promise<void>((resolve, reject) => {
        const answered = () => {
          cleanup();
          ctx.handled = true;
          resolve();
        };
        const cleanup = () => {
          res.off('finish', answered);
          res.off('close', answered);
        };
        res.once('finish', answered);
        res.once('close', answered);
        handle(ctx.req, res, (err?: unknown) => {
          cleanup();
          if (err !== undefined && err !== null && err !== 'route' && err !== 'router')
            reject(middlewareProblem(policy, err));
          else if (res.headersSent) answered();
          else resolve();
        });
      });
    },
  };
}

/**
 * Builds the policy `name` of a config from its loaded module's default export and its
 * `options`: a `definePolicy` policy (options checked by its schema, `create` run once) or an
 * Express middleware factory (called once with the options). Mistakes are config issues with
 * their paths (`policies.<name>.options.<field>`), never exceptions.
 */
export function compilePolicy(name: string, loaded: unknown, options: unknown): CompileResult {
  const at = (...path: PropertyKey[]) => formatPath(['policies', name, ...path]);
  const fail = (path: string, message: string): CompileResult => ({ ok: false, issues: [{ path, message }] });
  const thrown = (err: unknown) => (err instanceof Error ? err.message : String(err));
  if (isPolicy(loaded)) {
    let value: unknown = options ?? {};
    if (loaded.schema !== undefined) {
      const parsed = loaded.schema.safeParse(value);
      if (!parsed.success)
        return {
          ok: false,
          issues: parsed.error.issues.map((i) => ({ path: at('options', ...i.path), message: i.message })),
        };
      value = parsed.data;
    }
    let handler: unknown;
    try {
      handler = loaded.create(value);
    } catch (err) {
      return fail(at(), `its create() failed: ${thrown(err)}`);
    }
    if (typeof handler !== 'function') return fail(at(), 'its create() must return a function (req) => …');
    return {
      ok: true,
      policy: { name, phase: loaded.phase, stage: definedStage(name, handler as PolicyHandler) },
    };
  }
  if (typeof loaded === 'function') {
    let middleware: unknown;
    try {
      middleware = (loaded as (o: unknown) => unknown)(options ?? {});
    } catch (err) {
      return fail(at('options'), `the middleware factory refused them: ${thrown(err)}`);
    }
    if (typeof middleware !== 'function')
      return fail(at('module'), 'its default export must return an Express middleware (req, res, next)');
    return {
      ok: true,
      policy: { name, phase: 'late', stage: middlewareStage(name, middleware as Middleware) },
    };
  }
  return fail(
    at('module'),
    'its default export must be a definePolicy(...) policy or an Express middleware factory (options) => (req, res, next)',
  );
}
