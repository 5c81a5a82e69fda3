import { Problem } from '../../problems/problem.js';
import type { RequestContext } from '../../core/context.js';
import type { Stage } from '../../core/stage.js';

/**
 * 413 from `Content-Length` before a byte of the body is read. The connection is closed after
 * the answer so the unread body never has to be drained. Bodies without a length are counted as
 * they stream (proxy stage, body reader).
 */
export function createBodyLimitStage(limit: number): Stage {
  const problemOptions = {
    detail: `The request body is larger than ${limit} bytes.`,
    headers: { connection: 'close' },
  };
  return {
    name: 'body-limit',
    run(ctx: RequestContext) {
      const length = ctx.req.headers['content-length'];
      if (length !== undefined && Number(length) > limit)
        throw new Problem('payload-too-large', problemOptions);
    },
  };
}
