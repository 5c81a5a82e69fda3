import { IncomingMessage, ServerResponse, type IncomingHttpHeaders } from 'node:http';
import type { Socket } from 'node:net';
import { Duplex } from 'node:stream';
import { ManualClock, type Clock } from './clock.js';
import type { RequestContext } from './context.js';
import type { Identity } from './identity.js';
import { splitTarget } from './path.js';
import { newContext } from './request-id.js';

export interface FakeRequestOptions {
  /** Default GET. */
  method?: string;
  /** Path and query. Default `/`. */
  url?: string;
  /** Request headers (names in any case). `host` defaults to `gateway.test`. */
  headers?: Record<string, string | string[]>;
  /** The request body, delivered at once. */
  body?: string | Buffer;
  /** The peer address (what `ctx.clientIp` is without a trusted proxy). Default `127.0.0.1`. */
  remoteAddress?: string;
  /** The clock of the context. Default: a new `ManualClock`. */
  clock?: Clock;
  /** An identity as the authenticate stage would have set it. */
  identity?: Identity;
  routeId?: string;
}

/** What a stage wrote: status, headers (lower-cased names) and body. */
export interface FakeResponse {
  status: number;
  headers: Record<string, string | string[]>;
  body: Buffer;
  text: string;
  json(): unknown;
}

export interface FakeContext {
  ctx: RequestContext;
  /** The context's clock (a `ManualClock` unless one was given): tick it instead of sleeping. */
  clock: Clock;
  req: IncomingMessage;
  res: ServerResponse;
  /**
   * The response as written, once it is finished; runs the close hooks (refunds, idempotency
   * records), as the end of a real response does. Rejects if nothing answered the request.
   */
  response(): Promise<FakeResponse>;
  /** Ends the exchange as a client leaving would: runs the close hooks without an answer. */
  abort(): void;
}

/** A socket that keeps what is written to it and reads nothing: no network involved. */
class RecordingSocket extends Duplex {
  readonly written: Buffer[] = [];
  readonly remoteAddress: string;
  readonly remotePort = 50_000;
  readonly encrypted = false;

  constructor(remoteAddress: string) {
    super();
    this.remoteAddress = remoteAddress;
  }

  override _write(
    chunk: Buffer | string,
    encoding: BufferEncoding,
    done: (err?: Error | null) => void,
  ): void {
    this.written.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk, encoding));
    done();
  }

  override _read(): void {
    // Nothing arrives on this socket: the request body is pushed into the request itself.
  }

  setTimeout(): this {
    return this;
  }
  setNoDelay(): this {
    return this;
  }
  setKeepAlive(): this {
    return this;
  }
}

/**
 * A request context for running a stage in-process, with real `IncomingMessage` and
 * `ServerResponse` objects on a recording socket and a `ManualClock` — no sockets, no servers.
 * For the gateway's own tests and for custom-policy authors.
 *
 * @example
 * const t = fakeContext({ method: 'POST', url: '/v1/orders', headers: { 'x-tenant': 'acme' } });
 * await stage.run(t.ctx);
 * expect(t.ctx.upstreamHeaders).toEqual(['x-tenant-shard', 'eu-1']);
 */
export function fakeContext(options: FakeRequestOptions = {}): FakeContext {
  const clock = options.clock ?? new ManualClock();
  const { req, res, socket } = fakeExchange(options);
  const ctx = newContext(req, res, clock);
  const target = splitTarget(req.url ?? '/');
  ctx.path = target.path;
  ctx.search = target.search;
  ctx.identity = options.identity;
  ctx.routeId = options.routeId;

  const hookErrors: unknown[] = [];
  const closeHooks = () => ctx.close((err) => hookErrors.push(err));
  return {
    ctx,
    clock,
    req,
    res,
    abort() {
      closeHooks();
    },
    response() {
      return new Promise<FakeResponse>((resolve, reject) => {
        const done = () => {
          closeHooks();
          if (hookErrors.length > 0) {
            reject(hookErrors[0] instanceof Error ? hookErrors[0] : new Error(String(hookErrors[0])));
            return;
          }
          resolve(parseResponse(socket.written));
        };
        if (res.writableFinished) done();
        else if (!res.headersSent && !res.writableEnded)
          reject(new Error('fakeContext: nothing answered the request'));
        else res.once('finish', done);
      });
    },
  };
}

/**
 * A request and its response on a recording socket, before any context: what a server would
 * hand to `gateway.handle(req, res)` (the in-process benchmark drives the gateway this way).
 * `socket.written` holds the raw response; `parseResponse` reads it.
 */
export function fakeExchange(options: Omit<FakeRequestOptions, 'clock' | 'identity' | 'routeId'> = {}): {
  req: IncomingMessage;
  res: ServerResponse;
  socket: { written: Buffer[] };
} {
  const socket = new RecordingSocket(options.remoteAddress ?? '127.0.0.1');
  const req = new IncomingMessage(socket as unknown as Socket);
  req.method = (options.method ?? 'GET').toUpperCase();
  req.url = options.url ?? '/';
  req.httpVersion = '1.1';
  req.httpVersionMajor = 1;
  req.httpVersionMinor = 1;
  const given: Record<string, string | string[]> = { host: 'gateway.test', ...options.headers };
  const headers: IncomingHttpHeaders = {};
  const raw: string[] = [];
  for (const [name, value] of Object.entries(given)) {
    const lower = name.toLowerCase();
    for (const v of typeof value === 'string' ? [value] : value) raw.push(name, v);
    headers[lower] = Array.isArray(value) && lower !== 'set-cookie' ? value.join(', ') : value;
  }
  const body = options.body === undefined ? undefined : Buffer.from(options.body);
  if (
    body !== undefined &&
    headers['content-length'] === undefined &&
    headers['transfer-encoding'] === undefined
  ) {
    headers['content-length'] = String(body.length);
    raw.push('Content-Length', String(body.length));
  }
  req.headers = headers;
  req.rawHeaders = raw;
  if (body !== undefined && body.length > 0) req.push(body);
  req.push(null);
  req.complete = true;

  const res = new ServerResponse(req);
  // The whole answer is written as it is (no chunked framing): the recording is easy to read back.
  res.useChunkedEncodingByDefault = false;
  res.shouldKeepAlive = false;
  res.assignSocket(socket as unknown as Socket);
  return { req, res, socket };
}

/** What a recording socket received, as status, headers and body. */
export function parseResponse(written: readonly Buffer[]): FakeResponse {
  return parse(Buffer.concat(written));
}

function parse(raw: Buffer): FakeResponse {
  const split = raw.indexOf('\r\n\r\n');
  const head = raw.subarray(0, split === -1 ? raw.length : split).toString('latin1');
  const body = split === -1 ? Buffer.alloc(0) : raw.subarray(split + 4);
  const [statusLine = '', ...lines] = head.split('\r\n');
  const headers: Record<string, string | string[]> = {};
  for (const line of lines) {
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    const prior = headers[name];
    headers[name] = prior === undefined ? value : Array.isArray(prior) ? [...prior, value] : [prior, value];
  }
  const text = body.toString('utf8');
  return {
    status: Number(statusLine.split(' ')[1] ?? 0),
    headers,
    body,
    text,
    json: () => JSON.parse(text) as unknown,
  };
}
