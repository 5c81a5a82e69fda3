import { isIPv6 } from 'node:net';
import { Problem } from '../problems/problem.js';
import type { RequestContext } from '../core/context.js';
import { targetAuthority } from '../core/path.js';

// RFC 3986 §3.2.2 reg-name (unreserved, pct-encoded, sub-delims; IPv4 is a reg-name too) with an
// optional port (RFC 9110 §7.2: Host = uri-host [ ":" port ]). No userinfo, path, query or space.
const REG_NAME_HOST = /^(?:[A-Za-z0-9._~!$&'()*+,;=-]|%[0-9A-Fa-f]{2})+(?::[0-9]{1,5})?$/;
const IP_LITERAL_HOST = /^\[([0-9A-Fa-f:.]+)\](?::[0-9]{1,5})?$/;

// Nearly every request names the same host as the one before: remembering the last valid one
// makes the check a string compare on the hot path. Only a value that passed is remembered.
let lastValid = '';

/** Whether `value` is a valid `Host` (or absolute-form authority): reg-name / IPv4 / [IPv6], optional port. */
export function isValidHost(value: string): boolean {
  if (value === lastValid && value !== '') return true;
  let ok: boolean;
  if (value.charCodeAt(0) !== 91 /* [ */) ok = REG_NAME_HOST.test(value);
  else {
    const m = IP_LITERAL_HOST.exec(value);
    ok = m !== null && isIPv6(m[1]!);
  }
  if (ok) lastValid = value;
  return ok;
}

/** How many `Host` field lines the request had (Node keeps only the first). */
export function hostFieldCount(rawHeaders: readonly string[]): number {
  let n = 0;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    if (name.length === 4 && (name === 'Host' || name === 'host' || name.toLowerCase() === 'host')) n++;
  }
  return n;
}

/**
 * RFC 9112 §3.2: exactly one `Host`, a valid authority, required in HTTP/1.1; for an absolute-form
 * target the target's authority is the host (§3.2.2). What passes is `ctx.host`, which is what goes
 * upstream (`X-Forwarded-Host`, and `Host` with `preserveHost`). Throws 400 bad-request.
 */
export function checkHost(ctx: RequestContext, url: string): void {
  const req = ctx.req;
  const host = req.headers.host;
  if (host !== undefined) {
    if (!isValidHost(host) || hostFieldCount(req.rawHeaders) !== 1)
      throw new Problem('bad-request', { detail: 'The request needs exactly one valid Host header.' });
  } else if (req.httpVersionMajor !== 1 || req.httpVersionMinor !== 0)
    throw new Problem('bad-request', { detail: 'The request has no Host header.' });
  if (url.charCodeAt(0) === 47 /* / */) return;
  const authority = targetAuthority(url);
  if (authority === undefined) return;
  if (!isValidHost(authority))
    throw new Problem('bad-request', { detail: 'The authority of the request target is not a valid host.' });
  ctx.host = authority;
}
