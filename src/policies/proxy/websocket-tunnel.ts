import http, { type ClientRequest, type IncomingMessage } from 'node:http';
import https from 'node:https';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { Problem } from '../../problems/problem.js';
import { MAX_UPSTREAM_ERROR_BODY, writeUpstreamProblem } from '../../problems/upstream-errors.js';
import {
  answerHead,
  type RequestContext,
  type UpgradeState,
  type UpstreamTrace,
} from '../../core/context.js';
import type { ProblemWriter } from '../../problems/problem-details.js';
import type { Clock } from '../../core/clock.js';
import { downstreamHeaders, upstreamRequestHeaders, type RequestHeaderPlan } from './headers.js';
import type { Target, UpstreamPool } from './upstream-pool.js';
import type { UpstreamConfig } from './schema.js';

/** What a handshake's trip upstream needs of the proxy stage's options. */
interface ExchangeOptions {
  upstream: UpstreamConfig;
  upstreamErrors: 'rewrite' | 'rewrite-5xx' | 'passthrough';
  pool: UpstreamPool;
  headers: RequestHeaderPlan;
  writer: ProblemWriter;
  clock: Clock;
  onUpstreamError?: ((ctx: RequestContext, target: Target, code: string) => void) | undefined;
}

/** WebSocket close codes the gateway sends (RFC 6455 §7.4.1). */
export const CLOSE_GOING_AWAY = 1001;

/**
 * The open WebSockets of a gateway: for the `tollgate_websocket_connections` gauge (read when
 * scraped), and for the drain, which closes them with 1001. Kept across config reloads: a
 * tunnel keeps running on the config it started with.
 */
export class WebSocketTunnels {
  readonly #open = new Set<Tunnel>();
  /** Called once per accepted handshake (the `101` went out). */
  onOpen: ((route: string) => void) | undefined;

  get size(): number {
    return this.#open.size;
  }

  /** Open WebSockets per route id. */
  byRoute(): Map<string, number> {
    const out = new Map<string, number>();
    for (const t of this.#open) out.set(t.route, (out.get(t.route) ?? 0) + 1);
    return out;
  }

  /** Closes every open WebSocket with `code` (a close frame to both sides, then TCP). */
  closeAll(code = CLOSE_GOING_AWAY): void {
    for (const t of [...this.#open]) t.close(code);
  }

  /** @internal */
  add(t: Tunnel): void {
    this.#open.add(t);
    this.onOpen?.(t.route);
  }

  /** @internal */
  delete(t: Tunnel): void {
    this.#open.delete(t);
  }
}

export interface WebSocketOptions {
  readonly idleTimeoutMs: number;
  readonly tunnels: WebSocketTunnels;
}

/** Errors of an upstream handshake that never reached the application (another target may serve). */
const CONNECT_ERRORS = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);

/**
 * One WebSocket handshake's trip upstream: a fresh connection to a healthy target (round robin,
 * passive health as for HTTP), the handshake sent with the gateway's headers, and then either the
 * upstream's `101` relayed and the two sockets piped together, or its HTTP answer relayed as for
 * any request (errors rewritten). Frames are not parsed: bytes flow both ways as they come, with
 * backpressure (`pipe`).
 */
export class WebSocketExchange {
  readonly #ctx: RequestContext;
  readonly #o: ExchangeOptions;
  readonly #ws: WebSocketOptions;
  readonly #path: string;
  readonly #resolve: () => void;
  readonly #reject: (err: unknown) => void;
  readonly #upgrade: UpgradeState;
  #retriesLeft: number;
  #tried: Target[] = [];
  #request: ClientRequest | undefined;
  #done = false;
  #started = 0;
  /** The handshake attempt's client span (telemetry on). */
  #span: UpstreamTrace | undefined;
  #attempts = 0;

  constructor(
    ctx: RequestContext,
    o: ExchangeOptions,
    ws: WebSocketOptions,
    path: string,
    resolve: () => void,
    reject: (err: unknown) => void,
  ) {
    this.#ctx = ctx;
    this.#o = o;
    this.#ws = ws;
    this.#path = path;
    this.#resolve = resolve;
    this.#reject = reject;
    this.#upgrade = ctx.upgrade!;
    this.#retriesLeft = o.upstream.retries;
    ctx.onClose(() => {
      // The client left during the handshake: nothing more is done on its behalf.
      if (this.#done) return;
      this.#request?.destroy();
      this.#fail(new Problem('bad-gateway', { detail: 'The client closed the connection.' }));
    });
  }

  attempt(): void {
    if (this.#done) return;
    const o = this.#o;
    const ctx = this.#ctx;
    const target = o.pool.pick(this.#tried);
    if (target === undefined) {
      this.#fail(
        new Problem('service-unavailable', {
          detail: 'No healthy upstream target is available.',
          headers: { 'retry-after': String(o.pool.retryAfterSec()) },
        }),
      );
      return;
    }
    ctx.upstreamTarget = target.origin;
    this.#started = o.clock.monotonic();
    const headers = upstreamRequestHeaders(ctx, o.headers, target.host);
    // Hop-by-hop headers are dropped on every request; this exchange alone keeps the upgrade.
    headers.connection = 'Upgrade';
    headers.upgrade = 'websocket';
    const trace = ctx.trace;
    if (trace !== undefined) {
      this.#span = trace.upstream('GET', target, this.#attempts);
      headers.traceparent = this.#span.traceparent;
    }
    this.#attempts++;
    const url = new URL(target.origin);
    const request = (url.protocol === 'https:' ? https : http).request({
      host: url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname,
      port: url.port === '' ? undefined : Number(url.port),
      method: 'GET',
      path: joinPath(target.basePath, this.#path),
      headers,
      agent: false,
      timeout: o.upstream.timeoutMs,
    });
    this.#request = request;
    request.on('upgrade', (res, socket, head) => this.#upgraded(target, res, socket, head));
    request.on('response', (res) => this.#answered(target, res));
    request.on('timeout', () => request.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })));
    request.on('error', (err: NodeJS.ErrnoException) => this.#failed(target, err));
    request.end();
  }

  #failed(target: Target, err: NodeJS.ErrnoException): void {
    if (this.#done) return;
    const o = this.#o;
    const code = err.code ?? 'unknown';
    this.#endSpan(undefined, code);
    o.onUpstreamError?.(this.#ctx, target, code);
    o.pool.failed(target);
    if (CONNECT_ERRORS.has(code) && this.#retriesLeft > 0) {
      this.#retriesLeft--;
      this.#tried.push(target);
      this.attempt();
      return;
    }
    this.#fail(
      code === 'ETIMEDOUT'
        ? new Problem('gateway-timeout', {
            detail: `The upstream service did not answer the WebSocket handshake within ${o.upstream.timeoutMs} ms.`,
            cause: err,
          })
        : new Problem('bad-gateway', {
            detail: 'The upstream service could not be reached or answered invalidly.',
            cause: err,
          }),
    );
  }

  /** The upstream answered the handshake with an HTTP response: relayed as for any request. */
  #answered(target: Target, res: IncomingMessage): void {
    if (this.#done) {
      res.destroy();
      return;
    }
    const ctx = this.#ctx;
    const o = this.#o;
    o.pool.succeeded(target);
    const status = res.statusCode ?? 502;
    ctx.upstreamStatus = status;
    this.#endSpan(status);
    ctx.upstreamLatencyMs = o.clock.monotonic() - this.#started;
    const { list, map, invalid } = downstreamHeaders(
      rawBuffers(res.rawHeaders),
      status,
      ctx,
      target,
      o.upstream.stripPrefix,
      o.headers,
    );
    const mode = o.upstreamErrors;
    const rewrite = status >= 400 && mode !== 'passthrough' && (mode === 'rewrite' || status >= 500);
    if (invalid !== undefined || status < 200) {
      res.destroy();
      this.#fail(new Problem('bad-gateway', { detail: 'The upstream service sent an invalid response.' }));
      return;
    }
    this.#done = true;
    const out = ctx.res;
    if (rewrite) {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size <= MAX_UPSTREAM_ERROR_BODY) chunks.push(chunk);
      });
      res.on('end', () => {
        writeUpstreamProblem(
          out,
          o.writer,
          ctx.requestId,
          status,
          map,
          size <= MAX_UPSTREAM_ERROR_BODY ? Buffer.concat(chunks) : undefined,
        );
        this.#resolve();
      });
      res.on('error', () => out.destroy());
      return;
    }
    out.writeHead(status, answerHead(ctx, list));
    res.on('data', (chunk: Buffer) => (ctx.bytesOut += chunk.length));
    res.pipe(out);
    res.on('error', () => out.destroy());
    this.#resolve();
  }

  /** The upstream said `101`: relay it with its `Sec-WebSocket-*` answer, then pipe the sockets. */
  #upgraded(target: Target, res: IncomingMessage, upstream: Socket, upstreamHead: Buffer): void {
    const ctx = this.#ctx;
    const o = this.#o;
    if (this.#done) {
      upstream.destroy();
      return;
    }
    o.pool.succeeded(target);
    ctx.upstreamStatus = 101;
    this.#endSpan(101);
    ctx.upstreamLatencyMs = o.clock.monotonic() - this.#started;
    const { list, invalid } = downstreamHeaders(
      rawBuffers(res.rawHeaders),
      101,
      ctx,
      target,
      o.upstream.stripPrefix,
      o.headers,
    );
    if (invalid !== undefined) {
      upstream.destroy();
      this.#fail(new Problem('bad-gateway', { detail: 'The upstream service sent an invalid response.' }));
      return;
    }
    this.#done = true;
    const client = this.#upgrade.socket;
    if (client.destroyed || !client.writable) {
      upstream.destroy();
      this.#resolve();
      return;
    }
    let head = 'HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n';
    const owned = ctx.responseHeaderNames;
    if (owned !== undefined)
      for (const name of owned) {
        const value = ctx.responseHeader(name);
        if (value !== undefined) head += `${name}: ${String(value)}\r\n`;
      }
    for (let i = 0; i < list.length; i += 2) {
      if (owned?.includes(list[i]!.toLowerCase()) === true) continue;
      head += `${list[i]}: ${list[i + 1]}\r\n`;
    }
    client.write(head + '\r\n', 'latin1');
    this.#upgrade.established = true;
    ctx.res.statusCode = 101;
    new Tunnel(ctx, this.#upgrade, upstream, upstreamHead, this.#ws);
    this.#resolve();
  }

  #fail(problem: Problem): void {
    if (this.#done) return;
    this.#done = true;
    this.#endSpan(
      this.#ctx.upstreamStatus,
      this.#ctx.upstreamStatus === undefined ? problem.slug : undefined,
    );
    this.#reject(problem);
  }

  #endSpan(status: number | undefined, error?: string): void {
    const span = this.#span;
    if (span === undefined) return;
    this.#span = undefined;
    span.end(status, error);
  }
}

/**
 * An accepted WebSocket: the client and upstream sockets piped together. Bytes are counted
 * (`bytesIn`: client → upstream, `bytesOut`: upstream → client) and watched for frame boundaries
 * and close frames (headers only, no payload is copied or unmasked but a close code), so the
 * gateway can close a silent or draining connection with a close frame of its own.
 */
export class Tunnel {
  readonly route: string;
  readonly #state: UpgradeState;
  readonly #client: Duplex;
  readonly #upstream: Socket;
  readonly #tunnels: WebSocketTunnels;
  /** Frames from the client (to the upstream), and from the upstream (to the client). */
  readonly #fromClient = new FrameWatcher();
  readonly #fromUpstream = new FrameWatcher();
  #closing = false;

  constructor(
    ctx: RequestContext,
    state: UpgradeState,
    upstream: Socket,
    upstreamHead: Buffer,
    ws: WebSocketOptions,
  ) {
    this.route = ctx.routeId ?? 'unmatched';
    this.#state = state;
    this.#client = state.socket;
    this.#upstream = upstream;
    this.#tunnels = ws.tunnels;
    const client = this.#client;
    upstream.setNoDelay(true);
    (client as Partial<Socket>).setNoDelay?.(true);
    ws.tunnels.add(this);
    client.on('data', (chunk: Buffer) => {
      ctx.bytesIn += chunk.length;
      this.#seen(this.#fromClient.feed(chunk));
    });
    upstream.on('data', (chunk: Buffer) => {
      ctx.bytesOut += chunk.length;
      this.#seen(this.#fromUpstream.feed(chunk));
    });
    if (upstreamHead.length > 0) {
      ctx.bytesOut += upstreamHead.length;
      this.#seen(this.#fromUpstream.feed(upstreamHead));
      client.write(upstreamHead);
    }
    if (state.head.length > 0) {
      ctx.bytesIn += state.head.length;
      this.#seen(this.#fromClient.feed(state.head));
      upstream.write(state.head);
    }
    // Either side ending ends the other (after what is buffered is written), either side going
    // away takes the other down.
    client.pipe(upstream);
    upstream.pipe(client);
    upstream.on('error', () => client.destroy());
    client.on('error', () => upstream.destroy());
    upstream.on('close', () => {
      if (!client.destroyed) client.end();
      setTimeout(() => client.destroy(), 1000).unref();
    });
    client.on('close', () => {
      upstream.destroy();
      this.#tunnels.delete(this);
    });
    // Idle: no byte either way (a socket's timer restarts on reads and on writes).
    (client as Partial<Socket>).setTimeout?.(ws.idleTimeoutMs, () => this.close(CLOSE_GOING_AWAY));
  }

  #seen(code: number | undefined): void {
    if (code !== undefined && this.#state.closeCode === undefined) this.#state.closeCode = code;
  }

  /**
   * Closes the WebSocket from the gateway: a close frame with `code` to each side whose stream
   * is at a frame boundary (a frame cut in half cannot be followed by another), then both
   * sockets end; whatever does not close within a second is destroyed.
   */
  close(code: number): void {
    if (this.#closing) return;
    this.#closing = true;
    this.#tunnels.delete(this);
    const client = this.#client;
    const upstream = this.#upstream;
    client.unpipe(upstream);
    upstream.unpipe(client);
    this.#state.closeCode ??= code;
    if (this.#fromUpstream.atBoundary && client.writable) client.write(closeFrame(code, false));
    if (this.#fromClient.atBoundary && upstream.writable) upstream.write(closeFrame(code, true));
    client.end();
    upstream.end();
    const force = setTimeout(() => {
      client.destroy();
      upstream.destroy();
    }, 1000);
    force.unref();
  }
}

/** A close frame with a status code: unmasked from the gateway as a server, masked as a client. */
export function closeFrame(code: number, masked: boolean): Buffer {
  if (!masked) return Buffer.from([0x88, 0x02, code >> 8, code & 0xff]);
  const mask = [0x5a, 0xc3, 0x17, 0x9e];
  return Buffer.from([0x88, 0x82, ...mask, (code >> 8) ^ mask[0]!, (code & 0xff) ^ mask[1]!]);
}

/**
 * Follows the frame structure of one direction of a WebSocket stream (RFC 6455 §5.2) from the
 * bytes as they pass, without copying them: where each frame ends (so the gateway knows when it
 * may insert a frame of its own) and the status code of a close frame.
 */
export class FrameWatcher {
  /** Header bytes of the frame being read (2–14). */
  readonly #header = Buffer.alloc(14);
  #headerLength = 0;
  /** Payload bytes still to come in the current frame. */
  #remaining = 0;
  #closeFrame = false;
  #payloadSeen = 0;
  #codeBytes = [0, 0];
  #masked = false;
  #mask = [0, 0, 0, 0];

  /** True between frames. */
  get atBoundary(): boolean {
    return this.#headerLength === 0 && this.#remaining === 0;
  }

  /** Reads `chunk`; returns the status code of a close frame that completed in it, if any. */
  feed(chunk: Buffer): number | undefined {
    let code: number | undefined;
    let i = 0;
    const n = chunk.length;
    while (i < n) {
      if (this.#remaining > 0) {
        const take = Math.min(this.#remaining, n - i);
        if (this.#closeFrame)
          for (let k = 0; k < take && this.#payloadSeen < 2; k++) {
            const p = this.#payloadSeen;
            this.#codeBytes[p] = chunk[i + k]! ^ (this.#masked ? this.#mask[p]! : 0);
            this.#payloadSeen++;
            if (this.#payloadSeen === 2) code = (this.#codeBytes[0]! << 8) | this.#codeBytes[1]!;
          }
        this.#remaining -= take;
        i += take;
        continue;
      }
      this.#header[this.#headerLength++] = chunk[i++]!;
      const need = this.#headerNeeds();
      if (this.#headerLength < need) continue;
      const h = this.#header;
      const len7 = h[1]! & 0x7f;
      const masked = (h[1]! & 0x80) !== 0;
      let length: number;
      let at: number;
      if (len7 === 126) {
        length = h.readUInt16BE(2);
        at = 4;
      } else if (len7 === 127) {
        length = Number(h.readBigUInt64BE(2));
        at = 10;
      } else {
        length = len7;
        at = 2;
      }
      this.#masked = masked;
      if (masked) this.#mask = [h[at]!, h[at + 1]!, h[at + 2]!, h[at + 3]!];
      this.#closeFrame = (h[0]! & 0x0f) === 0x8;
      this.#payloadSeen = 0;
      this.#remaining = length;
      this.#headerLength = 0;
      // A close frame without a body has no status code (RFC 6455 §7.1.5: 1005).
      if (this.#closeFrame && length < 2) code = 1005;
    }
    return code;
  }

  #headerNeeds(): number {
    if (this.#headerLength < 2) return 2;
    const h = this.#header;
    const len7 = h[1]! & 0x7f;
    const mask = (h[1]! & 0x80) !== 0 ? 4 : 0;
    return 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) + mask;
  }
}

function rawBuffers(raw: readonly string[]): Buffer[] {
  return raw.map((v) => Buffer.from(v, 'latin1'));
}

function joinPath(base: string, path: string): string {
  const joined = base + path;
  return joined.charCodeAt(0) === 47 /* / */ ? joined : '/' + joined;
}
