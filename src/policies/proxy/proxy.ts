import { Transform, type Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import { Problem, isProblem } from '../../problems/problem.js';
import type { ProblemWriter } from '../../problems/problem-details.js';
import {
  MAX_UPSTREAM_ERROR_BODY,
  renderUpstreamProblem,
  writeUpstreamProblem,
} from '../../problems/upstream-errors.js';
import { IDEMPOTENT_METHODS } from '../../shared/http.js';
import type { Clock } from '../../core/clock.js';
import type { RequestContext, UpstreamSink, UpstreamTrace } from '../../core/context.js';
import { afterSegmentPrefix, prefixSegments } from '../../core/path.js';
import type { Stage } from '../../core/stage.js';
import {
  MAX_VIA_HOPS,
  downstreamHeaders,
  tollgateHops,
  upstreamRequestHeaders,
  type RequestHeaderPlan,
} from './headers.js';
import type { Target, UpstreamPool } from './upstream-pool.js';
import type { UpstreamConfig } from './schema.js';
import { WebSocketExchange, type WebSocketOptions } from './websocket-tunnel.js';

/** Connection failures: the request never reached the upstream application. */
const CONNECT_ERRORS = new Set([
  'ECONNREFUSED',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EADDRNOTAVAIL',
  'UND_ERR_CONNECT_TIMEOUT',
]);
/** The upstream closed a kept-alive socket as we used it: nothing reached the application. */
const STALE_SOCKET_ERRORS = new Set(['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET']);
/**
 * Errors undici raises before anything is sent: the request the gateway built is one undici will
 * not send (a header value outside Latin-1 or with CR/LF, say). The target is not at fault, so
 * they are neither retried nor counted against its health — one caller's odd value must not take
 * an upstream out of rotation for everyone — and they are a gateway error, not a 502.
 */
const LOCAL_ERRORS = new Set([
  'UND_ERR_INVALID_ARG',
  'UND_ERR_NOT_SUPPORTED',
  'UND_ERR_INVALID_RETURN_VALUE',
  'ERR_INVALID_ARG_TYPE',
  'ERR_INVALID_ARG_VALUE',
  'ERR_INVALID_CHAR',
  'ERR_INVALID_HTTP_TOKEN',
]);
const TIMEOUT_ERRORS = new Set([
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
]);

export interface ProxyStageOptions {
  upstream: UpstreamConfig;
  upstreamErrors: 'rewrite' | 'rewrite-5xx' | 'passthrough';
  pool: UpstreamPool;
  headers: RequestHeaderPlan;
  writer: ProblemWriter;
  clock: Clock;
  /** Largest request body; enforced here for bodies streamed without Content-Length. */
  bodyLimit: number;
  /** Where the members dropped from an upstream 5xx problem are named (warn). */
  logger?: { warn(fields: object, message: string): void };
  /** Called for every upstream attempt that failed (metrics). */
  onUpstreamError?: (ctx: RequestContext, target: Target, code: string) => void;
  /** Set on a `websocket` route: handshakes (`ctx.upgrade`) are proxied as WebSockets. */
  websocket?: WebSocketOptions | undefined;
}

/**
 * The terminal stage of an upstream route: forwards the request to one of the route's targets
 * and streams the answer back. Resolves once the response is committed to the client; rejects
 * with a Problem (502, 503, 504, 413) when there is nothing to stream.
 */
export class ProxyStage implements Stage {
  readonly name = 'proxy';
  readonly #o: ProxyStageOptions;
  readonly #stripPrefix: string | undefined;
  readonly #stripSegments: readonly string[];

  constructor(options: ProxyStageOptions) {
    this.#o = options;
    const sp = options.upstream.stripPrefix;
    this.#stripPrefix = sp === '/' ? undefined : sp;
    this.#stripSegments = sp === undefined ? [] : prefixSegments(sp);
  }

  run(ctx: RequestContext): Promise<void> {
    // Terminal: from here the answer is the proxy's (streamed, rewritten, or a problem it rejects with).
    ctx.handled = true;
    const via = ctx.req.headers.via;
    if (via !== undefined && tollgateHops(via) >= MAX_VIA_HOPS)
      return Promise.reject(
        new Problem('bad-gateway', {
          detail: `The request has passed through the gateway ${MAX_VIA_HOPS} times: a route's upstream leads back to it.`,
        }),
      );
    if (ctx.upgrade !== undefined) {
      const ws = this.#o.websocket;
      if (ws === undefined)
        return Promise.reject(
          new Problem('bad-request', {
            detail: 'This route does not accept WebSocket (or other protocol) upgrades.',
            headers: { connection: 'close' },
          }),
        );
      return new Promise<void>((resolve, reject) => {
        new WebSocketExchange(ctx, this.#o, ws, this.upstreamPath(ctx), resolve, reject).attempt();
      });
    }
    return new Promise<void>((resolve, reject) => {
      new Exchange(ctx, this.#o, this.upstreamPath(ctx), resolve, reject).attempt();
    });
  }

  /** The path sent upstream (before the target's own base path): the canonical path with the prefix stripped. */
  upstreamPath(ctx: RequestContext): string {
    let path = ctx.path;
    const sp = this.#stripPrefix;
    if (sp !== undefined) {
      if (path.startsWith(sp) && (path.length === sp.length || path.charCodeAt(sp.length) === 47))
        // The exact prefix strips to nothing: `/api?q` → the target's base path itself (`/base?q`, or `/?q`).
        path = path.slice(sp.length);
      // Routes match ignoring case and `;params` (`/V1;x/orders`): strip the segments that matched.
      else path = afterSegmentPrefix(path, this.#stripSegments) ?? path;
    }
    return path + ctx.search;
  }
}

const enum Phase {
  /** Waiting for the upstream's response head. */
  Waiting,
  /** Streaming the upstream body to the client. */
  Streaming,
  /** Collecting an error body to rewrite it as a problem. */
  Collecting,
  Done,
}

/**
 * One client request's trip upstream, across retries: an undici dispatch handler that writes the
 * upstream's answer straight into the client response, pausing the upstream when the client
 * cannot keep up.
 */
class Exchange implements Dispatcher.DispatchHandlers {
  readonly #ctx: RequestContext;
  readonly #o: ProxyStageOptions;
  readonly #path: string;
  readonly #resolve: () => void;
  readonly #reject: (err: unknown) => void;
  readonly #hasBody: boolean;
  #target: Target | undefined;
  #tried: Target[] | undefined;
  #retriesLeft: number;
  #phase = Phase.Waiting;
  #started = 0;
  #abort: ((err?: Error) => void) | undefined;
  #clientGone = false;
  #status = 0;
  #headers: Record<string, string> | undefined;
  #collected: Buffer[] | undefined;
  #collectedBytes = 0;
  #lastError: Problem | undefined;
  #anyTarget = false;
  #resume: (() => void) | undefined;
  /** Whether `#resume` listens for the client response's `drain` (armed at the first backpressure). */
  #drainArmed = false;
  /** Set when the request was sent on a context with an upstream sink: the close hooks wait for us. */
  #release: (() => void) | undefined;
  /** Set once the client left after the request was sent: the answer goes here instead. */
  #sink: UpstreamSink | undefined;
  #deadline: NodeJS.Timeout | undefined;
  /** The client span of the attempt in progress (telemetry on); ended with the attempt. */
  #span: UpstreamTrace | undefined;
  #attempts = 0;

  constructor(
    ctx: RequestContext,
    o: ProxyStageOptions,
    path: string,
    resolve: () => void,
    reject: (err: unknown) => void,
  ) {
    this.#ctx = ctx;
    this.#o = o;
    this.#path = path;
    this.#resolve = resolve;
    this.#reject = reject;
    const h = ctx.req.headers;
    const length = h['content-length'];
    this.#hasBody =
      ctx.rawBody !== undefined
        ? ctx.rawBody.length > 0
        : (length !== undefined && length !== '0') || h['transfer-encoding'] !== undefined;
    // A body can be sent twice only when the gateway holds it (buffered for HMAC or idempotency).
    const replayable = !this.#hasBody || ctx.rawBody !== undefined;
    this.#retriesLeft = replayable && IDEMPOTENT_METHODS.has(ctx.req.method ?? '') ? o.upstream.retries : 0;
    ctx.onClose(() => this.#clientClosed());
  }

  attempt(): void {
    const o = this.#o;
    const ctx = this.#ctx;
    if (this.#clientGone) {
      // The client left while an earlier stage ran: nothing is sent upstream on its behalf.
      this.#fail(new Problem('bad-gateway', { detail: 'The client closed the connection.' }));
      return;
    }
    // After a reset, another target first; the same one (on a fresh connection) when it is the only one.
    const target = o.pool.pick(this.#tried) ?? (this.#anyTarget ? o.pool.pick(undefined) : undefined);
    if (target === undefined) {
      // With retries exhausted, the failure that made us retry is the answer.
      this.#fail(
        this.#lastError ??
          new Problem('service-unavailable', {
            detail: 'No healthy upstream target is available.',
            headers: { 'retry-after': String(o.pool.retryAfterSec()) },
          }),
      );
      return;
    }
    this.#target = target;
    this.#abort = undefined;
    ctx.upstreamTarget = target.origin;
    this.#started = o.clock.monotonic();
    const headers = upstreamRequestHeaders(ctx, o.headers, target.host);
    const trace = ctx.trace;
    if (trace !== undefined) {
      // One client span per attempt; the upstream sees it as its parent.
      this.#span = trace.upstream(ctx.req.method ?? 'GET', target, this.#attempts);
      headers.traceparent = this.#span.traceparent;
    }
    this.#attempts++;
    let body: Buffer | Readable | null = null;
    if (ctx.rawBody !== undefined) {
      headers['content-length'] = String(ctx.rawBody.length);
      body = ctx.rawBody.length > 0 ? ctx.rawBody : null;
    } else if (this.#hasBody) body = this.#bodyStream();
    target.pool.dispatch(
      {
        origin: target.origin,
        path: joinPath(target.basePath, this.#path),
        method: (ctx.req.method ?? 'GET') as Dispatcher.HttpMethod,
        headers: headers as Record<string, string | string[]>,
        body,
      },
      this,
    );
  }

  #bodyStream(): Readable {
    const ctx = this.#ctx;
    const source = ctx.req;
    // Everything before the proxy has passed: a client waiting on `Expect: 100-continue` may send.
    ctx.sendContinue();
    const length = source.headers['content-length'];
    if (length !== undefined) {
      ctx.bytesIn = Number(length) || 0;
      return source;
    }
    // A chunked upload: its size is unknown up front, so the limit is enforced as it streams.
    const limit = this.#o.bodyLimit;
    let size = 0;
    const counter = new Transform({
      transform: (chunk: Buffer, _enc, done) => {
        size += chunk.length;
        ctx.bytesIn = size;
        if (size > limit) {
          source.unpipe(counter);
          const problem = new Problem('payload-too-large', {
            detail: `The request body is larger than ${limit} bytes.`,
            headers: { connection: 'close' },
          });
          this.#fail(problem);
          this.#abort?.(problem);
          done(problem);
          return;
        }
        done(null, chunk);
      },
    });
    return source.pipe(counter);
  }

  // ---- undici dispatch handler -------------------------------------------------------------

  onConnect(abort: (err?: Error) => void): void {
    this.#abort = abort;
    if (this.#clientGone) abort();
  }

  /** Called by undici once the request (head and body) is written to the upstream's socket. */
  onRequestSent(): void {
    const ctx = this.#ctx;
    ctx.upstreamSent = true;
    // The upstream may act on it from here: a client leaving now must not lose the answer (or
    // release the key) when a stage needs it. Routes without a sink abort as before, for nothing.
    if (ctx.upstreamSink !== undefined && this.#release === undefined && !this.#clientGone)
      this.#release = ctx.hold(() => this.#detach());
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void): boolean {
    if (statusCode < 200) return true; // 1xx: the final response follows
    const ctx = this.#ctx;
    const o = this.#o;
    const target = this.#target!;
    o.pool.succeeded(target);
    ctx.upstreamStatus = statusCode;
    ctx.upstreamLatencyMs = o.clock.monotonic() - this.#started;
    if (ctx.meterFields !== undefined) ctx.readMeters(rawHeaders);
    if (this.#phase !== Phase.Waiting) return true; // already answered (413 mid-upload)
    this.#resume = resume;
    const { list, map, invalid } = downstreamHeaders(
      rawHeaders,
      statusCode,
      ctx,
      target,
      o.upstream.stripPrefix,
      o.headers,
    );
    if (invalid !== undefined) {
      // writeHead would throw on it and the client lose its connection: an unusable response is a 502.
      o.onUpstreamError?.(ctx, target, 'INVALID_RESPONSE_HEADER');
      this.#fail(
        new Problem('bad-gateway', {
          detail: 'The upstream service sent an invalid response.',
          cause: new Error(`upstream response header ${JSON.stringify(invalid)} is not valid HTTP`),
        }),
      );
      this.#abort?.(); // the rest of that response is not wanted, nor its connection
      return false;
    }
    const mode = o.upstreamErrors;
    if (statusCode >= 400 && mode !== 'passthrough' && (mode === 'rewrite' || statusCode >= 500)) {
      this.#phase = Phase.Collecting;
      this.#status = statusCode;
      this.#headers = map;
      this.#collected = [];
      return true;
    }
    this.#phase = Phase.Streaming;
    // No body, whatever the upstream's framing says (RFC 9110 §6.4.5, §15.3.5, §15.4.5): the answer
    // is complete now. A 204/304 that announces a body would keep undici waiting for it until the
    // timeout, and where its next response starts is unclear: that connection is dropped.
    const bodiless = statusCode === 204 || statusCode === 304 || ctx.req.method === 'HEAD';
    const length = map['content-length'];
    const announcesBody =
      bodiless &&
      ctx.req.method !== 'HEAD' &&
      ((length !== undefined && length !== '0') || map['transfer-encoding'] !== undefined);
    if (this.#sink !== undefined) {
      this.#resolve();
      if (!this.#sink.head(statusCode, list)) this.#abort?.(NOT_KEPT);
      else if (bodiless) {
        this.#phase = Phase.Done;
        this.#sink.end();
        this.#settle();
        if (announcesBody) this.#abort?.();
      }
      return true;
    }
    const res = ctx.res;
    // The headers the gateway set (RateLimit, CORS, a policy's) are the answer; an upstream's own
    // (same names) would replace them in writeHead.
    // The gateway's collected ones go first in the same writeHead (see answerHead); all are owned.
    const owned = ctx.responseHeaderNames;
    if (owned !== undefined && owned.includes('vary')) mergeVary(ctx, list);
    res.writeHead(statusCode, owned === undefined ? list : withoutNames(list, owned, ctx.responseHeaders));
    if (bodiless) {
      this.#phase = Phase.Done;
      res.end();
      this.#resolve();
      this.#settle();
      if (announcesBody) this.#abort?.();
      return true;
    }
    // The `drain` listener is added at the first backpressure (most answers never see one).
    this.#resolve();
    return true;
  }

  onData(chunk: Buffer): boolean {
    if (this.#phase === Phase.Streaming) {
      this.#ctx.bytesOut += chunk.length;
      if (this.#sink !== undefined) {
        if (!this.#sink.data(chunk)) this.#abort?.(NOT_KEPT);
        return true; // no backpressure from a client that is gone
      }
      const res = this.#ctx.res;
      if (res.write(chunk)) return true;
      // The client cannot keep up: the upstream is paused until the response drains.
      if (!this.#drainArmed) {
        this.#drainArmed = true;
        res.on('drain', this.#resume!);
      }
      return false;
    }
    if (this.#phase === Phase.Collecting) {
      this.#collectedBytes += chunk.length;
      if (this.#collectedBytes <= MAX_UPSTREAM_ERROR_BODY) this.#collected!.push(chunk);
    }
    return true;
  }

  onComplete(trailers?: Array<string | Buffer> | null): void {
    const ctx = this.#ctx;
    // A meter's trailer (SSE, chunked) replaces its header: the cost is known once the body is sent.
    if (ctx.meterFields !== undefined && trailers != null && trailers.length > 0) ctx.readMeters(trailers);
    if (this.#phase === Phase.Streaming) {
      this.#phase = Phase.Done;
      if (this.#sink !== undefined) this.#sink.end();
      else ctx.res.end();
      this.#settle();
      return;
    }
    if (this.#phase === Phase.Collecting) {
      this.#phase = Phase.Done;
      const body =
        this.#collectedBytes <= MAX_UPSTREAM_ERROR_BODY ? Buffer.concat(this.#collected!) : undefined;
      const isHead = ctx.req.method === 'HEAD';
      const dropped: string[] = [];
      if (this.#sink !== undefined)
        this.#toSink(
          renderUpstreamProblem(
            this.#o.writer,
            ctx.requestId,
            this.#status,
            this.#headers!,
            isHead ? undefined : body,
            dropped,
          ),
        );
      else
        dropped.push(
          ...writeUpstreamProblem(
            ctx.res,
            this.#o.writer,
            ctx.requestId,
            this.#status,
            this.#headers!,
            isHead ? undefined : body,
          ),
        );
      // Names only: the values are where an upstream's stack traces and hostnames live.
      if (dropped.length > 0)
        this.#o.logger?.warn(
          { request_id: ctx.requestId, route: ctx.routeId, upstream_status: this.#status, dropped },
          'upstream problem members dropped',
        );
      this.#resolve();
      this.#settle();
    }
  }

  onError(err: Error): void {
    const ctx = this.#ctx;
    const o = this.#o;
    if (this.#span !== undefined)
      this.#endSpan(
        this.#clientGone
          ? 'client_closed'
          : err === NOT_KEPT
            ? undefined
            : ((err as NodeJS.ErrnoException).code ?? (isProblem(err) ? err.slug : 'unknown')),
      );
    if (this.#sink !== undefined) {
      this.#detachedError(err);
      return;
    }
    if (this.#phase === Phase.Streaming) {
      // A body cut short upstream must reach the client as a cut-short body, never as a complete one.
      this.#phase = Phase.Done;
      ctx.res.destroy();
      this.#settle();
      return;
    }
    if (this.#phase === Phase.Done) return;
    if (this.#clientGone) {
      this.#fail(new Problem('bad-gateway', { detail: 'The client closed the connection.', cause: err }));
      return;
    }
    if (isProblem(err)) {
      this.#fail(err);
      return;
    }
    const target = this.#target!;
    const code = (err as NodeJS.ErrnoException).code ?? 'unknown';
    if (LOCAL_ERRORS.has(code)) {
      this.#fail(
        new Problem('internal-error', {
          detail: 'The gateway could not build the upstream request.',
          cause: err,
        }),
      );
      return;
    }
    o.onUpstreamError?.(ctx, target, code);
    const retryable =
      (CONNECT_ERRORS.has(code) || STALE_SOCKET_ERRORS.has(code)) &&
      this.#phase === Phase.Waiting &&
      this.#retriesLeft > 0;
    // A reset of a kept-alive socket is usually the upstream closing it idle: retried elsewhere, it
    // does not count against the target's health; when it cannot be retried, it does.
    if (!(retryable && STALE_SOCKET_ERRORS.has(code))) o.pool.failed(target);
    const problem = TIMEOUT_ERRORS.has(code)
      ? new Problem('gateway-timeout', {
          detail: `The upstream service did not answer within ${o.upstream.timeoutMs} ms.`,
          cause: err,
        })
      : new Problem('bad-gateway', {
          detail: 'The upstream service could not be reached or answered invalidly.',
          cause: err,
        });
    if (retryable) {
      this.#retriesLeft--;
      this.#lastError = problem;
      // A target that refused the connection is skipped. After a reset (usually a kept-alive socket
      // the upstream closed) another target is preferred, but the same one may serve the retry on a
      // fresh connection when there is no other.
      (this.#tried ??= []).push(target);
      this.#anyTarget = STALE_SOCKET_ERRORS.has(code);
      this.attempt();
      return;
    }
    this.#fail(problem);
  }

  // ------------------------------------------------------------------------------------------

  #fail(problem: Problem): void {
    if (this.#phase === Phase.Done || this.#phase === Phase.Streaming) return;
    this.#phase = Phase.Done;
    if (this.#sink !== undefined) {
      // Nobody to answer: the sink gets the problem the client would have got (kept only with
      // `storeServerErrors`), and the close hooks must see it was the gateway's answer.
      this.#ctx.problem = problem;
      const o = this.#o;
      this.#toSink(
        o.writer.render(problem.status, o.writer.document(problem, this.#ctx.requestId), problem.headers),
      );
    }
    this.#reject(problem);
    this.#settle();
  }

  #clientClosed(): void {
    if (this.#ctx.res.writableFinished || this.#sink !== undefined) return;
    // The client left before the end: stop the upstream request at once (frees the socket too).
    this.#clientGone = true;
    this.#abort?.(new Error('client closed the connection'));
  }

  // ---- the answer of a client that left, finishing into the context's sink ------------------

  /** The client left after the request was sent (and a sink wants the answer): read on, bounded. */
  #detach(): void {
    if (this.#phase === Phase.Done) return;
    this.#clientGone = true; // no new attempt on its behalf
    this.#sink = this.#ctx.upstreamSink;
    // The dead socket gave backpressure (a paused upstream) and will never drain.
    this.#resume?.();
    // Bounded by the route's upstream timeout from now, whatever the upstream keeps sending.
    this.#deadline = setTimeout(() => {
      this.#abort?.(DETACHED_TIMEOUT);
      this.#phase = Phase.Done;
      this.#settle(); // in case undici had nothing left to abort
    }, this.#o.upstream.timeoutMs);
    this.#deadline.unref();
  }

  #detachedError(err: Error): void {
    if (this.#phase === Phase.Streaming) {
      this.#phase = Phase.Done; // cut short (or no longer worth keeping): nothing complete to keep
      this.#settle();
      return;
    }
    if (this.#phase === Phase.Done) return;
    const code = (err as NodeJS.ErrnoException).code ?? 'unknown';
    const ours = err === NOT_KEPT || err === DETACHED_TIMEOUT;
    if (!ours) this.#o.onUpstreamError?.(this.#ctx, this.#target!, code);
    this.#fail(
      err === DETACHED_TIMEOUT || TIMEOUT_ERRORS.has(code)
        ? new Problem('gateway-timeout', {
            detail: `The upstream service did not answer within ${this.#o.upstream.timeoutMs} ms.`,
            cause: err,
          })
        : new Problem('bad-gateway', {
            detail: 'The upstream service could not be reached or answered invalidly.',
            cause: err,
          }),
    );
  }

  #toSink(answer: { status: number; headers: string[]; body: Buffer }): void {
    const sink = this.#sink!;
    if (sink.head(answer.status, answer.headers) && sink.data(answer.body)) sink.end();
  }

  /** Ends the attempt's client span (telemetry on), with the error that ended it, if one did. */
  #endSpan(error?: string): void {
    const span = this.#span;
    if (span === undefined) return;
    this.#span = undefined;
    span.end(this.#ctx.upstreamStatus, error);
  }

  /** The exchange is over (answered, failed or cut short): the close hooks may run. */
  #settle(): void {
    if (this.#span !== undefined) this.#endSpan();
    if (this.#deadline !== undefined) clearTimeout(this.#deadline);
    const release = this.#release;
    if (release === undefined) return;
    this.#release = undefined;
    release();
  }
}

/** Why a detached answer was dropped: no longer worth keeping (not an upstream failure). */
const NOT_KEPT = new Error('the answer is not kept');
const DETACHED_TIMEOUT = new Error('the upstream did not finish within timeoutMs after the client left');

export function createProxyStage(options: ProxyStageOptions): Stage {
  return new ProxyStage(options);
}

/** The target's base path and the forwarded path (which may be empty, or only a query). */
function joinPath(base: string, path: string): string {
  const joined = base + path;
  return joined.charCodeAt(0) === 47 /* / */ ? joined : '/' + joined;
}

/**
 * `Vary` is a list, not a value to replace: the gateway's (CORS' `Origin`) and the upstream's
 * (`Accept-Encoding`, …) are both true of the answer, so a gateway-owned `Vary` takes the
 * upstream's members too (`*` stays `*`). The upstream's own copy is then dropped as owned.
 */
function mergeVary(ctx: RequestContext, list: readonly string[]): void {
  let members: string[] | undefined;
  for (let i = 0; i < list.length; i += 2) {
    if (list[i]!.toLowerCase() !== 'vary') continue;
    members ??= String(ctx.responseHeader('vary') ?? '')
      .split(',')
      .map((m) => m.trim())
      .filter((m) => m !== '');
    for (const part of list[i + 1]!.split(',')) {
      const m = part.trim();
      if (m !== '' && !members.some((known) => known.toLowerCase() === m.toLowerCase())) members.push(m);
    }
  }
  if (members !== undefined) ctx.setResponseHeader('vary', members.includes('*') ? '*' : members.join(', '));
}

/** `first` (the gateway's collected headers, if any), then `list` without the fields named in `names`. */
function withoutNames(
  list: readonly string[],
  names: readonly string[],
  first?: readonly string[],
): string[] {
  const out: string[] = first === undefined ? [] : first.slice();
  for (let i = 0; i < list.length; i += 2) {
    const name = list[i]!;
    if (!names.includes(name.toLowerCase())) out.push(name, list[i + 1]!);
  }
  return out;
}
