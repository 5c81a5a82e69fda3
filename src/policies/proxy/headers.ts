import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders } from 'node:http';
import { HOP_BY_HOP, connectionTokens } from '../../shared/http.js';
import type { RequestContext } from '../../core/context.js';
import type { TrustFn } from '../../core/client-ip.js';
import { credentialFromQuery } from '../websocket/websocket.js';

/** Headers the gateway sets upstream itself; a client's copies never pass (SPEC §5, §9). */
export const IDENTITY_HEADERS = [
  'x-consumer-id',
  'x-consumer-issuer',
  'x-tenant-id',
  'x-credential-id',
  'x-auth-method',
  'x-scopes',
] as const;

/**
 * Claims only a proxy in front may make (the client's address, scheme, port, prefix or original
 * URL): dropped unless the socket peer is a `trustProxy` peer, as `X-Forwarded-*` are believed
 * only from one. docs/security.md lists them.
 */
export const UNTRUSTED_PEER_HEADERS = [
  'forwarded',
  'x-real-ip',
  'x-forwarded-port',
  'x-forwarded-prefix',
  'x-forwarded-scheme',
  'x-forwarded-protocol',
  'x-forwarded-ssl',
  'x-forwarded-server',
  'x-forwarded-uri',
  'x-original-url',
  'x-original-uri',
  'x-original-host',
  'x-rewrite-url',
  'true-client-ip',
  'x-client-ip',
  'x-cluster-client-ip',
  'cf-connecting-ip',
  'fastly-client-ip',
  'front-end-https',
  'x-url-scheme',
] as const;

/**
 * Method overrides, dropped from every request: the route's `methods` check sees only the request
 * method, so an upstream framework that honours one would run a method the route does not allow —
 * and a trusted proxy forwards a client's override as readily as an untrusted client sends it.
 */
export const METHOD_OVERRIDE_HEADERS = [
  'x-http-method-override',
  'x-http-method',
  'x-method-override',
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
  /** Lower-case names never copied from a `trustProxy` peer. */
  readonly drop: ReadonlySet<string>;
  /** Lower-case names never copied from any other peer: `drop` plus `UNTRUSTED_PEER_HEADERS`. */
  readonly dropUntrusted: ReadonlySet<string>;
  /** `<prefix>_`: a Bearer token starting with it is an API key, never forwarded. */
  readonly apiKeyPrefix: string;
  /**
   * `<prefix>_` at the start of `Authorization` or after white space: an API key in any spelling
   * (`Bearer<TAB>tg_…`, extra tokens). Authentication parses strictly and refuses the odd ones, but a
   * public route forwards `Authorization` as sent. A JWT has no white space, so it never matches.
   */
  readonly apiKeyInAuthorization: RegExp;
  readonly preserveHost: boolean;
  readonly trust: TrustFn;
  readonly trustsNobody: boolean;
  /** Issuer → `[header, claim]` pairs (`auth.jwt[].claimHeaders`); undefined when none are configured. */
  readonly claimHeaders: ReadonlyMap<string, ReadonlyArray<readonly [string, string]>> | undefined;
}

/** What `requestHeaderPlan` reads of an issuer (`auth.jwt[]`). */
export interface ClaimHeaderIssuer {
  readonly issuer: string;
  readonly claimHeaders?: Readonly<Record<string, string>> | undefined;
}

/** Computed once per route at config load. */
export function requestHeaderPlan(options: {
  apiKeyHeader: string;
  apiKeyPrefix: string;
  preserveHost: boolean;
  trust: TrustFn;
  trustsNobody: boolean;
  /** The config's JWT issuers: their `claimHeaders` are sent upstream, and never taken from a client. */
  issuers?: readonly ClaimHeaderIssuer[] | undefined;
}): RequestHeaderPlan {
  let claimHeaders: Map<string, Array<readonly [string, string]>> | undefined;
  for (const issuer of options.issuers ?? []) {
    const pairs = Object.entries(issuer.claimHeaders ?? {}).map(
      ([header, claim]) => [header.toLowerCase(), claim] as const,
    );
    if (pairs.length > 0) (claimHeaders ??= new Map()).set(issuer.issuer, pairs);
  }
  const drop = new Set<string>([
    // Claim headers are the gateway's on every route, as the identity headers are (SPEC §9).
    ...[...(claimHeaders?.values() ?? [])].flatMap((pairs) => pairs.map(([header]) => header)),
    ...HOP_BY_HOP,
    ...IDENTITY_HEADERS,
    ...METHOD_OVERRIDE_HEADERS,
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
    dropUntrusted: new Set([...drop, ...UNTRUSTED_PEER_HEADERS]),
    apiKeyPrefix: `${options.apiKeyPrefix}_`,
    apiKeyInAuthorization: new RegExp(`(?:^|\\s)${escapeRegExp(options.apiKeyPrefix)}_`),
    preserveHost: options.preserveHost,
    trust: options.trust,
    trustsNobody: options.trustsNobody,
    claimHeaders,
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
  const peer = ctx.peerAddress;
  const peerTrusted = !plan.trustsNobody && plan.trust(peer, 0);
  // Other spellings of the proxy's claims (RFC 7239, nginx's and CDNs' habits) pass only from a trusted proxy.
  const drop = peerTrusted ? plan.drop : plan.dropUntrusted;
  for (const name in src) {
    if (drop.has(name)) continue;
    if (named !== undefined && named.includes(name)) continue;
    // CGI, WSGI and Rack read `X_Tenant_Id` as `HTTP_X_TENANT_ID`, the same variable as `X-Tenant-Id`
    // (Envoy's `headers_with_underscores_action`): such a spelling of a gateway-owned name is
    // dropped like the name itself. Only names with `_` pay for the check.
    if (name.includes('_') && drop.has(name.replaceAll('_', '-'))) continue;
    out[name] = src[name];
  }
  const id = ctx.identity;
  const auth = out.authorization;
  if (auth !== undefined) {
    // On an API-key request, authentication let `Authorization` through only as the same key.
    if (id?.method === 'api-key') delete out.authorization;
    // Made from `access_token` (a WebSocket route): the gateway's credential, not the upstream's.
    else if (credentialFromQuery(req)) delete out.authorization;
    else if (
      typeof auth === 'string' &&
      auth.includes(plan.apiKeyPrefix) && // cheap: a JWT never gets to the test below
      plan.apiKeyInAuthorization.test(auth)
    )
      delete out.authorization;
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

  if (id !== undefined) {
    out['x-consumer-id'] = identityHeaderValue(id.subject);
    out['x-credential-id'] = id.credentialId;
    out['x-auth-method'] = id.method;
    out['x-scopes'] = scopesHeaderValue(id.scopes);
    if (id.tenant !== undefined) out['x-tenant-id'] = identityHeaderValue(id.tenant);
    if (id.issuer !== undefined) out['x-consumer-issuer'] = identityHeaderValue(id.issuer);
    const claimHeaders = plan.claimHeaders;
    if (claimHeaders !== undefined && id.method === 'jwt' && id.issuer !== undefined) {
      const pairs = claimHeaders.get(id.issuer);
      if (pairs !== undefined)
        for (const [header, claim] of pairs) {
          const value = claimHeaderValue(id.claims, claim);
          if (value !== undefined) out[header] = value;
        }
    }
  }
  // What a stage added (a custom policy, a header transform): it replaces the client's copy.
  const added = ctx.upstreamHeaders;
  if (added !== undefined) for (let i = 0; i < added.length; i += 2) out[added[i]!] = added[i + 1]!;
  return out;
}

/**
 * An identity value (subject, tenant, issuer) as a header value every upstream can read and
 * decode exactly: visible ASCII (0x21–0x7E) other than `%`, and spaces between them, pass
 * unchanged; anything else — `%`, a space at either end, control characters (CR, LF, TAB, NUL),
 * and every non-ASCII character, as its UTF-8 bytes — is percent-encoded (`%XX`, upper-case hex,
 * RFC 3986 §2.1). `decodeURIComponent` gives the original back; on values without `%` it is a no-op.
 * A lone surrogate (not Unicode) is sent as U+FFFD; tokens never carry one (refused at verification).
 */
export function identityHeaderValue(value: string): string {
  return encodeIdentity(value, false);
}

/**
 * A claim as a header value (`auth.jwt[].claimHeaders`): a string as `identityHeaderValue`, an
 * array of strings space-separated as `X-Scopes` is, a number or boolean as written; anything
 * else (an object, a mixed array) as its JSON, encoded the same way. Undefined (no header) for a
 * claim the token does not carry.
 */
export function claimHeaderValue(
  claims: Readonly<Record<string, unknown>> | undefined,
  claim: string,
): string | undefined {
  if (claims === undefined || !Object.hasOwn(claims, claim)) return undefined;
  const value = claims[claim];
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'string') return identityHeaderValue(value);
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  if (Array.isArray(value) && value.every((v) => typeof v === 'string')) return scopesHeaderValue(value);
  return identityHeaderValue(JSON.stringify(value));
}

/** `X-Scopes`: each scope encoded as `identityHeaderValue`, with every space encoded, joined by single spaces. */
export function scopesHeaderValue(scopes: readonly string[]): string {
  let out = '';
  for (let i = 0; i < scopes.length; i++) out += (i === 0 ? '' : ' ') + encodeIdentity(scopes[i]!, true);
  return out;
}

function encodeIdentity(value: string, spaces: boolean): string {
  const n = value.length;
  for (let i = 0; i < n; i++) {
    const c = value.charCodeAt(i);
    if (c > 0x7e || c < 0x20 || c === 0x25 || (c === 0x20 && (spaces || i === 0 || i === n - 1)))
      return percentEncode(value, spaces);
  }
  return value;
}

function percentEncode(value: string, spaces: boolean): string {
  const text = /\p{Cs}/u.test(value) ? value.replace(/\p{Cs}/gu, '\ufffd') : value;
  const bytes = Buffer.from(text, 'utf8');
  const last = bytes.length - 1;
  let out = '';
  for (let i = 0; i <= last; i++) {
    const b = bytes[i]!;
    if (b > 0x20 && b < 0x7f && b !== 0x25) out += String.fromCharCode(b);
    else if (b === 0x20 && !spaces && i !== 0 && i !== last) out += ' ';
    else out += `%${b < 16 ? '0' : ''}${b.toString(16).toUpperCase()}`;
  }
  return out;
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function isEncrypted(req: IncomingMessage): boolean {
  return (req.socket as { encrypted?: boolean } | null)?.encrypted === true;
}

/**
 * Upstream response headers that never reach the client: hop-by-hop ones, the gateway's own
 * (`X-Request-Id`, `Via`) and those that name the upstream's software. The upstream's `Via`
 * entries are dropped rather than extended: they name internal hops (load balancers, sidecars),
 * and the gateway's own `1.1 tollgate` stands for the whole internal chain (RFC 9110 §7.6.3 lets an
 * intermediary replace received-by hosts with a pseudonym and combine entries).
 */
const DOWNSTREAM_DROP = new Set([...HOP_BY_HOP, 'x-request-id', 'via', 'server', 'x-powered-by']);
/** RFC 9110 §5.6.2 `token`: what Node accepts as a header name. */
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** What Node refuses in a header value (its own check in `writeHead`): controls other than HTAB. */
const BAD_VALUE_CHAR = /[^\t\x20-\x7e\x80-\xff]/;
/** A `Host` value fit to build a URL from: a DNS name or IP literal and an optional port. */
const HOST_VALUE = /^(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$/;

/** The upstream target a response came from, as `Location` rewriting needs it. */
export interface ResponseOrigin {
  /** `scheme://host[:port]`, as `URL.origin` spells it. */
  readonly origin: string;
  /** `host[:port]`. */
  readonly host: string;
  /** The target URL's path, no trailing slash ('' for none). */
  readonly basePath: string;
}

/**
 * The upstream response's end-to-end headers as a flat `[name, value, …]` list for `writeHead`
 * (raw casing and repeated fields such as `Set-Cookie` kept), plus `Via` and `X-Request-Id`, and
 * the lower-cased map the error rewriter reads. `raw` is undici's `[name, value, …]` Buffers.
 *
 * `invalid` names the first header Node would refuse to write (a name that is not a token, a
 * value with control characters): such a response is unusable, and the caller answers 502 rather
 * than let `writeHead` throw mid-response. A 204 or 304 loses `Content-Length` (a 204 must not
 * have one, and clients such as undici wait for the body a 304's would announce). A `Location`
 * or `Content-Location` that names the target is rewritten to the gateway (see `relocate`).
 */
export function downstreamHeaders(
  raw: readonly Buffer[],
  status: number,
  ctx: RequestContext,
  target: ResponseOrigin,
  stripPrefix: string | undefined,
  plan: RequestHeaderPlan,
): { list: string[]; map: Record<string, string>; invalid: string | undefined } {
  const map: Record<string, string> = {};
  const n = raw.length >> 1;
  const names: string[] = new Array<string>(n);
  const lowers: string[] = new Array<string>(n);
  const values: string[] = new Array<string>(n);
  let invalid: string | undefined;
  for (let i = 0, j = 0; i < raw.length; i += 2, j++) {
    const name = raw[i]!.toString('latin1');
    const value = raw[i + 1]!.toString('latin1');
    if (invalid === undefined && (!HEADER_NAME.test(name) || BAD_VALUE_CHAR.test(value))) invalid = name;
    names[j] = name;
    values[j] = value;
    const lower = name.toLowerCase();
    lowers[j] = lower;
    const prior = map[lower];
    map[lower] = prior === undefined ? value : `${prior}, ${value}`;
  }
  const named = map.connection === undefined ? undefined : connectionTokens(map.connection);
  const bodiless = status === 204 || status === 304;
  const list: string[] = [];
  for (let j = 0; j < n; j++) {
    const lower = lowers[j]!;
    if (DOWNSTREAM_DROP.has(lower)) continue;
    if (named !== undefined && named.includes(lower)) continue;
    if (bodiless && lower === 'content-length') continue;
    const value = values[j]!;
    list.push(
      names[j]!,
      lower === 'location' || lower === 'content-location'
        ? relocate(value, ctx, target, stripPrefix, plan)
        : value,
    );
  }
  list.push('via', VIA, 'x-request-id', ctx.requestId);
  return { list, map, invalid };
}

/**
 * A `Location`/`Content-Location` that names the upstream target, rewritten to the gateway as
 * nginx's `proxy_redirect default` does: the client's scheme and host (a trusted proxy's
 * `X-Forwarded-Proto/Host`, else what the client connected to), and the path mapped back through
 * the route (the target's base path removed, `stripPrefix` put back). A path outside the target's
 * base path keeps its path but still loses the internal origin. Any other value (relative,
 * another origin) passes unchanged. Runs only for responses that carry these headers.
 */
function relocate(
  value: string,
  ctx: RequestContext,
  target: ResponseOrigin,
  stripPrefix: string | undefined,
  plan: RequestHeaderPlan,
): string {
  let rest: string;
  const origin = target.origin;
  if (value.length >= origin.length && value.slice(0, origin.length).toLowerCase() === origin)
    rest = value.slice(origin.length);
  else if (value.startsWith('//') && value.slice(2, 2 + target.host.length).toLowerCase() === target.host)
    rest = value.slice(2 + target.host.length); // a network-path reference to the target
  else return value;
  // The origin must end here: `http://up:9001x` and `http://up:90010` are other hosts.
  const next = rest.charCodeAt(0);
  if (rest !== '' && next !== 47 /* / */ && next !== 63 /* ? */ && next !== 35 /* # */) return value;
  let path = rest;
  const base = target.basePath;
  const underBase =
    base === '' ||
    (path.startsWith(base) && (path.length === base.length || '/?#'.includes(path.charAt(base.length))));
  if (underBase) {
    path = path.slice(base.length);
    if (stripPrefix !== undefined && stripPrefix !== '/') path = stripPrefix + path;
  }
  if (path.charCodeAt(0) !== 47) path = '/' + path;
  return (clientOrigin(ctx, plan) ?? '') + path;
}

/** `scheme://host` as the client addressed the gateway, or undefined when its host is unusable. */
function clientOrigin(ctx: RequestContext, plan: RequestHeaderPlan): string | undefined {
  const req = ctx.req;
  const src = req.headers;
  const trusted = !plan.trustsNobody && plan.trust(ctx.peerAddress, 0);
  const claimedProto = trusted ? firstValue(src['x-forwarded-proto'])?.toLowerCase() : undefined;
  const proto =
    claimedProto === 'https' || claimedProto === 'http' ? claimedProto : isEncrypted(req) ? 'https' : 'http';
  const host = (trusted ? firstValue(src['x-forwarded-host']) : undefined) ?? ctx.host;
  // Without a usable host the reference stays relative (RFC 9110 §10.2.2 allows it).
  return host !== undefined && HOST_VALUE.test(host) ? `${proto}://${host}` : undefined;
}

/** The first entry of a comma-separated header a chain of proxies appended to. */
function firstValue(value: string | string[] | undefined): string | undefined {
  if (typeof value !== 'string') return undefined;
  const comma = value.indexOf(',');
  const first = (comma === -1 ? value : value.slice(0, comma)).trim();
  return first === '' ? undefined : first;
}

export type { IncomingHttpHeaders };
