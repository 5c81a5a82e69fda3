import { STATUS_CODES } from 'node:http';

/**
 * Hop-by-hop headers (RFC 9110 §7.6.1 and the classic RFC 2616 list). They describe one
 * connection, so a proxy drops them in both directions, together with every header the
 * `Connection` header names.
 */
export const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

const KEEP_ALIVE: readonly string[] = Object.freeze(['keep-alive']);
const CLOSE: readonly string[] = Object.freeze(['close']);

/**
 * Names listed in a `Connection` header value, lower-cased (`close` and `keep-alive` included).
 * The two values nearly every message carries (`keep-alive`, `close`, as Node and most clients
 * spell them) return a shared frozen list: no split, no array per message.
 */
export function connectionTokens(value: string | string[] | undefined): readonly string[] {
  if (value === undefined) return [];
  if (value === 'keep-alive') return KEEP_ALIVE;
  if (value === 'close') return CLOSE;
  const joined = Array.isArray(value) ? value.join(',') : value;
  const out: string[] = [];
  for (const part of joined.split(',')) {
    const token = part.trim().toLowerCase();
    if (token) out.push(token);
  }
  return out;
}

/** Methods RFC 9110 §9.2.2 calls idempotent: safe to send again after a connection failure. */
export const IDEMPOTENT_METHODS = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

export const HTTP_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'TRACE'] as const;
export type HttpMethod = (typeof HTTP_METHODS)[number];

export function reasonPhrase(status: number): string {
  return STATUS_CODES[status] ?? 'Unknown Status';
}

/** An IMF-fixdate (RFC 9110 §5.6.7) for headers such as `Sunset`. */
export function httpDate(epochMs: number): string {
  return new Date(epochMs).toUTCString();
}
