import { z } from 'zod';
import { bool, positiveInt } from '../../config/primitives.js';

const websocketObject = z
  .strictObject({
    idleTimeoutSec: positiveInt(86_400)
      .default(300)
      .describe(
        'A WebSocket with no bytes either way for this long is closed: a close frame 1001 to both sides (when the stream is at a frame boundary), then a TCP close.',
      ),
  })
  .describe('WebSocket options of the route.');

/**
 * A route's `websocket`: `true` (the defaults) or `{idleTimeoutSec}`; `false` or absent: none. The
 * gateway does not parse frames (bytes are piped after the 101), so there is no `maxMessageBytes`.
 */
export const websocketSchema = z
  .union([bool(), websocketObject])
  .optional()
  .transform((value) =>
    value === undefined || value === false ? undefined : value === true ? websocketObject.parse({}) : value,
  )
  .describe(
    'Accept WebSocket handshakes (`Upgrade: websocket`) on this route and proxy them to the upstream: `true`, or `{idleTimeoutSec}`. The handshake passes the whole pipeline; the credential may also come in the `access_token` query parameter (removed before proxying).',
  );

export type WebSocketConfig = z.output<typeof websocketObject>;
