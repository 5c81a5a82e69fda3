import type { ServerResponse } from 'node:http';
import { brotliDecompressSync, gunzipSync, inflateSync } from 'node:zlib';
import { instanceOf, type ProblemWriter } from './problem-details.js';
import { reasonPhrase } from '../shared/http.js';
import { contextOf } from '../core/context.js';

/** Error bodies larger than this are not parsed (the problem gets a generic detail). */
const MAX_ERROR_BODY = 256 * 1024;
const MAX_DETAIL = 1000;
/** Upstream headers that still mean something on the rewritten problem. */
const KEPT_HEADERS = [
  'retry-after',
  'www-authenticate',
  'allow',
  'content-language',
  'ratelimit',
  'ratelimit-policy',
];

export interface FieldError {
  pointer: string;
  message: string;
  /** The upstream's own kind of this error, when it gives one (FastAPI's `type`). */
  type?: string;
}

/** The `detail` of every rewritten 5xx: its own text can hold stack traces or internal names. */
const GENERIC_5XX_DETAIL = 'The upstream service failed to handle the request.';
/** The members an upstream 5xx problem keeps (SPEC §3); the rest are where stack traces live. */
const KEPT_5XX_MEMBERS = new Set(['type', 'title', 'status']);
/** A scheme: a `type` that starts with one is a URI (a problem type), not an error code. */
const URI_SCHEME = /^[A-Za-z][A-Za-z0-9+.-]*:/;
const MAX_CODE = 200;
const MAX_DROPPED_NAMES = 20;

/**
 * The problem document for an upstream error response (SPEC §3, `upstreamErrors: rewrite`):
 * an upstream 4xx problem keeps its members and gains `instance`/`request_id`; an upstream 5xx
 * problem keeps only `type`, `title` and `status` (the names of the members it loses are pushed
 * to `dropped`, for the log); anything else becomes `about:blank` with the reason phrase, and for
 * 4xx the upstream's own message, field errors and error code. A 5xx never passes its text on:
 * it can hold stack traces or internal names.
 */
export function upstreamProblem(
  status: number,
  contentType: string,
  body: Buffer | undefined,
  requestId: string,
  dropped?: string[],
  instance: (requestId: string) => string = instanceOf,
): Record<string, unknown> {
  const parsed = body && body.length > 0 && /json/i.test(contentType) ? parseJson(body) : undefined;
  if (/^application\/problem\+json/i.test(contentType) && isObject(parsed)) {
    if (status >= 500) {
      if (dropped !== undefined)
        for (const k of Object.keys(parsed))
          // Bounded: the names come from the upstream, and a log line is no place for 10 000 of them.
          if (!KEPT_5XX_MEMBERS.has(k) && dropped.length < MAX_DROPPED_NAMES) dropped.push(clip(k, 64));
      return {
        type: typeof parsed.type === 'string' ? clip(parsed.type) : 'about:blank',
        title: typeof parsed.title === 'string' ? clip(parsed.title) : reasonPhrase(status),
        status,
        detail: GENERIC_5XX_DETAIL,
        instance: instance(requestId),
        request_id: requestId,
      };
    }
    const doc: Record<string, unknown> = { ...parsed };
    if (doc.instance === undefined) doc.instance = instance(requestId);
    if (doc.request_id === undefined) doc.request_id = requestId;
    return doc;
  }
  const doc: Record<string, unknown> = {
    type: 'about:blank',
    title: reasonPhrase(status),
    status,
    detail:
      status >= 500 ? GENERIC_5XX_DETAIL : `The upstream service answered ${status} ${reasonPhrase(status)}.`,
    instance: instance(requestId),
    request_id: requestId,
  };
  if (status < 500 && isObject(parsed)) {
    const message = messageOf(parsed);
    if (message !== undefined) doc.detail = clip(message);
    const errors = fieldErrors(
      Array.isArray(parsed.errors) ? parsed.errors : Array.isArray(parsed.detail) ? parsed.detail : undefined,
    );
    if (errors !== undefined) doc.errors = errors;
    const code = codeOf(parsed);
    if (code !== undefined) doc.code = code;
  }
  return doc;
}

/** Upstream headers (lower-cased names) as the error rewriter needs them. */
export type UpstreamHeaders = Readonly<Record<string, string | undefined>>;

/**
 * Answers an upstream error response as a problem (SPEC §3), given its status, headers and the
 * body as received (up to `MAX_ERROR_BODY`; `undefined` when it was larger or broken). Returns
 * the names of the members of an upstream 5xx problem that were dropped (for the log; their
 * values are never logged).
 */
export function writeUpstreamProblem(
  res: ServerResponse,
  writer: ProblemWriter,
  requestId: string,
  status: number,
  headers: UpstreamHeaders,
  body: Buffer | undefined,
): string[] {
  const kept: Record<string, string> = {};
  const ctx = contextOf(res.req);
  for (const name of KEPT_HEADERS) {
    const value = headers[name];
    if (value === undefined) continue;
    // The gateway's own RateLimit headers (collected on the context, or on res) are the answer's.
    if (name.startsWith('ratelimit') && (ctx?.responseHeader(name) !== undefined || res.hasHeader(name)))
      continue;
    kept[name] = value;
  }
  const decodedBody = body === undefined ? undefined : decode(body, headers['content-encoding']);
  const dropped: string[] = [];
  writer.send(
    res,
    status,
    upstreamProblem(
      status,
      headers['content-type'] ?? '',
      decodedBody,
      requestId,
      dropped,
      writer.instanceOf,
    ),
    requestId,
    kept,
  );
  return dropped;
}

/**
 * The answer `writeUpstreamProblem` would write, as data: for an upstream error whose client has
 * left (an idempotency record keeps it for the retry).
 */
export function renderUpstreamProblem(
  writer: ProblemWriter,
  requestId: string,
  status: number,
  headers: UpstreamHeaders,
  body: Buffer | undefined,
  dropped?: string[],
): { status: number; headers: string[]; body: Buffer } {
  const kept: Record<string, string> = {};
  for (const name of KEPT_HEADERS) {
    const value = headers[name];
    if (value !== undefined) kept[name] = value;
  }
  const decodedBody = body === undefined ? undefined : decode(body, headers['content-encoding']);
  return writer.render(
    status,
    upstreamProblem(
      status,
      headers['content-type'] ?? '',
      decodedBody,
      requestId,
      dropped,
      writer.instanceOf,
    ),
    kept,
  );
}

/** The largest error body read for rewriting; a larger one gets a generic detail. */
export const MAX_UPSTREAM_ERROR_BODY = MAX_ERROR_BODY;

function decode(body: Buffer, encoding: string | undefined): Buffer | undefined {
  const e = (encoding ?? '').trim().toLowerCase();
  const options = { maxOutputLength: MAX_ERROR_BODY };
  try {
    if (e === 'gzip' || e === 'x-gzip') return gunzipSync(body, options);
    if (e === 'deflate') return inflateSync(body, options);
    if (e === 'br') return brotliDecompressSync(body, options);
    return body;
  } catch {
    return undefined; // corrupt or too large once decoded: the problem gets a generic detail
  }
}

function parseJson(body: Buffer): unknown {
  try {
    return JSON.parse(body.toString('utf8'));
  } catch {
    return undefined;
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function messageOf(body: Record<string, unknown>): string | undefined {
  for (const field of ['detail', 'message', 'error_description', 'error']) {
    const v = body[field];
    if (typeof v === 'string' && v.trim() !== '') return v;
    if (isObject(v) && typeof v.message === 'string') return v.message;
  }
  return undefined;
}

function fieldErrors(list: unknown[] | undefined): FieldError[] | undefined {
  if (list === undefined || list.length === 0) return undefined;
  return list.slice(0, 100).map((item) => {
    if (typeof item === 'string') return { pointer: '', message: item };
    if (!isObject(item)) return { pointer: '', message: String(item) };
    const message = [item.message, item.msg, item.detail, item.error].find((m) => typeof m === 'string');
    const entry: FieldError = {
      pointer: pointerOf(item),
      message: typeof message === 'string' ? message : 'is invalid',
    };
    // FastAPI's `[{loc, msg, type}]`: the type (`missing`, `int_parsing`) is the machine-readable part.
    if (typeof item.type === 'string' && item.type !== '') entry.type = clip(item.type, MAX_CODE);
    return entry;
  });
}

/**
 * The upstream's machine-readable error code: `code`, `error.code` (Stripe, Google), `error_code`,
 * or a `type` that is not a URI (a problem type is, an error kind such as `invalid_request` is not).
 */
function codeOf(body: Record<string, unknown>): string | number | undefined {
  const error = body.error;
  for (const v of [body.code, isObject(error) ? error.code : undefined, body.error_code]) {
    const code = usableCode(v);
    if (code !== undefined) return code;
  }
  const type = body.type;
  return typeof type === 'string' && !isUriReference(type) ? usableCode(type) : undefined;
}

/**
 * A problem `type` is a URI reference (RFC 9457 §3.1.1), possibly relative (`/problems/x`,
 * `errors/x`); an error kind (`invalid_request_error`, `card_error`) has neither a scheme nor a
 * slash.
 */
function isUriReference(type: string): boolean {
  return URI_SCHEME.test(type) || type.includes('/');
}

function usableCode(v: unknown): string | number | undefined {
  if (typeof v === 'string') return v.trim() === '' ? undefined : clip(v, MAX_CODE);
  return Number.isSafeInteger(v) ? (v as number) : undefined;
}

function clip(text: string, max = MAX_DETAIL): string {
  return text.length > max ? text.slice(0, max) + '…' : text;
}

function pointerOf(item: Record<string, unknown>): string {
  if (typeof item.pointer === 'string') return item.pointer;
  const where = item.field ?? item.path ?? item.param ?? item.loc ?? item.property;
  const parts = Array.isArray(where) ? where : typeof where === 'string' ? where.split('.') : [];
  return parts.map((p) => '/' + String(p).replace(/~/g, '~0').replace(/\//g, '~1')).join('');
}
