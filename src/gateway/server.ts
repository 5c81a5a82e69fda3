import http, { IncomingMessage, ServerResponse, type RequestListener } from 'node:http';
import type { Socket } from 'node:net';
import { randomUUID } from 'node:crypto';
import type { Express } from 'express';
import { Problem } from '../problems/problem.js';
import type { ProblemWriter } from '../problems/problem-details.js';
import type { Config } from '../config/schema.js';
import type { Logger } from '../observability/logger.js';

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

/** A request Node refused before routing, as the `clientError` handler answered it. */
export interface ClientErrorAnswer {
  requestId: string;
  status: number;
  slug: string;
  clientIp: string | null;
}

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
      // Check for timed-out connections often enough that the timeouts above are honoured closely.
      connectionsCheckingInterval: Math.min(1000, Math.max(50, Math.floor(s.headersTimeoutMs / 4))),
    },
    handler as RequestListener,
  );
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    const answered = answerClientError(err, socket, options.writer(), options.logger);
    if (answered !== undefined) options.onClientError?.(answered);
  });
  return server;
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
  const id = randomUUID();
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
