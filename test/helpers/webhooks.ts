import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { Webhook } from 'standardwebhooks';

export interface Received {
  headers: http.IncomingHttpHeaders;
  body: string;
  event: { type: string; timestamp: string; data: Record<string, any> };
}

/**
 * A webhook receiver on 127.0.0.1 that verifies every delivery with the standardwebhooks package
 * (the receivers' official library) and the `secret` (`whsec_…`); `answer` writes its response.
 */
export async function startReceiver(
  secret: string,
  answer: (req: IncomingMessage, res: ServerResponse, n: number) => void = (_q, res) => res.end('ok'),
  port = 0,
) {
  const verifier = new Webhook(secret);
  const received: Received[] = [];
  const rejected: string[] = [];
  const sockets = new Set<Socket>();
  let n = 0;
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      n++;
      try {
        const event = verifier.verify(body, req.headers as Record<string, string>) as Received['event'];
        received.push({ headers: req.headers, body, event });
      } catch (err) {
        rejected.push(String(err));
      }
      answer(req, res, n);
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  const actual = (server.address() as AddressInfo).port;
  const close = () =>
    new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    });
  return { url: `http://127.0.0.1:${actual}/hooks`, port: actual, received, rejected, close, calls: () => n };
}
