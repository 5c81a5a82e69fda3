import { Problem } from '../problems/problem.js';

// Characters that make a path need the slow path: percent-escapes, dots, backslashes, double slashes.
const NEEDS_WORK = /%|\/\.|\\|\/\//;
// Escapes that would let a path change its own structure after an upstream decodes it.
const FORBIDDEN_ESCAPE = /%(2f|5c|00)/i;
const ESCAPE = /%([0-9a-f]{2})/gi;

function decodeUnreserved(_escape: string, hex: string): string {
  const c = parseInt(hex, 16);
  const unreserved =
    (c >= 0x41 && c <= 0x5a) || // A-Z
    (c >= 0x61 && c <= 0x7a) || // a-z
    (c >= 0x30 && c <= 0x39) || // 0-9
    c === 0x2d || // -
    c === 0x2e || // .
    c === 0x5f || // _
    c === 0x7e; // ~
  return unreserved ? String.fromCharCode(c) : `%${hex.toUpperCase()}`;
}

/**
 * Turns a request path (no query) into the canonical path routes are matched on and that is sent
 * upstream: escaped unreserved characters decoded (so `%2e` is a dot and `%61` an `a`), dot
 * segments resolved, repeated slashes merged,
 * and encoded slashes, backslashes or NUL refused with 400 — so nothing an upstream decodes later
 * can climb out of the route's prefix (RFC 3986 §5.2.4; the same stance as Envoy's
 * `path_with_escaped_slashes_action: REJECT_REQUEST` with `merge_slashes`).
 */
export function normalizePath(rawPath: string): string {
  if (rawPath.charCodeAt(0) !== 47 /* / */)
    throw new Problem('bad-request', { detail: 'The request target must be an absolute path.' });
  if (!NEEDS_WORK.test(rawPath)) return rawPath;
  if (FORBIDDEN_ESCAPE.test(rawPath) || rawPath.includes('\\'))
    throw new Problem('bad-request', {
      detail: 'Encoded slashes, backslashes and NUL are not allowed in the path.',
    });
  const segments = rawPath.split('/');
  const out: string[] = [];
  const last = segments.length - 1;
  let trailingSlash = false;
  for (let i = 1; i <= last; i++) {
    // Escaped unreserved characters mean the same as the characters (RFC 3986 §6.2.2.2): decode
    // them, so `/api/%61dmin` is matched — and forwarded — as `/api/admin`, never slipping past a
    // more specific route to a broader one. Other escapes stay, in upper case (§6.2.2.1).
    const plain = segments[i]!.includes('%') ? segments[i]!.replace(ESCAPE, decodeUnreserved) : segments[i]!;
    if (plain === '') {
      if (i === last) trailingSlash = true;
      continue;
    }
    // `..;x` is `..` to an upstream that strips `;params` before resolving dot segments (Tomcat,
    // Spring): resolved there, it would climb out of the prefix this path was routed by.
    const semi = plain.charCodeAt(0) === 46 /* . */ ? plain.indexOf(';') : -1;
    if (semi !== -1 && isDotSegment(plain.slice(0, semi)))
      throw new Problem('bad-request', {
        detail: 'Dot segments with parameters are not allowed in the path.',
      });
    if (plain === '.') {
      if (i === last) trailingSlash = true;
      continue;
    }
    if (plain === '..') {
      out.pop();
      if (i === last) trailingSlash = true;
      continue;
    }
    out.push(plain);
  }
  if (out.length === 0) return '/';
  return '/' + out.join('/') + (trailingSlash ? '/' : '');
}

function isDotSegment(s: string): boolean {
  return s === '.' || s === '..';
}

/**
 * The path a route is looked up by: `;params` removed from every segment (with segments that held
 * nothing else), as Java upstreams strip them before routing (`/v1/orders;jsessionid=1/7` is
 * `/v1/orders/7`). Only called for a path that contains `;`.
 */
export function withoutParams(path: string): string {
  let out = '';
  for (const segment of path.split('/')) {
    const semi = segment.indexOf(';');
    const bare = semi === -1 ? segment : segment.slice(0, semi);
    if (bare !== '') out += '/' + bare;
  }
  return out === '' ? '/' : out;
}

/** The lower-cased segments of a mount path, for `afterSegmentPrefix` (computed at config load). */
export function prefixSegments(prefix: string): readonly string[] {
  return prefix === '/' ? [] : prefix.slice(1).toLowerCase().split('/');
}

/**
 * What is left of `path` once the segments of a prefix (`prefixSegments`) are removed, matched as
 * routes match (case ignored, `;params` and parameter-only segments skipped): `''` for the prefix
 * itself, else a rest starting with `/`; `undefined` when `path` does not start with them.
 */
export function afterSegmentPrefix(path: string, segments: readonly string[]): string | undefined {
  let pos = 0; // at a '/' of `path`
  for (const segment of segments) {
    for (;;) {
      if (pos >= path.length || path.charCodeAt(pos) !== 47) return undefined;
      let end = path.indexOf('/', pos + 1);
      if (end === -1) end = path.length;
      const semi = path.indexOf(';', pos + 1);
      const bare = path.slice(pos + 1, semi !== -1 && semi < end ? semi : end);
      pos = end;
      if (bare === '') continue; // a segment of parameters only
      if (bare.toLowerCase() !== segment) return undefined;
      break;
    }
  }
  return path.slice(pos);
}

/**
 * The authority of an absolute-form request target (`http://a.example:8080/x` → `a.example:8080`),
 * which RFC 9112 §3.2.2 says wins over the `Host` header; `undefined` for any other form.
 */
export function targetAuthority(url: string): string | undefined {
  if (url.charCodeAt(0) === 47 || !/^https?:\/\//i.test(url)) return undefined;
  const start = url.indexOf('//') + 2;
  let end = start;
  while (end < url.length && url.charCodeAt(end) !== 47 && url.charCodeAt(end) !== 63) end++;
  return url.slice(start, end);
}

/** Splits `req.url` into path and query (`?` included), accepting the absolute form too (RFC 9112 §3.2.2). */
export function splitTarget(url: string): { path: string; search: string } {
  let target = url;
  if (target.charCodeAt(0) !== 47 && /^https?:\/\//i.test(target)) {
    const afterScheme = target.indexOf('//') + 2;
    const slash = target.indexOf('/', afterScheme);
    const q = target.indexOf('?', afterScheme);
    target =
      slash === -1 || (q !== -1 && q < slash) ? '/' + (q === -1 ? '' : target.slice(q)) : target.slice(slash);
  }
  const q = target.indexOf('?');
  if (q === -1) return { path: target, search: '' };
  return { path: target.slice(0, q), search: target.slice(q) };
}
