import { Problem } from '../../problems/problem.js';
import { readLimited } from '../../shared/read-body.js';
import { systemClock, type Clock } from '../../core/clock.js';
import { answerHead, type RequestContext } from '../../core/context.js';
import type { Stage } from '../../core/stage.js';
import { waitForRequest } from '../../core/wait.js';
import { DEFAULT_BODY_BYTES } from '../body-limit/schema.js';
import { echoDocument, echoPlan } from './echo.js';
import type { MockConfig } from './schema.js';

export interface MockStageOptions {
  /** The clock `delayMs` waits on. Default: the system clock. */
  clock?: Clock | undefined;
  /** Uniform in [0, 1), for `jitterMs`. Default `Math.random`. */
  random?: (() => number) | undefined;
  /** The largest body an echo reads (the route's `limits.bodyBytes`). */
  bodyLimit?: number | undefined;
  /** The API key header, redacted in an echo like `Authorization` (default `x-api-key`). */
  apiKeyHeader?: string | undefined;
  /** The API key prefix: values holding one of this gateway's keys are redacted in an echo. */
  apiKeyPrefix?: string | undefined;
}

const EMPTY = Buffer.alloc(0);

/**
 * Answers locally. Everything but the request id is computed here, once: a mock route is what
 * load tests aim at, so its per-request work is one `writeHead` and one `end` — plus, when
 * configured, a wait (`delayMs`, `jitterMs`, ended early when the client leaves) and the echo of
 * the request (`echo: true`: its body is read within `bodyLimit`).
 */
export function createMockStage(
  mock: MockConfig,
  securityHeaders: ReadonlyArray<readonly [string, string]>,
  o: MockStageOptions = {},
): Stage {
  const echo = mock.echo;
  const body =
    mock.body === undefined
      ? Buffer.alloc(0)
      : typeof mock.body === 'string'
        ? Buffer.from(mock.body)
        : Buffer.from(JSON.stringify(mock.body));
  const own = Object.entries(mock.headers);
  const hasType = own.some(([k]) => k.toLowerCase() === 'content-type');
  const headers: string[] = [];
  for (const [k, v] of securityHeaders) headers.push(k, v);
  if (!hasType && (mock.body !== undefined || echo))
    headers.push(
      'content-type',
      typeof mock.body === 'string' ? 'text/plain; charset=utf-8' : 'application/json; charset=utf-8',
    );
  for (const [k, v] of own) if (k.toLowerCase() !== 'content-length') headers.push(k, v);
  const status = mock.status;
  if (!echo) headers.push('content-length', String(body.length));
  const length = body.length;

  const answerFixed = (ctx: RequestContext): void => {
    const list = headers.slice();
    list.push('x-request-id', ctx.requestId);
    if (ctx.meterFields !== undefined) ctx.readMeters(list); // a metered mock reports its own
    ctx.res.writeHead(status, answerHead(ctx, list));
    ctx.res.end(body);
    ctx.bytesOut = length;
    ctx.handled = true;
  };

  const plan = echo ? echoPlan(o.apiKeyHeader ?? 'x-api-key', o.apiKeyPrefix) : undefined;
  const answerEcho = (ctx: RequestContext, requestBody: Buffer): void => {
    const doc = echoDocument(ctx.req, requestBody, plan!);
    const list = headers.slice();
    list.push('content-length', String(doc.length), 'x-request-id', ctx.requestId);
    ctx.res.writeHead(status, answerHead(ctx, list));
    ctx.res.end(doc);
    ctx.bytesOut = doc.length;
    ctx.handled = true;
  };

  const delayMs = mock.delayMs;
  const jitterSpan = mock.jitterMs + 1;
  const delayed = delayMs > 0 || jitterSpan > 1;
  const clock = o.clock ?? systemClock;
  const random = o.random ?? Math.random;
  /** Answers after the configured wait; a client that left during it gets nothing. */
  const later = (ctx: RequestContext, answer: () => void): Promise<void> | void => {
    if (!delayed) return answer();
    const ms = jitterSpan > 1 ? delayMs + Math.floor(random() * jitterSpan) : delayMs;
    return waitForRequest(ctx, clock, ms).then((waited) => {
      if (waited) answer();
      else ctx.handled = true;
    });
  };

  if (!echo) {
    if (!delayed) return { name: 'mock', run: answerFixed };
    return { name: 'mock', run: (ctx) => later(ctx, () => answerFixed(ctx)) };
  }

  const limit = o.bodyLimit ?? DEFAULT_BODY_BYTES;
  const tooLarge = {
    detail: `The request body is larger than ${limit} bytes.`,
    headers: { connection: 'close' },
  };
  return {
    name: 'mock',
    run(ctx: RequestContext) {
      const h = ctx.req.headers;
      // A body an earlier stage buffered (HMAC, idempotency) is the one echoed; one that something
      // else already consumed (a body parser before `mock()` in an Express app) cannot be read again.
      const known =
        ctx.rawBody ??
        ((h['content-length'] === undefined && h['transfer-encoding'] === undefined) || ctx.req.readableEnded
          ? EMPTY
          : undefined);
      if (known !== undefined) return later(ctx, () => answerEcho(ctx, known));
      ctx.sendContinue();
      return readLimited(ctx.req, limit, 'pause').then(
        (read) => {
          if (read === undefined) throw new Problem('payload-too-large', tooLarge);
          ctx.rawBody = read;
          ctx.bytesIn = read.length;
          return later(ctx, () => answerEcho(ctx, read));
        },
        (err: unknown) => {
          throw new Problem('bad-request', { detail: 'The request body could not be read.', cause: err });
        },
      );
    },
  };
}
