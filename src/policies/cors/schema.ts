import { z } from 'zod';
import { bool, httpMethod, nonNegativeInt } from '../../config/primitives.js';

/** An HTTP field name (RFC 9110 §5.1 token). */
export const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/**
 * Why `origin` is not a browser origin as `Origin` carries it (`https://app.example.com`,
 * `http://localhost:3000`), or undefined when it is one. A path, a trailing slash, a missing
 * scheme, upper case or a default port would never equal what a browser sends, so the origin
 * would silently be refused: each is a validation error naming the fix.
 */
export function originProblem(origin: string): string | undefined {
  if (origin === '*') return 'must be the whole value (`origins: "*"`), not a list entry';
  if (origin === 'null')
    return 'must not be "null" (sandboxed iframes and file: pages send it; any site can make one)';
  let url: URL;
  try {
    url = new URL(origin);
  } catch {
    return 'must be an origin: scheme://host[:port], e.g. https://app.example.com';
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    return 'must be an http:// or https:// origin: scheme://host[:port], e.g. https://app.example.com';
  if (url.origin === origin) return undefined;
  if (url.username !== '' || url.password !== '') return 'must not carry a user name or password';
  if (`${url.origin}/` === origin) return `must not end with a slash (write ${url.origin})`;
  if (url.pathname !== '/' || url.search !== '' || url.hash !== '')
    return `must have no path, query or fragment (an origin is scheme://host[:port]: ${url.origin})`;
  return `must be written as a browser sends it: ${url.origin}`;
}

const originEntry = z.string().superRefine((origin, ctx) => {
  const problem = originProblem(origin);
  if (problem !== undefined) ctx.addIssue({ code: 'custom', message: problem });
});

const headerName = z
  .string()
  .regex(HEADER_NAME, "must be a header name (letters, digits and !#$%&'*+.^_`|~-)");

export const corsSchema = z
  .strictObject({
    origins: z
      .union([z.literal('*'), z.array(originEntry).min(1, 'must list at least one origin')])
      .describe(
        'Browser origins allowed to call (`https://app.example.com`: scheme, host and port, no path), or `"*"` for any.',
      ),
    methods: z
      .array(httpMethod)
      .min(1)
      .optional()
      .describe(
        "`Access-Control-Allow-Methods` of a preflight. Default: the route's `methods`, else GET, HEAD, PUT, PATCH, POST, DELETE.",
      ),
    headers: z
      .array(headerName)
      .optional()
      .describe(
        '`Access-Control-Allow-Headers` of a preflight. Default: the headers the preflight asks for (`Access-Control-Request-Headers`).',
      ),
    exposeHeaders: z
      .array(headerName)
      .default([])
      .describe(
        'Response headers a page may read, besides X-Request-Id, RateLimit, RateLimit-Policy and Retry-After (always exposed).',
      ),
    credentials: bool()
      .default(false)
      .describe(
        'Send `Access-Control-Allow-Credentials: true` (cookies, TLS client certificates); not with `"*"`.',
      ),
    maxAgeSec: nonNegativeInt(86_400)
      .default(600)
      .describe('`Access-Control-Max-Age` of a preflight: how long a browser may cache it.'),
  })
  .superRefine((cors, ctx) => {
    if (cors.origins === '*' && cors.credentials)
      ctx.addIssue({
        code: 'custom',
        path: ['credentials'],
        message:
          'cannot be true with origins "*" (browsers refuse credentials with a wildcard): list the origins',
      });
  })
  .describe(
    'CORS (SPEC §9): preflights answered by the gateway (204, before authentication; an unlisted origin: 403 forbidden), and `Access-Control-Allow-Origin` on every response to an allowed origin, the gateway’s own problems included.',
  );

/** A route's `cors`: its own settings, or `off` (no CORS on the route, whatever the top level says). */
export const routeCorsSchema = z
  .union([z.literal('off'), corsSchema])
  .describe('CORS of the route: its own settings (replacing the top-level `cors`), or `off`.');

export type CorsConfig = z.output<typeof corsSchema>;
