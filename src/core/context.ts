import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Problem } from '../problems/problem.js';
import { clientAddress, type TrustFn } from './client-ip.js';
import type { Identity, KeyCredential } from './identity.js';

export type { Identity, KeyCredential, Plan, QuotaPeriod, RateLimitBy, RateLimitRule } from './identity.js';

/** What a stage may ask to run once the response is over (finished or aborted). */
export type CloseHook = (ctx: RequestContext) => void;

/**
 * Where the proxy delivers the upstream's answer once the client has left, on a request whose
 * context has one (the idempotency stage sets it: the answer is kept for the client's retry).
 * Nothing pushes back: a sink keeps what it is given, or says it is not worth keeping.
 */
export interface UpstreamSink {
  /** The head of the answer, as the client would have got it; false: not worth keeping, stop. */
  head(status: number, headers: readonly string[]): boolean;
  /** A body chunk; false: no longer worth keeping (too large), stop. */
  data(chunk: Buffer): boolean;
  /** The answer is complete. */
  end(): void;
}

/**
 * A request that asked to switch protocols (a WebSocket handshake, from the server's `upgrade`
 * event): the raw client socket, the bytes that came after the request head, and what became of it.
 * `ctx.res` is a ServerResponse bound to that socket, so a refusal is an ordinary HTTP answer.
 */
export interface UpgradeState {
  readonly socket: Duplex;
  readonly head: Buffer;
  /** The `101` went out: the connection is a tunnel now (`finalStatus` says 101). */
  established: boolean;
  /** The WebSocket close code seen or sent, where known. */
  closeCode: number | undefined;
}

/**
 * The spans of one request while telemetry is on (`telemetry.otlp`, or a `tracer` given to
 * `proxy()`); `ctx.trace` is undefined otherwise, and nothing on the request path calls a tracer.
 */
export interface RequestTrace {
  /**
   * Starts the client span of one upstream attempt (a retry is an attempt of its own, `resend`
   * counting from 0); the upstream gets its `traceparent`.
   */
  upstream(
    method: string,
    target: { readonly host: string; readonly origin: string },
    resend: number,
  ): UpstreamTrace;
  /** The response is over: ends the request's own (server) span, if it has one. */
  finish(ctx: RequestContext): void;
}

/** One upstream attempt's client span. */
export interface UpstreamTrace {
  /** The `traceparent` sent upstream: this span is the upstream's parent. */
  readonly traceparent: string;
  /** Ends the span (once; later calls do nothing): the upstream's status, or the error code of a failed attempt. */
  end(status: number | undefined, error?: string): void;
}

const CONTEXT = Symbol.for('tollgate.context');
const noTrust: TrustFn = () => false;

/**
 * Typed per-request state, created once per request by the gateway (or by the first Tollgate
 * middleware in a plain Express app) and passed to every stage.
 */
export class RequestContext {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  /** Epoch ms when the request arrived. */
  readonly startedAt: number;
  /** Monotonic ms when the request arrived, for latency. */
  readonly startMono: number;
  readonly requestId: string;
  readonly traceparent: string;
  /** The normalised path the route was matched on (no query). */
  path: string;
  /** The raw query, with its leading `?`, or ''. */
  search: string;
  routeId: string | undefined;
  identity: Identity | undefined;
  /** The key record behind an API-key identity (the signature stage needs its secret). */
  keyRecord: KeyCredential | undefined;
  /** What an HMAC-signed request carried and how it was judged (for the audit record). */
  signature: { timestamp: string | null; bodySha256: string; result: string } | undefined;
  /** The raw request body, on routes that needed it buffered (HMAC, idempotency). */
  rawBody: Buffer | undefined;
  problem: Problem | undefined;
  upstreamTarget: string | undefined;
  upstreamStatus: number | undefined;
  upstreamLatencyMs: number | undefined;
  /** The whole request was written to an upstream: it may act on it (charges are owed from here). */
  upstreamSent: boolean;
  /** Set by a stage that needs the upstream's answer even if the client leaves (see `UpstreamSink`). */
  upstreamSink: UpstreamSink | undefined;
  rateLimitPolicy: string | undefined;
  /** Names of the shadow-mode rate limits this request would have been refused by (SPEC §10). */
  rateLimitShadow: string[] | undefined;
  /**
   * Lower-case names of the response fields (header or trailer) carrying meter values, set by the
   * rate-limit stage on a metered request; the proxy fills `meterValues` (same order) from the
   * upstream's answer, a trailer replacing a header of the same name.
   */
  meterFields: readonly string[] | undefined;
  meterValues: Array<string | undefined> | undefined;
  idempotentReplay: boolean;
  /** Set by a stage that answered the request itself; later stages are skipped. */
  handled: boolean;
  bytesIn: number;
  bytesOut: number;
  /**
   * The socket peer, read when the request arrives: by the time the response ends, a request
   * whose body streamed upstream may have lost its socket (`req.socket` is null), and the audit
   * record still needs the address.
   */
  readonly peerAddress: string;
  /** Filled lazily by `clientIp`. */
  clientIpValue: string | undefined;
  /** Which peers' `X-Forwarded-For` is believed (from `trustProxy`); undefined trusts nobody. */
  trust: TrustFn | undefined;
  closeHooks: CloseHook[] | undefined;
  /** The response is over (finished or aborted); the close hooks have run unless a hold keeps them. */
  closed: boolean;
  /**
   * The host the request is for: its `Host` header, or the authority of an absolute-form target
   * (RFC 9112 §3.2.2). The gateway validates it before routing.
   */
  host: string | undefined;
  /** The client sent `Expect: 100-continue` and has not been told to send its body yet. */
  expectsContinue: boolean;
  /** Headers a stage adds to the upstream request (`[name, value, …]`, lower-case names), after the client's. */
  upstreamHeaders: string[] | undefined;
  /** Set on an upgrade request (a WebSocket handshake); undefined on every other request. */
  upgrade: UpgradeState | undefined;
  /** Lower-case names of response headers the gateway set (`setResponseHeader`): an upstream's own copies are dropped. */
  responseHeaderNames: string[] | undefined;
  /** The request's spans when telemetry is on; undefined (and never looked at further) when off. */
  trace: RequestTrace | undefined;
  /**
   * The gateway's response headers (`[name, value, …]`, lower-case names, one entry a name) while
   * `collectsHeaders`: every writer of an answer puts them into its single `writeHead` call
   * (`answerHead`). Not `res.setHeader`: Node's `writeHead(status, list)` after a `setHeader`
   * takes a merging path that cost ~3 µs per request (bench/stages.js).
   */
  responseHeaders: string[] | undefined;
  /**
   * True where the gateway writes every answer (`gateway.handle`): `setResponseHeader` collects in
   * `responseHeaders`. False (a context made by Express middleware, `fakeContext`, or after
   * `flushResponseHeaders`): it calls `res.setHeader`, for the code that writes the answer itself.
   */
  collectsHeaders: boolean;
  /** Holders' callbacks for the client leaving (see `hold`); undefined while nothing holds. */
  #holders: Array<() => void> | undefined;
  #reportHookError: ((err: unknown, ctx: RequestContext) => void) | undefined;

  constructor(
    req: IncomingMessage,
    res: ServerResponse,
    requestId: string,
    traceparent: string,
    now: number,
    mono: number,
  ) {
    this.req = req;
    this.res = res;
    this.startedAt = now;
    this.startMono = mono;
    this.requestId = requestId;
    this.traceparent = traceparent;
    this.path = '/';
    this.search = '';
    this.routeId = undefined;
    this.identity = undefined;
    this.keyRecord = undefined;
    this.signature = undefined;
    this.rawBody = undefined;
    this.problem = undefined;
    this.upstreamTarget = undefined;
    this.upstreamStatus = undefined;
    this.upstreamLatencyMs = undefined;
    this.upstreamSent = false;
    this.upstreamSink = undefined;
    this.rateLimitPolicy = undefined;
    this.rateLimitShadow = undefined;
    this.meterFields = undefined;
    this.meterValues = undefined;
    this.idempotentReplay = false;
    this.handled = false;
    this.bytesIn = 0;
    this.bytesOut = 0;
    // `socket` is typed non-null, but is null on a request whose stream was already destroyed.
    this.peerAddress = (req.socket as IncomingMessage['socket'] | null)?.remoteAddress ?? '';
    this.clientIpValue = undefined;
    this.trust = undefined;
    this.closeHooks = undefined;
    this.closed = false;
    this.host = req.headers.host;
    this.expectsContinue = false;
    this.upstreamHeaders = undefined;
    this.upgrade = undefined;
    this.responseHeaderNames = undefined;
    this.trace = undefined;
    this.responseHeaders = undefined;
    this.collectsHeaders = false;
    this.#holders = undefined;
    this.#reportHookError = undefined;
    (req as unknown as Record<symbol, RequestContext>)[CONTEXT] = this;
  }

  /**
   * The client address (SPEC §2 `trustProxy`), computed on first use from the peer captured on
   * arrival and the request headers — never from the socket, which may be gone by then.
   */
  get clientIp(): string {
    if (this.clientIpValue === undefined) {
      const trust = this.trust;
      this.clientIpValue = clientAddress(
        this.peerAddress,
        this.req.headers,
        trust ?? noTrust,
        trust === undefined,
      );
    }
    return this.clientIpValue;
  }

  /**
   * Tells a client waiting on `Expect: 100-continue` to send its body: called just before the
   * body is first read, so a request refused earlier (authentication, limits) is answered with
   * its final status and the body is never sent.
   */
  sendContinue(): void {
    if (!this.expectsContinue) return;
    this.expectsContinue = false;
    if (!this.res.headersSent) this.res.writeContinue();
  }

  /**
   * Sets a response header that is the gateway's answer whatever the upstream says: an upstream
   * response header of the same name is dropped (RateLimit, CORS, a policy's header).
   */
  setResponseHeader(name: string, value: string): void {
    const lower = name.toLowerCase();
    if (this.collectsHeaders) setField((this.responseHeaders ??= []), lower, value);
    else this.res.setHeader(lower, value);
    const names = (this.responseHeaderNames ??= []);
    if (!names.includes(lower)) names.push(lower);
  }

  /**
   * A response header the gateway set (collected or on `res`), or any other set with
   * `res.setHeader`; `name` in lower case.
   */
  responseHeader(name: string): string | number | string[] | undefined {
    const list = this.responseHeaders;
    if (list !== undefined) for (let i = 0; i < list.length; i += 2) if (list[i] === name) return list[i + 1];
    return this.res.getHeader(name);
  }

  /**
   * Puts the collected response headers on `res` (`res.setHeader`) and sets later ones there at
   * once: before code that writes the answer itself or reads `res.getHeader` (an Express
   * middleware run as a policy).
   */
  flushResponseHeaders(): void {
    this.collectsHeaders = false;
    const list = this.responseHeaders;
    if (list === undefined) return;
    this.responseHeaders = undefined;
    for (let i = 0; i < list.length; i += 2) this.res.setHeader(list[i]!, list[i + 1]!);
  }

  /**
   * Records the meter values among raw answer fields (`[name, value, …]`: an upstream's headers
   * or trailers, a mock's headers) when the rate-limit stage asked for some (`meterFields`). A field
   * sent more than once is ambiguous: it reads as unusable (''), which adds 0 and counts as missing.
   */
  readMeters(raw: ReadonlyArray<string | Buffer>): void {
    const fields = this.meterFields;
    if (fields === undefined) return;
    const values = (this.meterValues ??= new Array<string | undefined>(fields.length));
    let seen: boolean[] | undefined;
    for (let i = 0; i + 1 < raw.length; i += 2) {
      const name = raw[i]!;
      // Names are tokens (ASCII): one of another length is none of ours, and is neither decoded
      // (an upstream's names are Buffers) nor lower-cased.
      const length = name.length;
      let maybe = false;
      for (let f = 0; f < fields.length; f++)
        if (fields[f]!.length === length) {
          maybe = true;
          break;
        }
      if (!maybe) continue;
      const at = fields.indexOf(String(name).toLowerCase());
      if (at === -1) continue;
      seen ??= new Array<boolean>(fields.length).fill(false);
      values[at] = seen[at] ? '' : String(raw[i + 1]);
      seen[at] = true;
    }
  }

  /** Adds a header to the upstream request (replacing a client copy of the same name). */
  setUpstreamHeader(name: string, value: string): void {
    (this.upstreamHeaders ??= []).push(name.toLowerCase(), value);
  }

  /** W3C trace id (the second field of `traceparent`). */
  get traceId(): string {
    return this.traceparent.slice(3, 35);
  }

  /**
   * Runs `hook` once the response is over, finished or aborted (hooks run in the order added) —
   * at once when it already is: a client that left during an earlier async stage must still stop
   * what a later stage would start for it.
   */
  onClose(hook: CloseHook): void {
    if (this.closed && this.#holders === undefined) hook(this);
    else (this.closeHooks ??= []).push(hook);
  }

  /**
   * Keeps the close hooks waiting until the returned release is called: for work that goes on
   * after the client left (the proxy reading an answer the idempotency stage keeps), whose outcome
   * the hooks judge (store or release the key, charge or refund the quota). `onClientGone` runs
   * at once if the response closes while held.
   */
  hold(onClientGone: () => void): () => void {
    const holders = (this.#holders ??= []);
    holders.push(onClientGone);
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      holders.splice(holders.indexOf(onClientGone), 1);
      if (holders.length > 0) return;
      this.#holders = undefined;
      if (this.closed) this.#runCloseHooks();
    };
  }

  /**
   * The response is over: runs the close hooks in the order added (now, or once the last hold is
   * released). A hook that throws is given to `report` (with this context) and the others still run.
   */
  close(report: (err: unknown, ctx: RequestContext) => void): void {
    if (this.closed) return;
    this.closed = true;
    this.#reportHookError = report;
    const holders = this.#holders;
    if (holders === undefined) this.#runCloseHooks();
    else for (const gone of [...holders]) gone();
  }

  #runCloseHooks(): void {
    const hooks = this.closeHooks;
    if (hooks === undefined) return;
    this.closeHooks = undefined;
    for (const hook of hooks) {
      try {
        hook(this);
      } catch (err) {
        this.#reportHookError?.(err, this);
      }
    }
  }
}

/** Sets `name` (lower case) in a `[name, value, …]` list: replaces its value, or appends it. */
export function setField(list: string[], name: string, value: string): void {
  for (let i = 0; i < list.length; i += 2)
    if (list[i] === name) {
      list[i + 1] = value;
      return;
    }
  list.push(name, value);
}

/**
 * The head of an answer the gateway writes (`res.writeHead(status, answerHead(ctx, list))`): its
 * collected response headers (`setResponseHeader`), then `list`, whose names win — what Node's
 * `writeHead` does with headers set by `setHeader` before it, without its slow merging path.
 * `list`'s names may be in any case; `drop` (lower case) are collected names left out as well.
 */
export function answerHead(
  ctx: RequestContext | undefined,
  list: string[],
  drop?: readonly string[],
): string[] {
  const own = ctx?.responseHeaders;
  if (own === undefined) return list;
  const out: string[] = [];
  // Hand-written: a handful of names on each side, compared by length first (no Set, no lower-casing of most).
  next: for (let i = 0; i < own.length; i += 2) {
    const name = own[i]!;
    if (drop !== undefined && drop.includes(name)) continue;
    for (let j = 0; j < list.length; j += 2) {
      const other = list[j]!;
      if (other.length === name.length && (other === name || other.toLowerCase() === name)) continue next;
    }
    out.push(name, own[i + 1]!);
  }
  for (let j = 0; j < list.length; j++) out.push(list[j]!);
  return out;
}

/** The context of a request, if a Tollgate gateway or middleware has seen it. */
export function contextOf(req: IncomingMessage): RequestContext | undefined {
  return (req as unknown as Record<symbol, RequestContext | undefined>)[CONTEXT];
}

/** nginx's convention for "the client closed the connection before any answer was sent". */
export const CLIENT_CLOSED = 499;

/**
 * The status a request ended with: what was sent (101 for a WebSocket that was proxied), or 499
 * when the client left before any response head (Node's `statusCode` would still say its default, 200).
 */
export function finalStatus(ctx: RequestContext): number {
  if (ctx.upgrade?.established === true) return 101;
  const res = ctx.res;
  return res.headersSent || res.writableFinished ? res.statusCode : CLIENT_CLOSED;
}
