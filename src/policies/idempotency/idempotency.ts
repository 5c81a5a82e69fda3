import { createHash } from 'node:crypto';
import type { OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { Problem, isProblem } from '../../problems/problem.js';
import { instanceOf } from '../../problems/problem-details.js';
import { HOP_BY_HOP } from '../../shared/http.js';
import { answerHead, type RequestContext, type UpstreamSink } from '../../core/context.js';
import type { Stage } from '../../core/stage.js';
import type { IdempotencyConfig } from './schema.js';
import type { IdempotencyStore, StoredResponse } from './store.js';
import { REPLAY_PENDING, replayedRequest } from '../signature/signature.js';

/** Headers never stored for replay: per-connection, per-request, or meant for one client once. */
const NOT_STORED = new Set([
  ...HOP_BY_HOP,
  'set-cookie',
  'date',
  'content-length',
  'x-request-id',
  'ratelimit',
  'ratelimit-policy',
  'idempotent-replayed',
]);

const HEADER = 'idempotency-key';

export interface IdempotencyOptions {
  config: IdempotencyConfig;
  store: IdempotencyStore;
  /** How long a first request may hold the key (the route's upstream timeout plus a margin). */
  lockTtlMs: number;
  /** `redis.onError: open`: run without idempotency while the store is down, instead of 503. */
  failOpen: boolean;
}

function invalid(message: string): Problem {
  return new Problem('validation-failed', {
    detail: `Invalid Idempotency-Key: ${message}.`,
    extensions: { errors: [{ pointer: '/headers/idempotency-key', message }] },
  });
}

/**
 * The key of a request: a bare token or an RFC 8941 sf-string (`"abc"` is the key `abc`), 1–255
 * visible ASCII characters; undefined when absent. Throws 400 for a malformed or repeated header.
 */
export function parseIdempotencyKey(
  raw: readonly string[],
  value: string | string[] | undefined,
): string | undefined {
  let count = 0;
  for (let i = 0; i < raw.length; i += 2)
    if (raw[i]!.length === 15 && raw[i]!.toLowerCase() === HEADER) count++;
  if (count > 1) throw invalid('sent more than once');
  if (typeof value !== 'string') return undefined;
  let key = value.trim();
  if (key.startsWith('"')) {
    if (key.length < 2 || !key.endsWith('"')) throw invalid('an unterminated quoted string');
    const inner = key.slice(1, -1);
    if (/(^|[^\\])"/.test(inner)) throw invalid('an unescaped quote inside the quoted string');
    key = inner.replace(/\\(["\\])/g, '$1');
  }
  if (key.length < 1 || key.length > 255) throw invalid('must be 1 to 255 characters');
  if (!/^[\x21-\x7e]+$/.test(key)) throw invalid('must be visible ASCII characters');
  return key;
}

/**
 * Idempotency keys (Stripe's semantics and the IETF httpapi draft's header, with the status codes
 * of SPEC §3): the first request with a key runs and its response is kept for `ttlSec`; a repeat
 * with the same method, path, query and body gets that response again with
 * `Idempotent-Replayed: true`; a repeat while the first runs gets 409 `in-flight`; a repeat with a
 * different request gets 409 `payload-mismatch`. Responses of 500 or more (gateway errors
 * included), over `maxResponseBytes`, or cut short are not kept: the key is released.
 *
 * A client that leaves once its request was sent upstream does not free the key (the upstream may
 * have acted: a payment charged): the proxy reads the answer on into this stage's sink, bounded by
 * the route's upstream timeout, and it is kept for the retry (Stripe's semantics). The key is
 * released only when the request never reached the upstream or its answer cannot be kept.
 */
export function createIdempotencyStage(o: IdempotencyOptions): Stage {
  const methods = new Set<string>(o.config.methods);
  const ttlMs = o.config.ttlSec * 1000;

  const acquired = (ctx: RequestContext, storeKey: string, owner: string, fingerprint: string) => {
    const recorder = new ResponseRecorder(ctx, o.config.maxResponseBytes, o.config.storeServerErrors);
    ctx.upstreamSink = recorder;
    // The lock's TTL bounds how long a dead gateway holds the key, not how long a live response
    // may stream: while this request runs, its lock is renewed.
    const renew = setInterval(
      () => void o.store.extend(storeKey, owner, o.lockTtlMs).catch(() => undefined),
      Math.max(100, Math.floor(o.lockTtlMs / 3)),
    );
    renew.unref();
    // Runs once the answer is over: at the close of the response, or — when the client left after
    // the request was sent — once the proxy finished reading the answer into the recorder.
    ctx.onClose(() => {
      clearInterval(renew);
      const response = recorder.result();
      const keep = response !== undefined && recorder.storable(response.status);
      const done = keep
        ? o.store.complete(storeKey, owner, fingerprint, response, ttlMs)
        : o.store.release(storeKey, owner);
      done.catch(() => undefined); // the lock expires by its TTL if this fails
    });
  };

  return {
    name: 'idempotency',
    run(ctx: RequestContext) {
      const req = ctx.req;
      // A repeated signature the signature stage left to this one (SPEC §10): only a stored answer
      // to that same request (or 409 while it runs) may be given; anything else is a replay.
      const signedRepeat = ctx.signature?.result === REPLAY_PENDING;
      if (signedRepeat) ctx.signature!.result = 'replayed';
      if (!methods.has(req.method ?? '')) {
        if (signedRepeat) throw replayedRequest();
        return;
      }
      const key = parseIdempotencyKey(req.rawHeaders, req.headers[HEADER]);
      if (key === undefined && signedRepeat) throw replayedRequest();
      if (key === undefined) {
        if (o.config.required)
          throw new Problem('validation-failed', {
            detail: 'This route needs an Idempotency-Key header.',
            extensions: { errors: [{ pointer: '/headers/idempotency-key', message: 'is required' }] },
          });
        return;
      }
      const body = ctx.rawBody ?? Buffer.alloc(0);
      const fingerprint = createHash('sha256')
        .update(`${req.method}\n${req.url ?? ''}\n`)
        .update(createHash('sha256').update(body).digest('hex'))
        .digest('hex');
      // Scoped to the credential (or the client address when anonymous): customers cannot collide.
      const scope = ctx.identity?.credentialId ?? `ip:${ctx.clientIp}`;
      const keyHash = createHash('sha256').update(key).digest('hex');
      const storeKey = `idem:{${scope.replace(/[{}]/g, '_')}}:${keyHash}`;
      let begun;
      try {
        begun = o.store.begin(storeKey, fingerprint, o.lockTtlMs);
      } catch (err) {
        return storeDown(err);
      }
      const decide = (b: Awaited<typeof begun>): void => {
        if (b.state === 'acquired') {
          if (signedRepeat) {
            // No answer kept for this key: the repeat must not run. The key is freed again.
            o.store.release(storeKey, b.owner).catch(() => undefined);
            throw replayedRequest();
          }
          acquired(ctx, storeKey, b.owner, fingerprint);
          return;
        }
        if (b.fingerprint !== fingerprint)
          throw new Problem('idempotency-conflict', {
            detail: 'This Idempotency-Key was used with a different request.',
            extensions: { reason: 'payload-mismatch' },
          });
        if (b.state === 'locked')
          throw new Problem('idempotency-conflict', {
            detail: 'A request with this Idempotency-Key is still in progress.',
            extensions: { reason: 'in-flight' },
            headers: { 'retry-after': '1' },
          });
        if (signedRepeat) ctx.signature!.result = 'replayed-idempotent';
        replay(ctx, b.response);
      };
      if (begun instanceof Promise) return begun.then(decide, storeDown);
      decide(begun);
    },
  };

  function storeDown(err: unknown): void {
    if (isProblem(err)) throw err; // the store's own answer (a full memory store: 503)
    if (o.failOpen) return; // run without idempotency (redis.onError: open)
    throw new Problem('service-unavailable', {
      detail: 'Idempotency records are unavailable; try again shortly.',
      headers: { 'retry-after': '1' },
      cause: err,
    });
  }
}

function replay(ctx: RequestContext, stored: StoredResponse): void {
  const body = withThisRequestId(stored, Buffer.from(stored.body, 'base64'), ctx.requestId);
  const headers = [
    ...stored.headers,
    'idempotent-replayed',
    'true',
    'x-request-id',
    ctx.requestId,
    'content-length',
    String(body.length),
  ];
  ctx.idempotentReplay = true;
  ctx.handled = true;
  ctx.bytesOut = body.length;
  ctx.res.writeHead(stored.status, answerHead(ctx, headers));
  ctx.res.end(body);
}

/**
 * A stored problem body names the request that produced it; the replay is another request with its
 * own id, and SPEC §3 wants `request_id` (and `instance`) to match the `X-Request-Id` header.
 */
function withThisRequestId(stored: StoredResponse, body: Buffer, requestId: string): Buffer {
  let problem = false;
  for (let i = 0; i < stored.headers.length; i += 2)
    if (stored.headers[i]!.toLowerCase() === 'content-type')
      problem = stored.headers[i + 1]!.toLowerCase().startsWith('application/problem+json');
  if (!problem) return body;
  try {
    const parsed = JSON.parse(body.toString('utf8')) as Record<string, unknown>;
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return body;
    const first = parsed.request_id;
    if ('request_id' in parsed) parsed.request_id = requestId;
    // An `instance` made from the first request's id (whatever its form: library users configure
    // it) names this request's id instead.
    if (typeof parsed.instance === 'string' && typeof first === 'string' && first !== '')
      parsed.instance = parsed.instance.split(first).join(requestId);
    else if ('instance' in parsed) parsed.instance = instanceOf(requestId);
    return Buffer.from(JSON.stringify(parsed), 'utf8');
  } catch {
    return body; // not JSON after all: replayed as it was
  }
}

/**
 * Records the answer to one request (status, end-to-end headers, body up to `limit` bytes): what
 * is written to the response, by wrapping that response's own `writeHead`, `write` and `end`, and
 * — after the client left — what the proxy delivers to it as the context's upstream sink.
 */
class ResponseRecorder implements UpstreamSink {
  readonly #ctx: RequestContext;
  readonly #res: ServerResponse;
  readonly #limit: number;
  readonly #storeServerErrors: boolean;
  readonly #chunks: Buffer[] = [];
  #size = 0;
  #over = false;
  #ended = false;
  #status: number | undefined;
  #headList: unknown;

  constructor(ctx: RequestContext, limit: number, storeServerErrors: boolean) {
    const res = ctx.res;
    this.#ctx = ctx;
    this.#res = res;
    this.#limit = limit;
    this.#storeServerErrors = storeServerErrors;
    // The prototype's methods, called with this response as `this`.
    type Fn = (this: ServerResponse, ...a: unknown[]) => unknown;
    const proto = Object.getPrototypeOf(res) as Record<'writeHead' | 'write' | 'end', Fn>;
    const writeHead = proto.writeHead;
    const write = proto.write;
    const end = proto.end;
    // Arrows: `this` is the recorder; the response's own methods are called on `res`.
    res.writeHead = ((...args: unknown[]) => {
      this.#headList = args.find((a) => typeof a === 'object' && a !== null);
      return writeHead.apply(res, args);
    }) as ServerResponse['writeHead'];
    res.write = ((chunk: unknown, ...rest: unknown[]) => {
      this.#keep(chunk, rest[0]);
      return write.apply(res, [chunk, ...rest]);
    }) as ServerResponse['write'];
    res.end = ((chunk?: unknown, ...rest: unknown[]) => {
      this.#keep(chunk, rest[0]);
      this.#ended = true;
      return end.apply(res, [chunk, ...rest]);
    }) as ServerResponse['end'];
  }

  storable(status: number): boolean {
    return status < 500 || this.#storeServerErrors;
  }

  head(status: number, headers: readonly string[]): boolean {
    this.#status = status;
    this.#headList = headers;
    return this.storable(status);
  }

  data(chunk: Buffer): boolean {
    this.#keep(chunk);
    return !this.#over;
  }

  end(): void {
    this.#ended = true;
  }

  /** The complete answer, or undefined when it never completed or went over the limit. */
  result(): StoredResponse | undefined {
    if (!this.#ended || this.#over) return undefined;
    return {
      status: this.#status ?? this.#res.statusCode,
      headers: storedHeaders(this.#setHeaders(), this.#headList),
      body: Buffer.concat(this.#chunks).toString('base64'),
    };
  }

  /** The headers set before the head: on the response, and the gateway's collected ones (which win). */
  #setHeaders(): OutgoingHttpHeaders {
    const set = this.#res.getHeaders();
    const own = this.#ctx.responseHeaders;
    if (own !== undefined) for (let i = 0; i < own.length; i += 2) set[own[i]!] = own[i + 1];
    return set;
  }

  #keep(chunk: unknown, encoding?: unknown): void {
    if (this.#over || chunk === undefined || chunk === null || typeof chunk === 'function') return;
    const buf = Buffer.isBuffer(chunk)
      ? chunk
      : Buffer.from(chunk as string, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8');
    this.#size += buf.length;
    if (this.#size > this.#limit) {
      this.#over = true;
      this.#chunks.length = 0;
      return;
    }
    this.#chunks.push(buf);
  }
}

function storedHeaders(set: OutgoingHttpHeaders, given: unknown): string[] {
  const out: string[] = [];
  const add = (name: string, value: unknown) => {
    if (NOT_STORED.has(name.toLowerCase()) || value === undefined) return;
    const values: unknown[] = Array.isArray(value) ? value : [value];
    for (const v of values) if (typeof v === 'string' || typeof v === 'number') out.push(name, String(v));
  };
  const seen = new Set<string>();
  if (Array.isArray(given)) {
    for (let i = 0; i < given.length; i += 2) {
      add(String(given[i]), given[i + 1]);
      seen.add(String(given[i]).toLowerCase());
    }
  } else if (given !== undefined) {
    for (const [k, v] of Object.entries(given as Record<string, unknown>)) {
      add(k, v);
      seen.add(k.toLowerCase());
    }
  }
  for (const [k, v] of Object.entries(set)) if (!seen.has(k)) add(k, v);
  return out;
}
