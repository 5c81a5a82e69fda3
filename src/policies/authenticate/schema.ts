import { createPublicKey } from 'node:crypto';
import { z } from 'zod';
import { nonNegativeInt, positiveInt, type Accepts } from '../../config/primitives.js';
import { hmacSchema, routeHmacSchema, type HmacOptions } from '../signature/schema.js';
import { HEADER_NAME, protectedReason } from '../headers/schema.js';

const HS = ['HS256', 'HS384', 'HS512'] as const;
const ASYM = [
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
  'ES256',
  'ES384',
  'ES512',
  'EdDSA',
] as const;
export const jwtAlgorithm = z.enum([...HS, ...ASYM], {
  error: 'must be an allowed JWS algorithm (never "none")',
});

export const jwtIssuerSchema = z
  .strictObject({
    issuer: z.string().min(1).describe('Expected `iss`.'),
    audience: z
      .union([z.string().min(1), z.array(z.string().min(1)).min(1)])
      .optional()
      .describe('Expected `aud` (one of them).'),
    jwksUri: z
      .url({ protocol: /^https?$/ })
      .optional()
      .describe('Remote JWKS, cached and refetched on an unknown `kid`.'),
    secret: z
      .string()
      .min(32, 'must be at least 32 characters (RFC 7518 §3.2)')
      .optional()
      .describe('Shared secret for HS256/384/512.'),
    publicKey: z
      .string()
      .includes('-----BEGIN', { error: 'must be a PEM public key' })
      .refine(isPublicKey, { error: 'is not a PEM public key Node can read' })
      .optional()
      .describe('PEM public key.'),
    algorithms: z
      .array(jwtAlgorithm)
      .min(1)
      .optional()
      .describe('Allow-list; defaults to HS256 with `secret` and RS256 otherwise.'),
    clockToleranceSec: nonNegativeInt(300).default(30).describe('Leeway for `exp` and `nbf`.'),
    tenantClaim: z.string().min(1).optional().describe('Claim that carries the tenant id.'),
    subjectClaim: z
      .string()
      .min(1)
      .default('sub')
      .describe(
        'Claim that names the principal (`X-Consumer-Id`, `by: subject`, the credential id, self-service ownership), e.g. `client_id` or `azp` for an issuer whose machine tokens carry no `sub`. A token without it is refused: tokens that name nobody would all be one caller. Every token of the issuer is read the same way, so only name a claim that tells callers apart.',
      ),
    jwksCooldownSec: positiveInt()
      .default(30)
      .describe(
        'At most one JWKS refetch per this many seconds (a flood of unknown `kid`s cannot hammer the IdP).',
      ),
    jwksMaxStaleSec: positiveInt()
      .default(3600)
      .describe('While the JWKS endpoint is down, the last good keys keep working this long.'),
    jwksTimeoutMs: positiveInt().default(3000).describe('Timeout of one JWKS fetch.'),
    claimHeaders: z
      .record(z.string(), z.string().min(1, 'must be a claim name'))
      .default({})
      .superRefine((map, ctx) => {
        for (const name of Object.keys(map)) {
          if (!HEADER_NAME.test(name))
            ctx.addIssue({
              code: 'custom',
              path: [name],
              message: 'must be a header name (a token, no spaces)',
            });
          else if (protectedReason(name, 'request') !== undefined)
            ctx.addIssue({
              code: 'custom',
              path: [name],
              message: "is the gateway's own header: a claim cannot be sent in it",
            });
        }
      })
      .describe(
        "Claims sent upstream, `{X-Header-Name: claim}`, on this issuer's JWT requests (strings as is, arrays space-separated, others as JSON; non-ASCII percent-encoded as the identity headers). A client's copies of these headers are removed first, on every route, in every spelling.",
      ),
  })
  .superRefine((iss, ctx) => {
    const sources = [iss.jwksUri, iss.secret, iss.publicKey].filter((s) => s !== undefined).length;
    if (sources !== 1)
      ctx.addIssue({
        code: 'custom',
        path: [],
        message: 'needs exactly one of jwksUri, secret or publicKey',
      });
    const algs = iss.algorithms ?? [];
    if (iss.secret !== undefined && algs.some((a) => !a.startsWith('HS')))
      ctx.addIssue({
        code: 'custom',
        path: ['algorithms'],
        message: 'only HS256/HS384/HS512 go with `secret`',
      });
    if (iss.secret === undefined && algs.some((a) => a.startsWith('HS')))
      ctx.addIssue({
        code: 'custom',
        path: ['algorithms'],
        message: 'HS algorithms need `secret` (an HS token must never be checked against a public key)',
      });
  })
  .transform((iss) => ({
    ...iss,
    algorithms: iss.algorithms ?? (iss.secret !== undefined ? ['HS256' as const] : ['RS256' as const]),
  }))
  .describe('A trusted JWT issuer.');

/** `auth.apiKeys`: where keys are read and what they look like. */
export const apiKeysSchema = z
  .strictObject({
    header: z
      .string()
      .regex(/^[A-Za-z0-9-]+$/, 'must be a header name')
      .transform((h) => h.toLowerCase())
      .default('x-api-key')
      .describe('Header carrying an API key (a key is also accepted as `Authorization: Bearer <key>`).'),
    prefix: z
      .string()
      .regex(/^[a-z][a-z0-9]{1,15}$/, 'must be 2-16 lower-case letters or digits, starting with a letter')
      .default('tg')
      .describe('Key prefix: keys look like `<prefix>_live_<base62>`.'),
    cacheTtlMs: nonNegativeInt()
      .default(5000)
      .describe('In-process cache of key records (revocations also invalidate it through Redis pub/sub).'),
  })
  .prefault({});

export const authSchema = z
  .strictObject({
    jwt: z.array(jwtIssuerSchema).default([]).describe('Trusted JWT issuers.'),
    apiKeys: apiKeysSchema,
    hmac: hmacSchema,
  })
  .prefault({})
  .describe('Credentials the gateway accepts.');

export const routeAuthSchema = z
  .union([
    z.literal('none'),
    z.strictObject({
      methods: z
        .array(z.enum(['jwt', 'apiKey']))
        .min(1)
        .default(['jwt', 'apiKey'])
        .describe('Accepted credential kinds.'),
      scopes: z.array(z.string().min(1)).default([]).describe('Every listed scope is required.'),
      hmac: routeHmacSchema,
      claims: z
        .record(
          z.string().min(1, 'must be a claim name'),
          z.array(z.string()).min(1, 'must list at least one allowed value'),
        )
        .optional()
        .describe(
          'Required JWT claims: each claim (a string, or an array of strings) must hold one of its listed values, else 403 forbidden with `required_claim`. API keys carry no claims: they are refused on such a route.',
        ),
    }),
  ])
  .describe('`none` (public) or the credential the route requires.');

export type AuthConfig = z.output<typeof authSchema>;
export type JwtIssuerConfig = z.output<typeof jwtIssuerSchema>;
export type RouteAuthConfig = z.output<typeof routeAuthSchema>;

function isPublicKey(pem: string): boolean {
  try {
    createPublicKey(pem);
    return true;
  } catch {
    return false;
  }
}

/*
 * The same settings as a library user writes them: plain interfaces (the .d.ts shows these, not
 * zod generics), checked against the schemas' input types below, and parsed by the schemas.
 */
export type JwtAlgorithm = z.output<typeof jwtAlgorithm>;

/** One trusted JWT issuer (`auth.jwt[]`). */
export interface JwtIssuerOptions {
  issuer: string;
  audience?: string | string[];
  /** Exactly one of `jwksUri`, `secret` (HS*) or `publicKey` (PEM). */
  jwksUri?: string;
  secret?: string;
  publicKey?: string;
  algorithms?: JwtAlgorithm[];
  clockToleranceSec?: number;
  tenantClaim?: string;
  /** The claim naming the principal (default `sub`). */
  subjectClaim?: string;
  jwksCooldownSec?: number;
  jwksMaxStaleSec?: number;
  jwksTimeoutMs?: number;
  /** Claims sent upstream: `{X-Header-Name: claim}`. */
  claimHeaders?: Record<string, string>;
}

/** `auth.apiKeys`. */
export interface ApiKeysOptions {
  /** Default `x-api-key`. */
  header?: string;
  /** Default `tg`: keys look like `tg_live_…`. */
  prefix?: string;
  cacheTtlMs?: number;
}

/** The `auth` block: issuers, API keys, HMAC. */
export interface AuthOptions {
  jwt?: JwtIssuerOptions[];
  apiKeys?: ApiKeysOptions;
  hmac?: HmacOptions;
}

/** A route's `auth` (other than `none`). */
export interface RouteAuthOptions {
  /** Default both. */
  methods?: Array<'jwt' | 'apiKey'>;
  /** Every listed scope is required. */
  scopes?: string[];
  hmac?: 'off' | 'optional' | 'required';
  /** Required JWT claims: `{claim: [allowed values…]}` (SPEC §9). */
  claims?: Record<string, string[]>;
}

type _AuthOptions = Accepts<z.input<typeof authSchema>, AuthOptions>;
type _RouteAuthOptions = Accepts<z.input<typeof routeAuthSchema>, RouteAuthOptions>;
