import { z } from 'zod';
import { HOP_BY_HOP } from '../../shared/http.js';
import { type Accepts } from '../../config/primitives.js';
import { IDENTITY_HEADERS, METHOD_OVERRIDE_HEADERS, UNTRUSTED_PEER_HEADERS } from '../proxy/headers.js';

/** RFC 9110 §5.6.2 `token`: a header name. */
export const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** Visible ASCII, space and tab (RFC 9110 §5.5): no CR/LF can be smuggled into a header. */
export const HEADER_VALUE = /^[\t\x20-\x7e]*$/;

const NAME_MESSAGE = "must be a header name (letters, digits and !#$%&'*+.^_`|~-, no spaces)";
const VALUE_MESSAGE = 'must be visible ASCII, spaces and tabs (no CR, LF or other control characters)';

/**
 * Request headers the gateway sends upstream itself, or refuses to let a client claim: the
 * correlation and forwarding headers, the identity headers (SPEC §5, §9), framing and hop-by-hop
 * headers, method overrides (they would run a method the route does not allow) and the
 * address claims only a proxy makes. A transform can neither set nor remove them.
 */
export const PROTECTED_REQUEST_HEADERS: ReadonlySet<string> = new Set([
  ...HOP_BY_HOP,
  ...IDENTITY_HEADERS,
  ...METHOD_OVERRIDE_HEADERS,
  ...UNTRUSTED_PEER_HEADERS,
  'host',
  'via',
  'x-request-id',
  'traceparent',
  'x-forwarded-for',
  'x-forwarded-proto',
  'x-forwarded-host',
  'content-length',
  'expect',
]);

/**
 * Response headers that are the gateway's answer: correlation, `Via`, the rate-limit headers,
 * framing and hop-by-hop headers, `Content-Type` (a problem is always `application/problem+json`),
 * idempotency's replay marker and CORS (the `cors` policy owns `Access-Control-*`).
 */
export const PROTECTED_RESPONSE_HEADERS: ReadonlySet<string> = new Set([
  ...HOP_BY_HOP,
  'x-request-id',
  'via',
  'ratelimit',
  'ratelimit-policy',
  'retry-after',
  'content-type',
  'content-length',
  'idempotent-replayed',
]);

/** Why the gateway keeps a name (for the validation message), or undefined when it is free. */
export function protectedReason(name: string, side: 'request' | 'response'): string | undefined {
  // CGI, WSGI and Rack read `X_Tenant_Id` as `X-Tenant-Id`: protected names in every spelling.
  const lower = name.toLowerCase().replaceAll('_', '-');
  if (side === 'response' && lower.startsWith('access-control-'))
    return 'is a CORS header: configure `cors` instead';
  const set = side === 'request' ? PROTECTED_REQUEST_HEADERS : PROTECTED_RESPONSE_HEADERS;
  return set.has(lower) ? "is the gateway's own header: it cannot be set or removed" : undefined;
}

const sideSchema = (side: 'request' | 'response') =>
  z
    .strictObject({
      set: z
        .record(z.string(), z.string().regex(HEADER_VALUE, VALUE_MESSAGE))
        .default({})
        .describe(
          side === 'request'
            ? 'Headers sent upstream with these values (a client copy, in any spelling, is replaced).'
            : "Headers answered with these values (the upstream's copy is replaced).",
        ),
      remove: z
        .array(z.string())
        .default([])
        .describe(
          side === 'request'
            ? 'Client headers never sent upstream (in any spelling, `_` for `-` included).'
            : 'Upstream response headers never passed to the client.',
        ),
    })
    .superRefine((t, ctx) => {
      const seen = new Map<string, string>();
      const check = (name: string, path: PropertyKey[], verb: string) => {
        if (!HEADER_NAME.test(name)) {
          ctx.addIssue({ code: 'custom', path, message: NAME_MESSAGE });
          return;
        }
        const reason = protectedReason(name, side);
        if (reason !== undefined) {
          ctx.addIssue({ code: 'custom', path, message: reason });
          return;
        }
        const key = name.toLowerCase().replaceAll('_', '-');
        const prior = seen.get(key);
        if (prior !== undefined)
          ctx.addIssue({
            code: 'custom',
            path,
            message: `is the same header as ${prior} (names ignore case, and _ is -)`,
          });
        else seen.set(key, `${verb} "${name}"`);
      };
      for (const name of Object.keys(t.set)) check(name, ['set', name], 'set');
      t.remove.forEach((name, i) => check(name, ['remove', i], 'remove'));
    })
    .optional();

export const headersSchema = z
  .strictObject({
    request: sideSchema('request').describe('What the upstream request carries.'),
    response: sideSchema('response').describe(
      "What the route's answer carries (the upstream's or a mock's; not the gateway's own problems).",
    ),
  })
  .describe(
    "Header transforms of the route, compiled at load. The gateway's own headers (X-Request-Id, identity and claim headers, Via, RateLimit, framing) cannot be set or removed.",
  );

export type HeadersConfig = z.output<typeof headersSchema>;

/** One side of a transform, as a library user writes it. */
export interface HeaderTransformOptions {
  set?: Record<string, string>;
  remove?: string[];
}

/** `headers` of a route. */
export interface HeadersOptions {
  request?: HeaderTransformOptions;
  response?: HeaderTransformOptions;
}

type _HeadersOptions = Accepts<z.input<typeof headersSchema>, HeadersOptions>;
