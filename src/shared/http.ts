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

/** Names listed in a `Connection` header value, lower-cased (`close` and `keep-alive` included). */
export function connectionTokens(value: string | string[] | undefined): string[] {
  if (value === undefined) return [];
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
