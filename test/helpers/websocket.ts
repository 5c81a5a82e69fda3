import http, { type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import WebSocket, { WebSocketServer, type RawData } from 'ws';

export interface WsUpstream {
  url: string;
  port: number;
  wss: WebSocketServer;
  server: http.Server;
  /** The handshake requests the upstream received (URL and headers). */
  handshakes: Array<{ url: string; headers: IncomingHttpHeaders }>;
  /** Close codes the upstream's side saw, one per closed connection. */
  closes: number[];
  /** Every server-side socket, open or not. */
  clients: WebSocket[];
  close(): Promise<void>;
}

/**
 * A `ws` WebSocket server on an ephemeral loopback port: echoes every message back (same type),
 * records each handshake and close code. `onConnection` replaces the echo.
 */
export async function startWsUpstream(
  onConnection?: (socket: WebSocket, req: http.IncomingMessage) => void,
  handleHttp: http.RequestListener = (_req, res) => res.writeHead(404).end('no'),
): Promise<WsUpstream> {
  const server = http.createServer(handleHttp);
  const sockets = new Set<Socket>();
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  const wss = new WebSocketServer({ server });
  const handshakes: WsUpstream['handshakes'] = [];
  const closes: number[] = [];
  const clients: WebSocket[] = [];
  wss.on('headers', (_headers, req) => handshakes.push({ url: req.url ?? '', headers: req.headers }));
  wss.on('connection', (socket, req) => {
    clients.push(socket);
    socket.on('close', (code) => closes.push(code));
    socket.on('error', () => undefined);
    if (onConnection) onConnection(socket, req);
    else socket.on('message', (data: RawData, isBinary) => socket.send(data, { binary: isBinary }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    wss,
    server,
    handshakes,
    closes,
    clients,
    async close() {
      for (const c of wss.clients) c.terminate();
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => wss.close(() => resolve()));
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** What a refused handshake got: the HTTP answer. */
export class Refusal extends Error {
  constructor(
    readonly status: number,
    readonly headers: Record<string, string | string[] | undefined>,
    readonly body: string,
  ) {
    super(`handshake refused with ${status}`);
  }

  json(): any {
    return JSON.parse(this.body);
  }
}

/**
 * Opens a WebSocket (`ws` client): resolves once open, or rejects with a `Refusal` carrying the
 * HTTP answer of a refused handshake. Bounded by `timeoutMs`.
 */
export function openWs(
  url: string,
  options: { headers?: Record<string, string>; timeoutMs?: number; protocols?: string[] } = {},
): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, options.protocols ?? [], {
      headers: options.headers,
      handshakeTimeout: options.timeoutMs ?? 5000,
    });
    ws.on('open', () => resolve(ws));
    ws.on('error', (err) => reject(err));
    ws.on('unexpected-response', (_req, res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        reject(new Refusal(res.statusCode ?? 0, res.headers, body));
      });
      res.on('error', reject);
    });
  });
}

/** The refusal a handshake that must fail got. */
export async function refused(promise: Promise<WebSocket>): Promise<Refusal> {
  try {
    const ws = await promise;
    ws.terminate();
  } catch (err) {
    if (err instanceof Refusal) return err;
    throw err;
  }
  throw new Error('the handshake was accepted');
}

/** The next message on `ws` (bounded). */
export function nextMessage(ws: WebSocket, timeoutMs = 5000): Promise<{ data: Buffer; isBinary: boolean }> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no message within ${timeoutMs} ms`)), timeoutMs);
    ws.once('message', (data: RawData, isBinary) => {
      clearTimeout(timer);
      resolve({ data: Buffer.isBuffer(data) ? data : Buffer.from(data as ArrayBuffer), isBinary });
    });
  });
}

/** Resolves with the close code once `ws` is closed (bounded). */
export function closed(ws: WebSocket, timeoutMs = 5000): Promise<number> {
  if (ws.readyState === WebSocket.CLOSED) return Promise.resolve(-1);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`not closed within ${timeoutMs} ms`)), timeoutMs);
    ws.once('close', (code) => {
      clearTimeout(timer);
      resolve(code);
    });
  });
}
