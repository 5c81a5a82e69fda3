import http, { IncomingMessage, ServerResponse, type RequestListener } from 'node:http';
import type { Socket } from 'node:net';
import type { Express } from 'express';
import { Problem } from '../problems/problem.js';
import type { ProblemWriter } from '../problems/problem-details.js';
import type { Config } from '../config/schema.js';
import type { Logger } from '../observability/logger.js';
import { splitTarget } from '../core/path.js';
import type { RefusedRequest } from '../observability/observer.js';
import { mintRequestId, requestIdFrom } from '../core/request-id.js';
import { ANY_METHOD_ALLOW } from './route-table.js';

/**
 * Constructors whose instances already have the app's request/response prototypes.
 *
 * Express gives every request its own prototype chain with `Object.setPrototypeOf(req,
 * app.request)` (and the same for `res`). Done on a plain IncomingMessage that swap deoptimises
 * every later property access and halves a proxy's throughput (../shared/bench/RESULTS.md).
 * Created with the right prototype from the start, the swap is a no-op: same Express, same
 * middleware, none of the cost.
 */
export function expressConstructors(app: Express): {
  IncomingMessage: typeof IncomingMessage;
  ServerResponse: typeof ServerResponse;
} {
  function GatewayRequest(this: IncomingMessage, socket: Socket) {
    IncomingMessage.call(this, socket);
  }
  GatewayRequest.prototype = app.request;
  function GatewayResponse(this: ServerResponse, req: IncomingMessage) {
    ServerResponse.call(this, req);
  }
  GatewayResponse.prototype = app.response;
  return {
    IncomingMessage: GatewayRequest as unknown as typeof IncomingMessage,
    ServerResponse: GatewayResponse as unknown as typeof ServerResponse,
  };
}

export interface ServerOptions {
  server: Config['server'];
  writer: () => ProblemWriter;
  logger: Logger;
  /** Told about every request answered by the `clientError` handler (audit, access log, metrics). */
  onClientError?: (answered: ClientErrorAnswer) => void;
}

/** A request answered before it became a routed request (what its audit record keeps). */
export type ClientErrorAnswer = RefusedRequest;

/**
 * An HTTP server for an Express app or a plain request listener (the gateway's public
 * listener hands node:http requests straight to the pipeline), with the slow-client timeouts
 * passed to the constructor
 * (assigned afterwards, `headersTimeout`/`requestTimeout` can be silently ignored by Node's
 * connection checker) and a `clientError` handler that answers what Node's parser refuses as
 * problem+json.
 */
export function createHttpServer(handler: Express | RequestListener, options: ServerOptions): http.Server {
  const s = options.server;
  const app = isExpress(handler) ? handler : undefined;
  const server = http.createServer(
    {
      ...(app ? expressConstructors(app) : {}),
      headersTimeout: s.headersTimeoutMs,
      requestTimeout: s.requestTimeoutMs,
      keepAliveTimeout: s.keepAliveTimeoutMs,
      maxHeaderSize: s.maxHeaderBytes,
      // RFC 9112 §3.2's Host rules are checked by the gateway and answered as problems, not
      // with Node's bare 400.
      requireHostHeader: false,
      // Check for timed-out connections often enough that the timeouts above are honoured closely.
      connectionsCheckingInterval: Math.min(1000, Math.max(50, Math.floor(s.headersTimeoutMs / 4))),
    },
    handler as RequestListener,
  );
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    const answered = answerClientError(err, socket, options.writer(), options.logger);
    if (answered !== undefined) options.onClientError?.(answered);
  });
  // Without these listeners Node answers by itself, outside the gateway: `100 Continue` before
  // authentication, a bare 417 for other expectations, and CONNECT dropped without a word.
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
    const marked = req as unknown as Record<symbol, boolean>;
    marked[EXPECTS_CONTINUE] = true;
    (handler as RequestListener)(req, res);
    // A handler that did not claim the interim answer (the admin app) gets Node's default: now.
    if (marked[EXPECTS_CONTINUE]) {
      marked[EXPECTS_CONTINUE] = false;
      if (!res.headersSent) res.writeContinue();
    }
  });
  server.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) => {
    options.onClientError?.(answerExpectation(req, res, options.writer(), options.logger));
  });
  server.on('connect', (req: IncomingMessage, socket: Socket) => {
    options.onClientError?.(answerConnect(req, socket, options.writer(), options.logger));
  });
  return server;
}

const EXPECTS_CONTINUE = Symbol('tollgate.expectsContinue');

/**
 * Whether the request sent `Expect: 100-continue` through a server of `createHttpServer`; the
 * caller then owns the interim answer (`RequestContext.sendContinue`) and the server will not
 * send it. Requests of other servers got theirs from Node already.
 */
export function claimContinue(req: IncomingMessage): boolean {
  const marked = req as unknown as Record<symbol, boolean | undefined>;
  if (marked[EXPECTS_CONTINUE] !== true) return false;
  marked[EXPECTS_CONTINUE] = false;
  return true;
}

/** An `Expect` other than `100-continue`: 417 (RFC 9110 §10.1.1), the body unread, the connection closed. */
export function answerExpectation(
  req: IncomingMessage,
  res: ServerResponse,
  writer: ProblemWriter,
  logger: Logger,
): ClientErrorAnswer {
  const problem = new Problem('expectation-failed', {
    detail: 'The only expectation this server meets is 100-continue.',
    headers: { connection: 'close' },
  });
  const id = requestIdFrom(req.headers['x-request-id']);
  logger.debug({ request_id: id, problem: problem.slug }, 'expectation failed');
  writer.write(res, problem, id);
  return {
    requestId: id,
    status: problem.status,
    slug: problem.slug,
    clientIp: req.socket.remoteAddress ?? null,
    method: req.method,
    path: splitTarget(req.url ?? '/').path,
  };
}

/** CONNECT (RFC 9110 §9.3.6) asks for a tunnel: this is a reverse proxy, so 405, and the socket closed. */
export function answerConnect(
  req: IncomingMessage,
  socket: Socket,
  writer: ProblemWriter,
  logger: Logger,
): ClientErrorAnswer {
  // Node has taken its own listeners off a CONNECT socket: a reset there must not go unhandled.
  socket.on('error', () => socket.destroy());
  const problem = new Problem('method-not-allowed', {
    detail: 'CONNECT is not supported: the gateway is not a forward proxy.',
    headers: { allow: ANY_METHOD_ALLOW },
  });
  const id = requestIdFrom(req.headers['x-request-id']);
  logger.debug({ request_id: id, problem: problem.slug }, 'CONNECT refused');
  if (socket.writable) {
    socket.end(writer.raw(problem, id));
    socket.destroySoon();
  } else socket.destroy();
  return {
    requestId: id,
    status: problem.status,
    slug: problem.slug,
    clientIp: socket.remoteAddress ?? null,
    method: 'CONNECT',
    path: req.url,
  };
}

function isExpress(handler: Express | RequestListener): handler is Express {
  const h = handler as unknown as { handle?: unknown; request?: unknown };
  return typeof h.handle === 'function' && h.request !== undefined;
}

/** Answers a request Node refused before it reached the app. */
export function answerClientError(
  err: NodeJS.ErrnoException,
  socket: Socket,
  writer: ProblemWriter,
  logger: Logger,
): ClientErrorAnswer | undefined {
  const code = err.code ?? '';
  const busy = (socket as unknown as { _httpMessage?: unknown })._httpMessage;
  // Timeouts (slowloris) and resets get no answer: the peer is gone or not worth one. Nor does a
  // parse error while a response is pending (a bad chunk mid-body, garbage pipelined after a
  // request): a 400 there would read as the answer to that request, under another request id.
  if (
    code === 'ECONNRESET' ||
    code === 'ERR_HTTP_REQUEST_TIMEOUT' ||
    !socket.writable ||
    (busy !== undefined && busy !== null)
  ) {
    socket.destroy();
    return undefined;
  }
  const problem =
    code === 'HPE_HEADER_OVERFLOW'
      ? new Problem('headers-too-large', { detail: 'The request line and headers are too large.' })
      : new Problem('bad-request', { detail: 'The request could not be parsed as HTTP/1.1.' });
  const id = mintRequestId();
  logger.debug({ request_id: id, code, problem: problem.slug }, 'client error');
  socket.end(writer.raw(problem, id));
  socket.destroySoon();
  return {
    requestId: id,
    status: problem.status,
    slug: problem.slug,
    clientIp: socket.remoteAddress ?? null,
  };
}
