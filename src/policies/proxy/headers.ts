import { bearerToken } from '../authenticate/credentials.js';
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders } from 'node:http';
import { HOP_BY_HOP, connectionTokens } from '../../shared/http.js';
import type { RequestContext } from '../../gateway/request-context.js';
import type { TrustFn } from '../../shared/trust.js';

/** Headers the gateway sets upstream itself; a client's copies never pass (SPEC §5). */
export const IDENTITY_HEADERS = [
  'x-consumer-id',
  'x-tenant-id',
  'x-credential-id',
  'x-auth-method',
  'x-scopes',
] as const;

/** Our pseudonym in `Via` (RFC 9110 §7.6.3). */
export const VIA_PSEUDONYM = 'tollgate';
export const VIA = `1.1 ${VIA_PSEUDONYM}`;
/** More Tollgate hops than this in `Via` is a loop (a route whose upstream leads back to a gateway). */
export const MAX_VIA_HOPS = 10;

/** How many entries of a `Via` header name Tollgate. */
export function tollgateHops(via: string): number {
  let hops = 0;
  for (const entry of via.split(',')) if (entry.trim().split(/\s+/)[1] === VIA_PSEUDONYM) hops++;
  return hops;
}

export interface RequestHeaderPlan {
  /** Lower-case names never copied from the client. */
  readonly drop: ReadonlySet<string>;
  /** `Authorization` values starting with this (lower-cased) carry an API key and are not forwarded. */
  /** `<prefix>_`: a Bearer token starting with it is an API key, never forwarded. */
  readonly apiKeyPrefix: string;
  readonly preserveHost: boolean;
  readonly trust: TrustFn;
  readonly trustsNobody: boolean;
}

/** Computed once per route at config load. */
export function requestHeaderPlan(options: {
  apiKeyHeader: string;
  apiKeyPrefix: string;
  preserveHost: boolean;
  trust: TrustFn;
  trustsNobody: boolean;
}): RequestHeaderPlan {
  const drop = new Set<string>([
    ...HOP_BY_HOP,
    ...IDENTITY_HEADERS,
    options.apiKeyHeader,
    'x-signature',
    // Set by the gateway below.
    'host',
    'x-request-id',
    'traceparent',
    'x-forwarded-for',
    'x-forwarded-proto',
    'x-forwarded-host',
    'via',
    // Node answers `100 Continue` to the client itself; the upstream request sends its body at once.
    'expect',
  ]);
  return {
    drop,
    apiKeyPrefix: `${options.apiKeyPrefix}_`,
    preserveHost: options.preserveHost,
    trust: options.trust,
    trustsNobody: options.trustsNobody,
  };
}

/** The headers of the upstream request: the client's end-to-end headers plus the gateway's own. */
export function upstreamRequestHeaders(
  ctx: RequestContext,
  plan: RequestHeaderPlan,
  targetHost: string,
): OutgoingHttpHeaders {
  const req = ctx.req;
  const src = req.headers;
  const out: OutgoingHttpHeaders = {};
  const named = src.connection === undefined ? undefined : connectionTokens(src.connection);
  const drop = plan.drop;
  for (const name in src) {
    if (drop.has(name)) continue;
    if (named !== undefined && named.includes(name)) continue;
    out[name] = src[name];
  }
  // Parsed exactly as authentication parses it, so no spelling of `Bearer <key>` gets through.
  const auth = out.authorization;
  if (
    typeof auth === 'string' &&
    auth.includes(plan.apiKeyPrefix) && // cheap: a JWT never gets to the parse below
    bearerToken(auth)?.startsWith(plan.apiKeyPrefix) === true
  )
    delete out.authorization;

  const peer = req.socket.remoteAddress ?? '';
  const peerTrusted = !plan.trustsNobody && plan.trust(peer, 0);
  // Other spellings of the same claims (RFC 7239, nginx's habit) pass only from a trusted proxy.
  if (!peerTrusted) {
    delete out.forwarded;
    delete out['x-real-ip'];
  }
  const priorFor = src['x-forwarded-for'];
  out['x-forwarded-for'] =
    peerTrusted && typeof priorFor === 'string' && priorFor !== '' ? `${priorFor}, ${peer}` : peer;
  const priorProto = src['x-forwarded-proto'];
  out['x-forwarded-proto'] =
    peerTrusted && typeof priorProto === 'string' ? priorProto : isEncrypted(req) ? 'https' : 'http';
  const priorHost = src['x-forwarded-host'];
  const host = ctx.host;
  if (peerTrusted && typeof priorHost === 'string') out['x-forwarded-host'] = priorHost;
  else if (host !== undefined) out['x-forwarded-host'] = host;
  // `received-protocol` is the version the client spoke to us (RFC 9110 §7.6.3).
  const via = req.httpVersion === '1.1' ? VIA : `${req.httpVersion} ${VIA_PSEUDONYM}`;
  const priorVia = src.via;
  out.via = typeof priorVia === 'string' && priorVia !== '' ? `${priorVia}, ${via}` : via;
  out.host = plan.preserveHost && host !== undefined ? host : targetHost;
  out['x-request-id'] = ctx.requestId;
  out.traceparent = ctx.traceparent;

  const id = ctx.identity;
  if (id !== undefined) {
    out['x-consumer-id'] = id.subject;
    out['x-credential-id'] = id.credentialId;
    out['x-auth-method'] = id.method;
    out['x-scopes'] = id.scopes.join(' ');
    if (id.tenant !== undefined) out['x-tenant-id'] = id.tenant;
  }
  return out;
}

function isEncrypted(req: IncomingMessage): boolean {
  return (req.socket as { encrypted?: boolean }).encrypted === true;
}

/**
 * The upstream response's end-to-end headers as a flat `[name, value, …]` list for `writeHead`
 * (raw casing and repeated fields such as `Set-Cookie` kept), plus `Via` and `X-Request-Id`, and
 * the lower-cased map the error rewriter reads. `raw` is undici's `[name, value, …]` Buffers.
 */
export function downstreamHeaders(
  raw: readonly Buffer[],
  requestId: string,
): { list: string[]; map: Record<string, string> } {
  const map: Record<string, string> = {};
  const names: string[] = new Array<string>(raw.length >> 1);
  const values: string[] = new Array<string>(raw.length >> 1);
  for (let i = 0, j = 0; i < raw.length; i += 2, j++) {
    const name = raw[i]!.toString('latin1');
    const value = raw[i + 1]!.toString('latin1');
    names[j] = name;
    values[j] = value;
    const lower = name.toLowerCase();
    const prior = map[lower];
    map[lower] = prior === undefined ? value : `${prior}, ${value}`;
  }
  const named = map.connection === undefined ? undefined : connectionTokens(map.connection);
  const list: string[] = [];
  for (let j = 0; j < names.length; j++) {
    const lower = names[j]!.toLowerCase();
    if (HOP_BY_HOP.has(lower) || lower === 'x-request-id' || lower === 'via') continue;
    if (named !== undefined && named.includes(lower)) continue;
    list.push(names[j]!, values[j]!);
  }
  const via = map.via;
  list.push('via', via === undefined ? VIA : `${via}, ${VIA}`, 'x-request-id', requestId);
  return { list, map };
}

export type { IncomingHttpHeaders };
