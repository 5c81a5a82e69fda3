import { afterEach, describe, expect, it } from 'vitest';
import { createSecretKey } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SignJWT } from 'jose';
import { Redis } from 'ioredis';
import { startGateway, type RunningGateway } from '../helpers/gateway.js';
import { parseRaw, rawExchange, request, type Reply } from '../helpers/http.js';
import { expectProblem } from '../helpers/problem.js';
import { sharedRedisUrl, uniquePrefix } from '../helpers/redis.js';
import { createLogger } from '../../src/observability/logger.js';
import { runCli } from '../../src/cli/index.js';
import type { ConfigInput } from '../../src/config/schema.js';
import { catalog } from '../../src/problems/catalog.js';
import { META_LIMITS } from '../../src/admin/schemas.js';

const TOKEN = 'admin-hardening-token-0123';
const JWT_SECRET = 'admin-hardening-jwt-secret-0123456789ab';
const ISSUER = 'https://idp.admin-hardening.test/';

const cleanup: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

async function deletePrefix(prefix: string): Promise<void> {
  const redis = new Redis(sharedRedisUrl, { maxRetriesPerRequest: 1 });
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500);
    if (keys.length > 0) await redis.del(...keys);
    cursor = next;
  } while (cursor !== '0');
  redis.disconnect();
}

interface Harness {
  gw: RunningGateway;
  lines: string[];
  admin(method: string, path: string, body?: unknown, token?: string | null): Promise<Reply>;
  self(method: string, path: string, body?: unknown): Promise<Reply>;
}

async function harness(extra: Partial<ConfigInput> = {}): Promise<Harness> {
  const lines: string[] = [];
  const logger = createLogger({
    level: 'debug',
    format: 'json',
    destination: { write: (line: string) => void lines.push(line) },
  });
  const gw = await startGateway(
    {
      admin: { host: '127.0.0.1', port: 0, tokens: [TOKEN] },
      auth: { jwt: [{ issuer: ISSUER, secret: JWT_SECRET }] },
      plans: { free: {} },
      selfService: { path: '/v1/keys' },
      routes: [{ id: 'private', path: '/private', auth: { methods: ['apiKey'] }, mock: { body: { ok: 1 } } }],
      ...extra,
    },
    { logger },
  );
  cleanup.push(() => gw.close());
  const jwt = await new SignJWT({})
    .setProtectedHeader({ alg: 'HS256' })
    .setIssuer(ISSUER)
    .setSubject('user-1')
    .setIssuedAt()
    .setExpirationTime('5m')
    .sign(createSecretKey(Buffer.from(JWT_SECRET, 'utf8')));
  const send = (url: string, method: string, auth: string | undefined, body: unknown) =>
    request(url, {
      method,
      headers: {
        ...(auth === undefined ? {} : { authorization: auth }),
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
  return {
    gw,
    lines,
    admin: (method, path, body, token = TOKEN) =>
      send(`${gw.adminUrl}${path}`, method, token === null ? undefined : `Bearer ${token}`, body),
    self: (method, path, body) => send(`${gw.url}${path}`, method, `Bearer ${jwt}`, body),
  };
}

const stores: Array<[string, () => Partial<ConfigInput>]> = [
  ['memory', () => ({})],
  [
    'redis',
    () => {
      const keyPrefix = uniquePrefix('admin-hardening');
      cleanup.push(() => deletePrefix(keyPrefix));
      return { redis: { url: sharedRedisUrl, keyPrefix, commandTimeoutMs: 1000 } };
    },
  ],
];

/** `{"a":{"a":…1…}}`, `levels` objects deep, as JSON text (a body parser builds it, not us). */
const nested = (levels: number) => '{"a":'.repeat(levels) + '1' + '}'.repeat(levels);
const errorsOf = (res: Reply) => expectProblem(res, 'validation-failed').errors as Array<{ pointer: string }>;
const redisErrors = async (gw: RunningGateway) => {
  const text = (await request(`${gw.adminUrl}/metrics`)).text;
  const line = text.split('\n').find((l) => l.startsWith('tollgate_redis_errors'));
  return line === undefined ? 0 : Number(line.split(' ').pop());
};

describe.each(stores)('key meta is bounded (13.17), %s store', (_name, store) => {
  it('refuses deeply nested meta with 400 and a pointer — at create, self-service create and patch — and the key list keeps working', async () => {
    const h = await harness(store());
    const before = await redisErrors(h.gw);
    // ~1,900 levels (11 KB) used to make every list including the key a 500; deeper, the create.
    for (const levels of [1900, 10_000]) {
      const body = `{"name":"deep","meta":${nested(levels)}}`;
      const admin = await h.admin('POST', '/keys', body);
      expect(errorsOf(admin)[0]!.pointer).toMatch(/^\/meta(\/a)+$/);
      const self = await h.self('POST', '/v1/keys', body);
      expect(errorsOf(self)[0]!.pointer).toMatch(/^\/meta(\/a)+$/);
    }
    expect(await redisErrors(h.gw)).toBe(before); // a refusal, not a Redis failure

    // Within the bounds: accepted, listed, read.
    const fine = await h.self('POST', '/v1/keys', {
      name: 'fine',
      meta: JSON.parse(nested(META_LIMITS.depth - 1)),
    });
    expect(fine.status).toBe(201);
    const id = fine.json().id as string;
    const patched = await h.admin('PATCH', `/keys/${id}`, `{"meta":${nested(META_LIMITS.depth + 1)}}`);
    expect(errorsOf(patched)[0]!.pointer).toMatch(/^\/meta\//);
    expect((await h.admin('GET', '/keys')).status).toBe(200);
    expect((await h.admin('GET', `/keys/${id}`)).status).toBe(200);
    expect((await h.self('GET', '/v1/keys')).status).toBe(200);
  });

  it('refuses meta over the size and key-count bounds, and a nested __proto__ key', async () => {
    const h = await harness(store());
    const big = await h.admin('POST', '/keys', {
      name: 'big',
      meta: { blob: 'x'.repeat(META_LIMITS.bytes) },
    });
    expect(errorsOf(big)).toEqual([expect.objectContaining({ pointer: '/meta' })]);
    const many = await h.self('POST', '/v1/keys', {
      name: 'many',
      meta: { a: Object.fromEntries(Array.from({ length: META_LIMITS.keys }, (_, i) => [`k${i}`, i])) },
    });
    expect(errorsOf(many)).toEqual([expect.objectContaining({ pointer: '/meta' })]);
    const proto = await h.admin('POST', '/keys', '{"name":"p","meta":{"a":{"__proto__":{"x":1}}}}');
    expect(errorsOf(proto)).toEqual([expect.objectContaining({ pointer: '/meta/a/__proto__' })]);
  });
});

describe('a malformed % in an admin path parameter (13.smaller)', () => {
  it('is 400 validation-failed (after authentication), never a 500', async () => {
    const h = await harness();
    const calls: Array<[string, string]> = [
      ['GET', '/keys/%E0%A4%A'],
      ['PATCH', '/keys/%E0%A4%A'],
      ['DELETE', '/keys/%E0%A4%A'],
      ['POST', '/keys/%ZZ/rotate'],
      ['GET', '/requests/%E0%A4%A'],
    ];
    for (const [method, path] of calls) {
      const res = await h.admin(method, path, method === 'PATCH' || method === 'POST' ? {} : undefined);
      expect(errorsOf(res), `${method} ${path}`).toEqual([{ pointer: '/path', message: expect.any(String) }]);
      // Without a token the answer is still the token's: nothing about the path leaks first.
      expect((await h.admin(method, path, undefined, null)).status).toBe(401);
    }
    expect(h.lines.filter((l) => JSON.parse(l).level === 'error')).toEqual([]);
  });
});

describe('plan names are own properties (13.smaller)', () => {
  it('POST and PATCH /keys refuse __proto__, constructor and toString as plans (400 /plan)', async () => {
    const h = await harness();
    const made = await h.admin('POST', '/keys', { name: 'k', plan: 'free' });
    expect(made.status).toBe(201);
    for (const plan of ['__proto__', 'constructor', 'toString', 'hasOwnProperty']) {
      expect(errorsOf(await h.admin('POST', '/keys', { name: 'k', plan })), plan).toEqual([
        expect.objectContaining({ pointer: '/plan' }),
      ]);
      expect(errorsOf(await h.admin('PATCH', `/keys/${made.json().id}`, { plan })), plan).toEqual([
        expect.objectContaining({ pointer: '/plan' }),
      ]);
    }
  });

  it('a stored key whose plan is "constructor" is 403 forbidden and verifies as FORBIDDEN, not a 500', async () => {
    const h = await harness();
    // As a key made before this check, or by another tool, would be.
    const created = await h.gw.gateway.services.keys.create({ name: 'old', plan: 'constructor' });
    const res = await request(`${h.gw.url}/private`, { headers: { 'x-api-key': created.key } });
    expectProblem(res, 'forbidden');
    const verified = await h.admin('POST', '/keys/verify', { key: created.key });
    expect(verified.json()).toMatchObject({ valid: false, code: 'FORBIDDEN' });
  });

  it('tollgate keys create refuses --plan constructor', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-admin-hardening-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'gw.yaml');
    writeFileSync(file, `redis: { url: "${sharedRedisUrl}" }\nplans: { free: {} }\nroutes: []\n`);
    const err: string[] = [];
    const code = await runCli(['keys', 'create', '--config', file, '--name', 'n', '--plan', 'constructor'], {
      out: () => undefined,
      err: (l) => err.push(l),
      env: {},
    });
    expect(code).toBe(1);
    expect(err.join('\n')).toContain('plan "constructor" is not in the config');
  });
});

describe('malformed console paths (13.24)', () => {
  it('are 400 or 404 problems without a token, logged at most at debug, and never serve a file outside console/', async () => {
    const h = await harness();
    for (const path of ['/console/..%2f..%2fpackage.json', '/console/%00', '/console/%E0%A4%A'])
      expectProblem(await request(`${h.gw.adminUrl}${path}`), 'bad-request');
    expectProblem(await request(`${h.gw.adminUrl}/console/no-such-file.js`), 'not-found');
    // Sent raw (an HTTP client would normalise these): still none of the package's files.
    const port = Number(new URL(h.gw.adminUrl).port);
    for (const target of [
      '/console/../package.json',
      '/console/%2e%2e/package.json',
      '/console/..%5cpackage.json',
    ]) {
      const { response } = await rawExchange(
        port,
        `GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
      );
      const raw = parseRaw(response);
      expect(raw.status, target).not.toBe(200);
      expect(raw.body, target).not.toContain('"devDependencies"');
    }
    const levels = h.lines.map((l) => JSON.parse(l).level as string);
    expect(levels.filter((l) => l === 'error' || l === 'warn' || l === 'fatal')).toEqual([]);
    expect(h.lines.some((l) => l.includes('console path refused'))).toBe(true); // at debug
  });
});

describe('GET /console/status (14.5)', () => {
  it('says, without a token, whether the admin API is on and where problems link — and nothing else', async () => {
    const on = await harness();
    const res = await request(`${on.gw.adminUrl}/console/status`);
    expect(res.status).toBe(200);
    expect(res.headers['cache-control']).toBe('no-store');
    expect(res.json()).toEqual({ adminApi: 'on', problemDocs: 'problems#' });

    const off = await harness({ admin: { host: '127.0.0.1', port: 0, tokens: [] } });
    expect((await request(`${off.gw.adminUrl}/console/status`)).json()).toEqual({
      adminApi: 'off',
      problemDocs: 'problems#',
    });
  });

  it('links problems to problems.typeBase only when it can be a real page, else to the catalog it serves', async () => {
    const cases: Array<[string, string]> = [
      ['https://tollgate.dev/problems/', 'problems#'],
      ['https://errors.example.com/problems/', 'problems#'],
      ['https://docs.internal.test/p/', 'problems#'],
      ['urn:problem:', 'problems#'],
      ['https://docs.acme.io/problems/', 'https://docs.acme.io/problems/'],
    ];
    for (const [typeBase, docs] of cases) {
      const h = await harness({ problems: { typeBase } });
      expect((await request(`${h.gw.adminUrl}/console/status`)).json().problemDocs, typeBase).toBe(docs);
    }
    const h = await harness();
    const page = await request(`${h.gw.adminUrl}/console/problems`);
    expect(page.status).toBe(200);
    expect(page.headers['content-type']).toMatch(/^text\/html/);
    for (const slug of Object.keys(catalog)) expect(page.text).toContain(`id="${slug}"`);
  });
});
