import type { IncomingMessage } from 'node:http';
import { Problem } from '../../problems/problem.js';
import { connectionTokens } from '../../shared/http.js';
import type { RequestContext } from '../../core/context.js';
import type { Stage } from '../../core/stage.js';

/** The query parameter a browser's WebSocket carries its credential in (it cannot send headers). */
export const ACCESS_TOKEN_PARAM = 'access_token';

/**
 * Requests whose `Authorization` the gateway made from `access_token`: the proxy never forwards
 * it (the credential was meant for the gateway, and it must not reach an upstream's logs).
 */
const fromQuery = new WeakSet<IncomingMessage>();

/** Whether the request's `Authorization` came from the `access_token` query parameter. */
export function credentialFromQuery(req: IncomingMessage): boolean {
  return fromQuery.has(req);
}

/** RFC 6455 §4.1: the key is 16 random bytes, base64 — always 24 characters ending in `==`. */
const WEBSOCKET_KEY = /^[A-Za-z0-9+/]{21}[AQgw]==$/;

/**
 * The first stage of a `websocket: true` route, before anything that reads the credential:
 *
 * - takes `access_token` out of the query (of `ctx.search` and `req.url`, so no later stage,
 *   log line, audit record or upstream URL sees it) and presents it as `Authorization: Bearer`
 *   when the request sent no `Authorization` of its own — never forwarded upstream;
 * - on a handshake (`ctx.upgrade`), refuses what RFC 6455 §4.2.1 calls malformed with 400:
 *   not GET, not HTTP/1.1, `Upgrade` without `websocket`, a `Sec-WebSocket-Key` that is not 16
 *   base64 bytes, a `Sec-WebSocket-Version` other than 13 (answered with `Sec-WebSocket-Version: 13`).
 */
export function createWebSocketStage(): Stage {
  return {
    name: 'websocket',
    run(ctx: RequestContext) {
      if (ctx.search.length > 1) takeAccessToken(ctx);
      if (ctx.upgrade !== undefined) checkHandshake(ctx.req);
    },
  };
}

function takeAccessToken(ctx: RequestContext): void {
  const search = ctx.search;
  // Cheap first: most requests carry no such parameter.
  if (!search.includes(ACCESS_TOKEN_PARAM) && !search.includes('%')) return;
  const kept: string[] = [];
  const tokens: string[] = [];
  for (const part of search.slice(1).split('&')) {
    const eq = part.indexOf('=');
    const rawName = eq === -1 ? part : part.slice(0, eq);
    if (decodeParam(rawName) === ACCESS_TOKEN_PARAM)
      tokens.push(eq === -1 ? '' : (decodeParam(part.slice(eq + 1)) ?? '\u0000'));
    else kept.push(part);
  }
  if (tokens.length === 0) return;
  const req = ctx.req;
  ctx.search = kept.length === 0 ? '' : `?${kept.join('&')}`;
  const url = req.url ?? '/';
  const q = url.indexOf('?');
  req.url = (q === -1 ? url : url.slice(0, q)) + ctx.search;
  if (tokens.length > 1)
    throw new Problem('bad-request', { detail: `The ${ACCESS_TOKEN_PARAM} parameter must be sent once.` });
  if (req.headers.authorization !== undefined) return; // the header's credential is the one judged
  // An empty or undecodable value still becomes a credential, so it is refused (401) as one.
  req.headers.authorization = `Bearer ${tokens[0]!}`;
  fromQuery.add(req);
}

function decodeParam(value: string): string | undefined {
  if (!value.includes('%') && !value.includes('+')) return value;
  try {
    return decodeURIComponent(value.replaceAll('+', ' '));
  } catch {
    return undefined;
  }
}

function checkHandshake(req: IncomingMessage): void {
  const bad = (detail: string, headers?: Record<string, string>) =>
    new Problem('bad-request', { detail, headers: { connection: 'close', ...headers } });
  if (req.method !== 'GET') throw bad('A WebSocket handshake must be a GET request.');
  if (req.httpVersion !== '1.1') throw bad('A WebSocket handshake must be HTTP/1.1.');
  if (!connectionTokens(req.headers.upgrade).includes('websocket'))
    throw bad('This route upgrades to WebSocket only (Upgrade: websocket).');
  const key = req.headers['sec-websocket-key'];
  if (typeof key !== 'string' || !WEBSOCKET_KEY.test(key.trim()))
    throw bad('Sec-WebSocket-Key must be 16 bytes in base64 (RFC 6455 §4.1).');
  if (req.headers['sec-websocket-version'] !== '13')
    throw bad('Only WebSocket version 13 is supported.', { 'sec-websocket-version': '13' });
}
