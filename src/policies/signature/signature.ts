import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { Problem } from '../../problems/problem.js';
import type { Clock } from '../../core/clock.js';
import type { RequestContext } from '../../core/context.js';
import type { Stage } from '../../core/stage.js';
import type { KeyService } from '../../keys/service.js';
import type { ReplayStore } from './replay-store.js';

const SIGNATURE = /^v1=([0-9a-fA-F]{64})$/;
const TIMESTAMP = /^\d{1,12}$/;

/**
 * The string an HMAC signature covers (SPEC §5, a wire contract with client SDKs):
 * `<X-Timestamp>\n<METHOD>\n<path and query exactly as sent>\n<hex SHA-256 of the raw body>`.
 */
export function signingString(
  timestamp: string,
  method: string,
  pathAndQuery: string,
  body: Buffer | string,
): string {
  const bodyHash = createHash('sha256').update(body).digest('hex');
  return `${timestamp}\n${method.toUpperCase()}\n${pathAndQuery}\n${bodyHash}`;
}

/** `X-Signature` for a request: `v1=` + hex HMAC-SHA256 keyed with the secret's UTF-8 bytes. */
export function sign(
  secret: string,
  timestamp: string,
  method: string,
  pathAndQuery: string,
  body: Buffer | string,
): string {
  return (
    'v1=' +
    createHmac('sha256', Buffer.from(secret, 'utf8'))
      .update(signingString(timestamp, method, pathAndQuery, body))
      .digest('hex')
  );
}

export interface SignatureDeps {
  keys: KeyService;
  replay: ReplayStore | undefined;
  toleranceSec: number;
  clock: Clock;
  /**
   * The methods the route's idempotency stage covers (SPEC §10): a repeat of a signed request with
   * an `Idempotency-Key` on one of them is left to that stage, which answers it with the stored
   * response (or 409) — and refuses it as a replay when there is none.
   */
  idempotentMethods?: ReadonlySet<string> | undefined;
}

/**
 * `ctx.signature.result` of a repeated signature the idempotency stage must settle: it answers
 * with the stored response of that request, or refuses with `replayedRequest()`.
 */
export const REPLAY_PENDING = 'replayed-pending-idempotency';

export function replayedRequest(): Problem {
  return new Problem('replayed-request', { detail: 'This signed request was already received.' });
}

/**
 * The `verify-signature` stage (after `read-body`): checks `X-Timestamp` and `X-Signature` of
 * API-key requests on routes with `hmac: optional | required`. `optional` checks a signature when
 * one is sent; `required` refuses unsigned requests. JWT requests carry no signing secret and are
 * not subject to it. With replay protection, a signature is accepted once inside the window.
 */
export function createSignatureStage(mode: 'optional' | 'required', deps: SignatureDeps): Stage {
  const toleranceMs = deps.toleranceSec * 1000;
  return {
    name: 'verify-signature',
    run(ctx: RequestContext) {
      const record = ctx.keyRecord;
      if (record === undefined) return; // not an API-key request
      const req = ctx.req;
      const signatureHeader = req.headers['x-signature'];
      if (signatureHeader === undefined) {
        if (mode === 'required')
          throw new Problem('invalid-signature', {
            detail: 'This route needs a signed request (X-Signature, X-Timestamp).',
          });
        return;
      }
      const timestamp = req.headers['x-timestamp'];
      const body = ctx.rawBody ?? Buffer.alloc(0);
      const bodySha256 = createHash('sha256').update(body).digest('hex');
      const note = (result: string) => {
        ctx.signature = { timestamp: typeof timestamp === 'string' ? timestamp : null, bodySha256, result };
      };
      const now = deps.clock.now();
      const serverTime = Math.floor(now / 1000);
      if (
        typeof timestamp !== 'string' ||
        !TIMESTAMP.test(timestamp) ||
        Math.abs(Number(timestamp) * 1000 - now) > toleranceMs
      ) {
        note('timestamp-skew');
        throw new Problem('timestamp-skew', {
          detail:
            typeof timestamp !== 'string'
              ? 'X-Timestamp is missing.'
              : !TIMESTAMP.test(timestamp)
                ? 'X-Timestamp must be whole seconds since the epoch.'
                : `X-Timestamp is more than ${deps.toleranceSec} s away from the gateway's clock.`,
          extensions: { server_time: serverTime },
        });
      }
      const m = typeof signatureHeader === 'string' ? SIGNATURE.exec(signatureHeader) : null;
      const secret = deps.keys.signingSecretOf(record);
      if (m === null || secret === undefined) {
        note('invalid-signature');
        throw new Problem('invalid-signature', {
          detail:
            secret === undefined
              ? 'This key has no signing secret.'
              : 'X-Signature must be "v1=<64 hex digits>".',
        });
      }
      // The path and query exactly as sent: under an Express mount `req.url` is cut to the mount
      // point, `originalUrl` is not.
      const target = (req as { originalUrl?: string }).originalUrl ?? req.url ?? '';
      const expected = createHmac('sha256', Buffer.from(secret, 'utf8'))
        .update(`${timestamp}\n${(req.method ?? '').toUpperCase()}\n${target}\n${bodySha256}`)
        .digest();
      if (!timingSafeEqual(expected, Buffer.from(m[1]!, 'hex'))) {
        note('invalid-signature');
        throw new Problem('invalid-signature', { detail: 'The signature does not match the request.' });
      }
      if (deps.replay === undefined) {
        note('valid');
        return;
      }
      // Remembered for both sides of the window: a timestamp is acceptable for 2 × tolerance.
      // Keyed by the digest in one case, so a replay cannot pass by changing the hex's case.
      const first = deps.replay.first(record.id, m[1]!.toLowerCase(), 2 * toleranceMs);
      const verdict = (isFirst: boolean) => {
        if (isFirst) note('valid');
        else if (
          deps.idempotentMethods?.has(req.method ?? '') === true &&
          req.headers['idempotency-key'] !== undefined
        )
          // A byte-identical retry (the signature covers method, target, timestamp and body):
          // the idempotency stage serves the stored answer or refuses it as replayed.
          note(REPLAY_PENDING);
        else {
          note('replayed');
          throw replayedRequest();
        }
      };
      if (first instanceof Promise) return first.then(verdict);
      verdict(first);
    },
  };
}
