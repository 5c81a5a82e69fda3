import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../core/clock.js';
import { compileTrust } from '../../core/client-ip.js';
import { fakeContext, type FakeRequestOptions } from '../../core/fake-context.js';
import type { Identity } from '../../core/identity.js';
import { generateKey } from '../../keys/format.js';
import type { ProblemWriter } from '../../problems/problem-details.js';
import {
  IDENTITY_HEADERS,
  VIA,
  downstreamHeaders,
  claimHeaderValue,
  identityHeaderValue,
  requestHeaderPlan,
  scopesHeaderValue,
  tollgateHops,
  upstreamRequestHeaders,
  type ResponseOrigin,
} from './headers.js';
import { ProxyStage } from './proxy.js';
import { upstreamSchema } from './schema.js';
import type { UpstreamPool } from './upstream-pool.js';

const TARGET_HOST = 'orders.internal:9001';
const TRUSTED_PROXY = '10.0.0.5';
const CLIENT = '203.0.113.7';

/** The plan a route gets at config load: `trustProxy: 10.0.0.0/8` unless told otherwise. */
function plan(o: { preserveHost?: boolean; trustsNobody?: boolean } = {}) {
  return requestHeaderPlan({
    apiKeyHeader: 'x-api-key',
    apiKeyPrefix: 'tg',
    preserveHost: o.preserveHost ?? false,
    trust: compileTrust(['10.0.0.0/8']),
    trustsNobody: o.trustsNobody ?? false,
  });
}

function upstream(options: FakeRequestOptions, p = plan()) {
  const t = fakeContext({ remoteAddress: CLIENT, ...options });
  return { t, out: upstreamRequestHeaders(t.ctx, p, TARGET_HOST) };
}

const apiKeyIdentity: Identity = {
  method: 'api-key',
  credentialId: 'key_123',
  subject: 'user-7',
  issuer: 'https://idp.test',
  tenant: 'acme',
  scopes: ['orders:read', 'orders:write'],
  plan: undefined,
  rateLimits: undefined,
  remaining: undefined,
};

describe('claim headers (auth.jwt[].claimHeaders, SPEC §9)', () => {
  const ISS = 'https://idp.test';
  const claimPlan = () =>
    requestHeaderPlan({
      apiKeyHeader: 'x-api-key',
      apiKeyPrefix: 'tg',
      preserveHost: false,
      trust: compileTrust(['10.0.0.0/8']),
      trustsNobody: false,
      issuers: [
        { issuer: ISS, claimHeaders: { 'X-User-Role': 'role', 'X-Org': 'org', 'X-Groups': 'groups' } },
      ],
    });
  const jwtIdentity = (claims: Record<string, unknown>): Identity => ({
    method: 'jwt',
    credentialId: 'jwt_1',
    subject: 'alice',
    issuer: ISS,
    tenant: undefined,
    scopes: [],
    plan: undefined,
    rateLimits: undefined,
    remaining: undefined,
    claims,
  });
  const forged = { 'x-user-role': 'admin', x_user_role: 'admin', X_ORG: 'evil', 'x-groups': 'root' };

  it("sends the issuer's claims upstream after dropping every client copy, in every spelling", () => {
    const { out } = upstream(
      { headers: forged, identity: jwtIdentity({ role: 'editor', org: 'Zürich AG', groups: ['a b', 'c'] }) },
      claimPlan(),
    );
    expect(out['x-user-role']).toBe('editor');
    expect(out.x_user_role).toBeUndefined();
    expect(out.x_org).toBeUndefined();
    expect(out['x-org']).toBe('Z%C3%BCrich AG');
    expect(out['x-groups']).toBe('a%20b c');
  });

  it('a claim the token lacks, an API key and an anonymous request send none, and forged copies never pass', () => {
    for (const identity of [jwtIdentity({}), apiKeyIdentity, undefined]) {
      const { out } = upstream({ headers: forged, ...(identity ? { identity } : {}) }, claimPlan());
      for (const h of ['x-user-role', 'x_user_role', 'x_org', 'x-org', 'x-groups'])
        expect(out[h], h).toBeUndefined();
    }
  });

  it('encodes every claim shape as a safe header value', () => {
    const c = { s: 'a\r\nb', n: 3, b: false, o: { k: 'v' }, m: ['a', 1], nil: null };
    expect(claimHeaderValue(c, 's')).toBe('a%0D%0Ab');
    expect(claimHeaderValue(c, 'n')).toBe('3');
    expect(claimHeaderValue(c, 'b')).toBe('false');
    expect(claimHeaderValue(c, 'o')).toBe('{"k":"v"}');
    expect(claimHeaderValue(c, 'm')).toBe('["a",1]');
    expect(claimHeaderValue(c, 'nil')).toBeUndefined();
    expect(claimHeaderValue(c, 'toString')).toBeUndefined();
    expect(claimHeaderValue(undefined, 's')).toBeUndefined();
  });
});

describe('upstream request headers', () => {
  it("drops a client's identity headers and sets them from ctx.identity", () => {
    const forged = Object.fromEntries(IDENTITY_HEADERS.map((h) => [h, 'forged']));
    const { out } = upstream({ headers: forged, identity: apiKeyIdentity });
    expect(out['x-consumer-id']).toBe('user-7');
    expect(out['x-consumer-issuer']).toBe('https://idp.test');
    expect(out['x-tenant-id']).toBe('acme');
    expect(out['x-credential-id']).toBe('key_123');
    expect(out['x-auth-method']).toBe('api-key');
    expect(out['x-scopes']).toBe('orders:read orders:write');
  });

  it('sends no identity headers at all on an anonymous request', () => {
    const forged = Object.fromEntries(IDENTITY_HEADERS.map((h) => [h, 'forged']));
    const { out } = upstream({ headers: forged });
    for (const h of IDENTITY_HEADERS) expect(out[h], h).toBeUndefined();
  });

  it('leaves out tenant and issuer headers the identity does not have', () => {
    const { out } = upstream({
      headers: { 'x-tenant-id': 'forged', 'x-consumer-issuer': 'forged' },
      identity: { ...apiKeyIdentity, tenant: undefined, issuer: undefined },
    });
    expect(out['x-tenant-id']).toBeUndefined();
    expect(out['x-consumer-issuer']).toBeUndefined();
  });

  it('percent-encodes identity values an upstream could misread', () => {
    const { out } = upstream({
      identity: { ...apiKeyIdentity, subject: 'José\r\nX-Admin: 1', scopes: ['a b', 'c%'] },
    });
    expect(out['x-consumer-id']).toBe('Jos%C3%A9%0D%0AX-Admin: 1');
    expect(out['x-scopes']).toBe('a%20b c%25');
    expect(decodeURIComponent(identityHeaderValue(' 100% ünïcode '))).toBe(' 100% ünïcode ');
    expect(scopesHeaderValue(['plain'])).toBe('plain');
  });

  it('drops underscore spellings of gateway-owned names (CGI reads them as the same variable)', () => {
    const { out } = upstream({
      headers: {
        X_Consumer_Id: 'forged',
        x_tenant_id: 'forged',
        'X-Forwarded_For': '6.6.6.6',
        x_api_key: 'tg_live_x',
        x_custom_thing: 'kept',
      },
      identity: apiKeyIdentity,
    });
    expect(out.x_consumer_id).toBeUndefined();
    expect(out.x_tenant_id).toBeUndefined();
    expect(out['x-forwarded_for']).toBeUndefined();
    expect(out.x_api_key).toBeUndefined();
    expect(out.x_custom_thing).toBe('kept');
    expect(out['x-consumer-id']).toBe('user-7');
  });

  it('replaces X-Forwarded-* from an untrusted peer with what the gateway saw', () => {
    const { out } = upstream({
      headers: {
        'x-forwarded-for': '1.2.3.4',
        'x-forwarded-proto': 'https',
        'x-forwarded-host': 'evil.example',
        forwarded: 'for=1.2.3.4',
        'x-real-ip': '1.2.3.4',
        'x-forwarded-prefix': '/admin',
        'x-original-url': '/admin',
        'cf-connecting-ip': '1.2.3.4',
      },
    });
    expect(out['x-forwarded-for']).toBe(CLIENT);
    expect(out['x-forwarded-proto']).toBe('http');
    expect(out['x-forwarded-host']).toBe('gateway.test');
    for (const h of ['forwarded', 'x-real-ip', 'x-forwarded-prefix', 'x-original-url', 'cf-connecting-ip'])
      expect(out[h], h).toBeUndefined();
  });

  it('extends X-Forwarded-* from a trusted proxy and keeps its other claims', () => {
    const { out } = upstream({
      remoteAddress: TRUSTED_PROXY,
      headers: {
        'x-forwarded-for': CLIENT,
        'x-forwarded-proto': 'https',
        'x-forwarded-host': 'api.example.com',
        forwarded: `for=${CLIENT}`,
      },
    });
    expect(out['x-forwarded-for']).toBe(`${CLIENT}, ${TRUSTED_PROXY}`);
    expect(out['x-forwarded-proto']).toBe('https');
    expect(out['x-forwarded-host']).toBe('api.example.com');
    expect(out.forwarded).toBe(`for=${CLIENT}`);
  });

  it('trusts nobody when trustProxy is off, whatever the peer', () => {
    const { out } = upstream(
      { remoteAddress: TRUSTED_PROXY, headers: { 'x-forwarded-for': '1.2.3.4', forwarded: 'for=1.2.3.4' } },
      plan({ trustsNobody: true }),
    );
    expect(out['x-forwarded-for']).toBe(TRUSTED_PROXY);
    expect(out.forwarded).toBeUndefined();
  });

  it('never forwards an API key: its header, a key as Bearer, or a key in an odd Authorization spelling', () => {
    const key = generateKey('tg');
    const onKeyRoute = upstream({
      headers: { 'x-api-key': key, authorization: `Bearer ${key}` },
      identity: apiKeyIdentity,
    }).out;
    expect(onKeyRoute['x-api-key']).toBeUndefined();
    expect(onKeyRoute.authorization).toBeUndefined();
    // A public route forwards Authorization as sent, except an API key in it.
    for (const authorization of [`Bearer ${key}`, `Bearer\t${key}`, `Token x ${key}`, key])
      expect(upstream({ headers: { authorization } }).out.authorization, authorization).toBeUndefined();
  });

  it("forwards a JWT's Authorization header", () => {
    const jwt = 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ0Z190ZXN0In0.sig';
    const { out } = upstream({
      headers: { authorization: `Bearer ${jwt}` },
      identity: { ...apiKeyIdentity, method: 'jwt' },
    });
    expect(out.authorization).toBe(`Bearer ${jwt}`);
  });

  it('drops hop-by-hop headers and the ones Connection names', () => {
    const { out } = upstream({
      headers: {
        connection: 'keep-alive, X-Secret-Hop',
        'keep-alive': 'timeout=5',
        'x-secret-hop': '1',
        te: 'trailers',
        upgrade: 'websocket',
        'proxy-authorization': 'Basic eA==',
        'proxy-connection': 'keep-alive',
        trailer: 'x-checksum',
        expect: '100-continue',
        'x-http-method-override': 'DELETE',
        'x-signature': 'v1=00',
        'x-end-to-end': 'kept',
      },
    });
    for (const h of [
      'connection',
      'keep-alive',
      'x-secret-hop',
      'te',
      'upgrade',
      'proxy-authorization',
      'proxy-connection',
      'trailer',
      'expect',
      'x-http-method-override',
      'x-signature',
    ])
      expect(out[h], h).toBeUndefined();
    expect(out['x-end-to-end']).toBe('kept');
  });

  it('appends the gateway to Via', () => {
    expect(upstream({}).out.via).toBe(VIA);
    expect(upstream({ headers: { via: '1.1 cdn' } }).out.via).toBe('1.1 cdn, 1.1 tollgate');
    const t = fakeContext({});
    t.req.httpVersion = '1.0';
    expect(upstreamRequestHeaders(t.ctx, plan(), TARGET_HOST).via).toBe('1.0 tollgate');
    expect(tollgateHops('1.1 cdn, 1.1 tollgate, 1.0 tollgate')).toBe(2);
  });

  it("sets Host to the target's (or the client's with preserveHost), the request id and traceparent", () => {
    const { t, out } = upstream({ headers: { host: 'api.example.com', 'x-request-id': 'req-1' } });
    expect(out.host).toBe(TARGET_HOST);
    expect(out['x-request-id']).toBe('req-1');
    expect(out.traceparent).toBe(t.ctx.traceparent);
    const preserved = upstream({ headers: { host: 'api.example.com' } }, plan({ preserveHost: true })).out;
    expect(preserved.host).toBe('api.example.com');
  });

  it("lets a stage's upstream headers replace the client's copy", () => {
    const t = fakeContext({ headers: { 'x-tenant-shard': 'client' } });
    t.ctx.setUpstreamHeader('X-Tenant-Shard', 'eu-1');
    expect(upstreamRequestHeaders(t.ctx, plan(), TARGET_HOST)['x-tenant-shard']).toBe('eu-1');
  });
});

describe('downstream (response) headers', () => {
  const origin: ResponseOrigin = {
    origin: 'http://orders.internal:9001',
    host: TARGET_HOST,
    basePath: '/base',
  };
  const raw = (...pairs: string[]) => pairs.map((s) => Buffer.from(s, 'latin1'));

  it('drops hop-by-hop, Connection-named and upstream-identifying headers, then adds Via and X-Request-Id', () => {
    const t = fakeContext({ headers: { 'x-request-id': 'req-9' } });
    const { list, map, invalid } = downstreamHeaders(
      raw(
        'Content-Type',
        'application/json',
        'Connection',
        'close, X-Hop',
        'X-Hop',
        '1',
        'Keep-Alive',
        'timeout=5',
        'Transfer-Encoding',
        'chunked',
        'Server',
        'nginx/1.2',
        'X-Powered-By',
        'Express',
        'Via',
        '1.1 internal-lb',
        'X-Request-Id',
        'upstream-id',
        'Set-Cookie',
        'a=1',
        'Set-Cookie',
        'b=2',
      ),
      200,
      t.ctx,
      origin,
      undefined,
      plan(),
    );
    expect(invalid).toBeUndefined();
    expect(list).toEqual([
      'Content-Type',
      'application/json',
      'Set-Cookie',
      'a=1',
      'Set-Cookie',
      'b=2',
      'via',
      VIA,
      'x-request-id',
      'req-9',
    ]);
    expect(map['set-cookie']).toBe('a=1, b=2');
    expect(map.server).toBe('nginx/1.2');
  });

  it('drops Content-Length from a 204 and a 304', () => {
    const t = fakeContext({});
    for (const status of [204, 304]) {
      const { list } = downstreamHeaders(
        raw('Content-Length', '0'),
        status,
        t.ctx,
        origin,
        undefined,
        plan(),
      );
      expect(list).not.toContain('Content-Length');
    }
    const ok = downstreamHeaders(raw('Content-Length', '2'), 200, t.ctx, origin, undefined, plan());
    expect(ok.list.slice(0, 2)).toEqual(['Content-Length', '2']);
  });

  it('names the first header Node would refuse to write', () => {
    const t = fakeContext({});
    const bad = downstreamHeaders(
      raw('X-Ok', '1', 'Bad Name', 'x', 'X-Ctl', 'a\u0001b'),
      200,
      t.ctx,
      origin,
      undefined,
      plan(),
    );
    expect(bad.invalid).toBe('Bad Name');
    const ctl = downstreamHeaders(raw('X-Ctl', 'a\u0001b'), 200, t.ctx, origin, undefined, plan());
    expect(ctl.invalid).toBe('X-Ctl');
  });

  it('rewrites a Location naming the target to the gateway, putting stripPrefix back', () => {
    const t = fakeContext({ headers: { host: 'api.example.com' } });
    const location = (value: string) =>
      downstreamHeaders(raw('Location', value), 201, t.ctx, origin, '/v1', plan()).list[1];
    expect(location('http://orders.internal:9001/base/orders/7')).toBe('http://api.example.com/v1/orders/7');
    expect(location('//orders.internal:9001/base/orders/7?x=1')).toBe(
      'http://api.example.com/v1/orders/7?x=1',
    );
    // Outside the target's base path: the internal origin goes, the path stays.
    expect(location('http://orders.internal:9001/other')).toBe('http://api.example.com/other');
    // Other origins, relative references and look-alike ports pass unchanged.
    expect(location('https://elsewhere.example/x')).toBe('https://elsewhere.example/x');
    expect(location('/orders/7')).toBe('/orders/7');
    expect(location('http://orders.internal:90010/x')).toBe('http://orders.internal:90010/x');
  });
});

describe('ProxyStage.upstreamPath', () => {
  function stage(stripPrefix?: string) {
    return new ProxyStage({
      upstream: upstreamSchema.parse({ targets: ['http://orders.internal:9001/base'], stripPrefix }),
      upstreamErrors: 'rewrite',
      // upstreamPath reads only the route's upstream config; the pool and writer are never touched.
      pool: {} as UpstreamPool,
      headers: plan(),
      writer: {} as ProblemWriter,
      clock: new ManualClock(),
      bodyLimit: 1024,
    });
  }
  const path = (s: ProxyStage, url: string) => s.upstreamPath(fakeContext({ url }).ctx);

  it('strips the prefix and keeps the query', () => {
    const s = stage('/v1');
    expect(path(s, '/v1/orders/7?expand=items')).toBe('/orders/7?expand=items');
    expect(path(s, '/v1/')).toBe('/');
  });

  it('strips the exact prefix to nothing (the target base path itself)', () => {
    expect(path(stage('/v1'), '/v1?q=1')).toBe('?q=1');
    expect(path(stage('/v1'), '/v1')).toBe('');
  });

  it('strips only whole segments', () => {
    expect(path(stage('/v1'), '/v10/orders')).toBe('/v10/orders');
  });

  it('strips segments matched ignoring case and ;params, as routes match', () => {
    expect(path(stage('/v1/shop'), '/V1/Shop/orders')).toBe('/orders');
    expect(path(stage('/v1'), '/v1;jsessionid=1/orders')).toBe('/orders');
  });

  it('forwards the path unchanged without stripPrefix or with "/"', () => {
    expect(path(stage(), '/v1/orders?x')).toBe('/v1/orders?x');
    expect(path(stage('/'), '/v1/orders')).toBe('/v1/orders');
  });
});
