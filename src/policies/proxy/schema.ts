import { z } from 'zod';
import { mountPath, nonNegativeInt, positiveInt, bool, type Accepts } from '../../config/primitives.js';

export const upstreamSchema = z
  .strictObject({
    targets: z
      .array(
        z
          .url({ protocol: /^https?$/, error: 'must be an http:// or https:// URL' })
          // Runs even when `.url()` failed (zod keeps checking): it must not throw on a non-URL.
          .refine((u) => {
            const url = URL.canParse(u) ? new URL(u) : undefined;
            return url === undefined || (!url.search && !url.hash);
          }, 'must not carry a query or fragment'),
      )
      .min(1, 'must list at least one target')
      .describe(
        'Upstream base URLs, used round-robin. A path in the URL is prepended to the forwarded path.',
      ),
    stripPrefix: mountPath()
      .optional()
      .describe('A leading path removed before forwarding (`/v1` turns `/v1/orders/7` into `/orders/7`).'),
    timeoutMs: positiveInt()
      .default(30_000)
      .describe(
        'Time allowed for the upstream to start answering (then 504 gateway-timeout), and the longest silence while it sends a body (then the response is cut off). Give streaming routes (SSE, long polls) a value above their quiet periods.',
      ),
    retries: nonNegativeInt(5)
      .default(1)
      .describe(
        'Retries of an idempotent request whose connection failed before any response byte: on another target after a refused connection, on any target after a reset (a stale kept-alive socket).',
      ),
    preserveHost: bool()
      .default(false)
      .describe("Send the client's `Host` upstream instead of the target's host."),
    maxSockets: positiveInt().default(256).describe('Keep-alive sockets per target.'),
    passiveHealth: z
      .strictObject({
        failures: positiveInt()
          .default(3)
          .describe('Consecutive connection failures or timeouts that take a target out.'),
        cooldownSec: positiveInt().default(10).describe('How long a failed target stays out.'),
      })
      .prefault({})
      .describe('Passive health checking: a target that keeps failing is taken out for a while.'),
  })
  .describe('Where the route forwards to.');

/** A route's `upstreamErrors`: what becomes of an upstream's error responses (SPEC §3). */
export const upstreamErrorsSchema = z
  .enum(['rewrite', 'rewrite-5xx', 'passthrough'])
  .default('rewrite')
  .describe(
    'Turn upstream error responses into problem+json (SPEC §3); `rewrite-5xx` rewrites only 5xx and passes 4xx bodies through untouched; `passthrough` passes all through.',
  );

/** `upstream` as a library user writes it (plain TypeScript; checked against the schema's input). */
export interface UpstreamOptions {
  /** Base URLs, used round-robin; a path in one is prepended to the forwarded path. */
  targets: string[];
  /** A leading path removed before forwarding. */
  stripPrefix?: string;
  timeoutMs?: number;
  retries?: number;
  preserveHost?: boolean;
  maxSockets?: number;
  passiveHealth?: { failures?: number; cooldownSec?: number };
}
type _UpstreamOptions = Accepts<z.input<typeof upstreamSchema>, UpstreamOptions>;

export type UpstreamErrorsMode = z.output<typeof upstreamErrorsSchema>;
export type UpstreamConfig = z.output<typeof upstreamSchema>;
