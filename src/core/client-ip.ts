import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import proxyaddr from 'proxy-addr';

/** Decides whether a hop (address, index from the socket outwards) is a trusted proxy. */
export type TrustFn = (address: string, hop: number) => boolean;

/** Compiles a `trustProxy` setting exactly as Express compiles its `trust proxy` setting. */
export function compileTrust(setting: boolean | number | string | readonly string[]): TrustFn {
  if (setting === true) return () => true;
  if (setting === false) return () => false;
  if (typeof setting === 'number') return (_address, hop) => hop < setting;
  const list = typeof setting === 'string' ? setting.split(',').map((s) => s.trim()) : [...setting];
  return proxyaddr.compile(list);
}

/**
 * The client address of a request from its socket peer (`peer`, captured when it arrived) and its
 * headers: the peer, or — when the peer is a trusted proxy — the right-most untrusted address of
 * `X-Forwarded-For` (Express' `req.ip`).
 */
export function clientAddress(
  peer: string,
  headers: IncomingHttpHeaders,
  trust: TrustFn,
  trustsNobody: boolean,
): string {
  if (trustsNobody) return peer;
  // proxy-addr reads only `headers` and `socket.remoteAddress`: the captured peer stands in for a
  // socket that may be gone by the time the address is asked for.
  return proxyaddr({ headers, socket: { remoteAddress: peer } } as IncomingMessage, trust);
}
