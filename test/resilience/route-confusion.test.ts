import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { startGateway, type RunningGateway } from '../helpers/gateway.js';
import { parseRaw, rawExchange } from '../helpers/http.js';
import { startUpstream, type RecordedRequest, type Upstream } from '../helpers/upstream.js';

/*
 * Route confusion, as a property (issue "Security hardening"): random request targets with `#`,
 * `;params`, case and escapes, against the usual layout — a protected route under a broader public
 * one on the same upstream — must never reach the protected upstream path without its credential,
 * however the upstream reads the path it gets.
 */

let appUp: Upstream;
let apiUp: Upstream;
let gw: RunningGateway;
let key: string;

beforeAll(async () => {
  appUp = await startUpstream();
  apiUp = await startUpstream();
  gw = await startGateway({
    routes: [
      { id: 'app', path: '/app', auth: 'none', upstream: { targets: [appUp.url] } },
      {
        id: 'orders',
        path: '/app/orders',
        auth: { methods: ['apiKey'] },
        upstream: { targets: [appUp.url] },
      },
      { id: 'api', path: '/api', auth: 'none', upstream: { targets: [apiUp.url], stripPrefix: '/api' } },
      {
        id: 'admin',
        path: '/api/admin',
        auth: { methods: ['apiKey'] },
        upstream: { targets: [apiUp.url], stripPrefix: '/api' },
      },
    ],
  });
  key = (await gw.gateway.services.keys.create({ name: 'k' })).key;
});
afterAll(async () => {
  await gw.close();
  await appUp.close();
  await apiUp.close();
});

function decodeOnce(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/**
 * The segments an upstream may serve for the target it received, read as leniently as any common
 * framework does: fragment and query dropped, `;params` stripped (Tomcat, Spring: before
 * decoding), escapes decoded, case ignored (Express, ASP.NET, IIS), dot segments resolved, empty
 * segments merged.
 */
function upstreamView(url: string): string[] {
  const path = url.split('#')[0]!.split('?')[0]!;
  const out: string[] = [];
  for (const raw of path.split('/')) {
    const segment = decodeOnce(raw.split(';')[0]!).toLowerCase();
    if (segment === '' || segment === '.') continue;
    if (segment === '..') out.pop();
    else out.push(segment);
  }
  return out;
}

const under = (view: string[], prefix: string[]) => prefix.every((s, i) => view[i] === s);

/** A word in a random spelling: case flipped and letters escaped at random. */
const spelled = (word: string) =>
  fc
    .array(fc.constantFrom('keep', 'upper', 'escape-lower', 'escape-upper'), {
      minLength: word.length,
      maxLength: word.length,
    })
    .map((how) =>
      [...word]
        .map((c, i) => {
          switch (how[i]) {
            case 'upper':
              return c.toUpperCase();
            case 'escape-lower':
              return `%${c.charCodeAt(0).toString(16)}`;
            case 'escape-upper':
              return `%${c.toUpperCase().charCodeAt(0).toString(16).toUpperCase()}`;
            default:
              return c;
          }
        })
        .join(''),
    );

const segment = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom('app', 'orders', 'api', 'admin', 'x').chain(spelled) },
  {
    weight: 2,
    arbitrary: fc
      .tuple(
        fc.constantFrom('app', 'orders', 'api', 'admin'),
        fc.constantFrom(';', ';jsessionid=1', ';a=b;c', ';..'),
      )
      .map(([w, p]) => w + p),
  },
  {
    weight: 3,
    arbitrary: fc.constantFrom(
      '',
      '.',
      '..',
      '..;',
      '.;x',
      ';x',
      '#',
      'orders#',
      'admin#x',
      '%23',
      '%3B',
      'orders%3Bx',
      '%2e%2e',
      '%2E.',
      '%2f',
      '%5c',
      '7',
    ),
  },
);

// Mostly the interesting prefixes (`/app/orders`, `/api/admin` in some spelling), then anything.
const withParams = (words: string[]) =>
  fc
    .tuple(fc.constantFrom(...words).chain(spelled), fc.constantFrom('', ';', ';jsessionid=1', ';a=b;c', '#'))
    .map(([w, p]) => w + p);
const target = fc
  .tuple(
    fc.oneof({ weight: 4, arbitrary: withParams(['app', 'api']) }, { weight: 1, arbitrary: segment }),
    fc.oneof({ weight: 3, arbitrary: withParams(['orders', 'admin']) }, { weight: 2, arbitrary: segment }),
    fc.array(segment, { maxLength: 4 }),
    fc.constantFrom('', '?q=1', '#f', '?q#f', '/'),
  )
  .map(([first, second, rest, tail]) => '/' + [first, second, ...rest].join('/') + tail);

describe('route confusion: random request targets never reach a protected upstream path without its credential', () => {
  it('#, ;params, case and escapes against a public route in front of a protected one (property)', async () => {
    let n = 0;
    await fc.assert(
      fc.asyncProperty(target, fc.boolean(), async (t, withKey) => {
        const id = `confusion-${n++}`;
        const { response } = await rawExchange(
          gw.port,
          `GET ${t} HTTP/1.1\r\nHost: gw.test\r\nX-Request-Id: ${id}\r\n` +
            (withKey ? `X-Api-Key: ${key}\r\n` : '') +
            'Connection: close\r\n\r\n',
        );
        const status = parseRaw(response).status;
        expect(status).toBeGreaterThan(0);
        const seen = (up: Upstream): RecordedRequest | undefined =>
          up.calls.find((c) => c.headers['x-request-id'] === id);
        const app = seen(appUp);
        const api = seen(apiUp);
        for (const [call, protectedPath] of [
          [app, ['app', 'orders']],
          [api, ['admin']],
        ] as const) {
          if (call === undefined) continue;
          // The gateway sets X-Credential-Id only for a request its protected route authenticated.
          if (under(upstreamView(call.url), [...protectedPath]))
            expect(call.headers['x-credential-id'], `${t} → ${call.url}`).toBeDefined();
        }
        if (t.includes('#')) expect(status).toBe(400);
        if (app === undefined && api === undefined) expect(status).toBeGreaterThanOrEqual(400);
      }),
      { numRuns: 300 },
    );
  });

  it('the credential does let a request through to the protected upstream path (the property is not vacuous)', async () => {
    for (const t of ['/app/ORDERS/7', '/app/orders;jsessionid=1', '/API/Admin/users', '/api/%61dmin'])
      expect(
        parseRaw(
          (
            await rawExchange(
              gw.port,
              `GET ${t} HTTP/1.1\r\nHost: gw.test\r\nX-Api-Key: ${key}\r\nConnection: close\r\n\r\n`,
            )
          ).response,
        ).status,
        t,
      ).toBe(200);
    expect(apiUp.calls.map((c) => c.url).slice(-2)).toEqual(['/Admin/users', '/admin']);
  });
});
