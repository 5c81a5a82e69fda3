import { z } from 'zod';
import { HTTP_METHODS } from '../shared/http.js';

/*
 * Reusable schema pieces with the messages an operator should read in `tollgate validate`.
 *
 * Numbers and booleans also accept their string spelling ("8080", "true"): a value that comes
 * from `${VAR}` inside quotes (or a JSON file) is a string, and the schema — which knows the
 * field's type — is the place to read it, as Docker Compose does.
 */
const fromString = (value: unknown): unknown => {
  if (typeof value !== 'string') return value;
  const t = value.trim();
  if (/^-?\d+$/.test(t)) return Number(t);
  if (t === 'true') return true;
  if (t === 'false') return false;
  return value;
};

const int = (message: string, min: number, max = Number.MAX_SAFE_INTEGER) =>
  z.preprocess(fromString, z.int({ error: message }).min(min, message).max(max, message));

export const positiveInt = (max?: number) =>
  int(max === undefined ? 'must be a positive integer' : `must be an integer from 1 to ${max}`, 1, max);
export const nonNegativeInt = (max?: number) =>
  int(max === undefined ? 'must be a non-negative integer' : `must be an integer from 0 to ${max}`, 0, max);
export const port = () => int('must be a port number (0-65535)', 0, 65535);
export const bool = () => z.preprocess(fromString, z.boolean({ error: 'must be true or false' }));

export const httpMethod = z
  .string()
  .transform((m) => m.toUpperCase())
  .pipe(z.enum(HTTP_METHODS, { error: `must be one of ${HTTP_METHODS.join(', ')}` }));

/**
 * A path a route or endpoint is mounted at: `/`, or `/seg/seg` without empty, dot or trailing
 * segments. No `;`: routing ignores `;params`, so a path holding one could never match.
 */
export const mountPath = () =>
  z
    .string()
    .refine(
      (p) =>
        p === '/' ||
        (/^(\/[A-Za-z0-9._~!$&'()*+,=:@-]+)+$/.test(p) && !p.split('/').some((s) => s === '.' || s === '..')),
      'must be "/" or "/segment[/segment…]" without a trailing slash, dot segments, ";" or encoded characters',
    );

export const isoDateTime = () => z.iso.datetime({ offset: true, error: 'must be an ISO 8601 date-time' });

/**
 * Compile-time check that a plain options interface (`U`, what the .d.ts shows a library user)
 * is accepted by a schema's input (`T`): `type _Check = Accepts<z.input<typeof s>, Options>`.
 */
export type Accepts<T, U extends T> = U;

/**
 * An outbound http(s) URL the gateway calls (a webhook receiver, a collector): absolute, http or
 * https, no `user:password@` (URLs are logged and listed; `credentialsHint` says where they go
 * instead), no `#fragment`, and with `query: false` no `?query` either (`baseHint` says why).
 */
export const outboundUrl = (o: { credentialsHint: string; query?: false; baseHint?: string }) =>
  z.string().superRefine((value, ctx) => {
    let url: URL;
    try {
      url = new URL(value);
    } catch {
      ctx.addIssue({ code: 'custom', message: 'must be an absolute http:// or https:// URL' });
      return;
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:')
      ctx.addIssue({ code: 'custom', message: `must be http:// or https:// (not ${url.protocol})` });
    else if (url.username !== '' || url.password !== '')
      ctx.addIssue({
        code: 'custom',
        message: `must not carry credentials (user:password@); ${o.credentialsHint}`,
      });
    else if (o.query === false && (url.search !== '' || url.hash !== ''))
      ctx.addIssue({
        code: 'custom',
        message: `must be a base URL without ?query or #fragment (${o.baseHint})`,
      });
    else if (url.hash !== '') ctx.addIssue({ code: 'custom', message: 'must not have a #fragment' });
  });
