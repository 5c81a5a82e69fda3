import { Problem } from '../../problems/problem.js';
import { readLimited } from '../../shared/read-body.js';
import type { RequestContext } from '../../core/context.js';
import type { Stage } from '../../core/stage.js';

const EMPTY = Buffer.alloc(0);

/**
 * Buffers the request body into `ctx.rawBody`, within `limit` bytes, on the routes that need the
 * exact bytes (HMAC signatures and idempotency fingerprints hash them). The proxy then sends
 * these same bytes upstream. Routes without such a need stream bodies and never get this stage.
 */
export function createReadBodyStage(limit: number): Stage {
  const tooLarge = {
    detail: `The request body is larger than ${limit} bytes.`,
    headers: { connection: 'close' },
  };
  return {
    name: 'read-body',
    run(ctx: RequestContext) {
      const headers = ctx.req.headers;
      if (headers['content-length'] === undefined && headers['transfer-encoding'] === undefined) {
        ctx.rawBody = EMPTY;
        return;
      }
      // Authentication has passed: a client waiting on `Expect: 100-continue` may send its body.
      ctx.sendContinue();
      return readLimited(ctx.req, limit, 'pause').then(
        (body) => {
          if (body === undefined) throw new Problem('payload-too-large', tooLarge);
          ctx.rawBody = body;
          ctx.bytesIn = body.length;
        },
        (err: unknown) => {
          throw new Problem('bad-request', { detail: 'The request body could not be read.', cause: err });
        },
      );
    },
  };
}
