import type { IncomingMessage } from 'node:http';
import { splitTarget } from '../../core/path.js';

/** What replaces a credential in an echo. */
export const REDACTED = '[redacted]';

/**
 * Request headers an echo never reflects: credentials a load-test target's body would otherwise
 * leak into test logs, reports and screenshots. The route's API key header is added to these.
 */
export const ECHO_REDACTED_HEADERS: readonly string[] = [
  'authorization',
  'proxy-authorization',
  'cookie',
  'x-api-key',
  'x-signature',
];

/** Query parameters an echo never reflects (the WebSocket credential of SPEC §9). */
export const ECHO_REDACTED_QUERY: readonly string[] = ['access_token'];

export interface EchoPlan {
  /** Lower-case header names whose values are redacted. */
  readonly headers: ReadonlySet<string>;
  /** Matches this gateway's API keys anywhere in a value (`<prefix>_live_…`), or undefined. */
  readonly keyPattern: RegExp | undefined;
}

export function echoPlan(apiKeyHeader: string | undefined, apiKeyPrefix: string | undefined): EchoPlan {
  const headers = new Set(ECHO_REDACTED_HEADERS);
  if (apiKeyHeader !== undefined) headers.add(apiKeyHeader.toLowerCase());
  const keyPattern =
    apiKeyPrefix === undefined
      ? undefined
      : new RegExp(`${apiKeyPrefix.replace(/[^A-Za-z0-9]/g, '\\$&')}_(?:live|test)_[0-9A-Za-z]+`, 'g');
  return { headers, keyPattern };
}

function scrub(plan: EchoPlan, value: string): string {
  return plan.keyPattern === undefined ? value : value.replace(plan.keyPattern, REDACTED);
}

/** A JSON object whose keys come from the request: no prototype, so `__proto__` is just a key. */
type Bag = Record<string, string | string[]>;
const bag = (): Bag => Object.create(null) as Bag;

function add(target: Bag, name: string, value: string): void {
  const prior = target[name];
  if (prior === undefined) target[name] = value;
  else if (Array.isArray(prior)) prior.push(value);
  else target[name] = [prior, value];
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * The echo of a request as a JSON document: method, path and query as sent, headers by lower-case
 * name (repeated ones as arrays), and the body — parsed when it is JSON, text when it is UTF-8,
 * else base64 (`bodyEncoding` says which). Credentials are redacted (`ECHO_REDACTED_HEADERS`,
 * `ECHO_REDACTED_QUERY`, and any of this gateway's API keys in a value or a text body).
 */
export function echoDocument(req: IncomingMessage, body: Buffer, plan: EchoPlan): Buffer {
  const { path, search } = splitTarget(req.url ?? '/');
  const query = bag();
  for (const [name, value] of new URLSearchParams(search))
    add(query, name, ECHO_REDACTED_QUERY.includes(name) ? REDACTED : scrub(plan, value));
  const headers = bag();
  const raw = req.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    add(headers, name, plan.headers.has(name) ? REDACTED : scrub(plan, raw[i + 1]!));
  }
  const doc: Record<string, unknown> = { method: req.method, path: scrub(plan, path), query, headers };
  if (body.length > 0) {
    let text: string | undefined;
    try {
      text = scrub(plan, strictUtf8.decode(body));
    } catch {
      text = undefined;
    }
    const type = String(req.headers['content-type'] ?? '').toLowerCase();
    if (text === undefined) {
      doc.body = body.toString('base64');
      doc.bodyEncoding = 'base64';
    } else if (/^application\/(?:[\w.+-]+\+)?json\b/.test(type)) {
      try {
        doc.body = JSON.parse(text) as unknown;
        doc.bodyEncoding = 'json';
      } catch {
        doc.body = text;
        doc.bodyEncoding = 'utf8';
      }
    } else {
      doc.body = text;
      doc.bodyEncoding = 'utf8';
    }
  } else doc.body = null;
  return Buffer.from(JSON.stringify(doc), 'utf8');
}
