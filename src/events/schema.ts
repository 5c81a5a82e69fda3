import { z } from 'zod';
import { EVENT_TYPES, type EventType } from '../core/events.js';
import { outboundUrl, positiveInt } from '../config/primitives.js';

/** A receiver URL: http or https, no credentials in it (they would end up in logs and the deliveries list). */
const webhookUrl = outboundUrl({ credentialsHint: 'authenticate the receiver by the signature' });

/** `whsec_<base64>` (Standard Webhooks): 24 to 64 random bytes, base64-encoded. */
const webhookSecret = z.string().superRefine((value, ctx) => {
  const m = /^whsec_([A-Za-z0-9+/]+={0,2})$/.exec(value);
  const bytes = m === null ? 0 : Buffer.from(m[1]!, 'base64').length;
  if (m === null || m[1]!.length % 4 !== 0)
    ctx.addIssue({ code: 'custom', message: 'must be whsec_<base64> (Standard Webhooks)' });
  else if (bytes < 24 || bytes > 64)
    ctx.addIssue({ code: 'custom', message: `must hold 24 to 64 bytes after whsec_ (it has ${bytes})` });
});

const webhookSchema = z
  .strictObject({
    url: webhookUrl.describe(
      'Where events are POSTed (http or https, no credentials in it). Operator config: the gateway calls it from its own network; redirects are not followed.',
    ),
    secret: webhookSecret.describe(
      'The signing secret, `whsec_<base64>` of 24-64 random bytes (Standard Webhooks); receivers verify with it.',
    ),
    events: z
      .array(z.enum(EVENT_TYPES as [EventType, ...EventType[]]))
      .min(1)
      .describe('The event types this receiver gets.'),
    thresholds: z
      .array(z.number().gt(0, 'must be above 0').max(1, 'must be at most 1'))
      .min(1)
      .default([0.8, 1])
      .transform((t) => [...new Set(t)].sort((a, b) => a - b))
      .describe('For `quota.threshold`: the fractions of a quota whose crossing is an event.'),
    timeoutMs: positiveInt(60_000)
      .default(10_000)
      .describe('Per attempt: the receiver must answer (status and the capped body) within this.'),
    retry: z
      .strictObject({
        initialDelayMs: positiveInt()
          .default(5_000)
          .describe('Wait before the first retry; doubled after each failed attempt (with jitter).'),
        maxDelayMs: positiveInt().default(3_600_000).describe('The longest wait between two attempts.'),
        maxAgeSec: positiveInt()
          .default(86_400)
          .describe(
            'Attempts go on until the event is this old (at least 24 h by default), then it is given up.',
          ),
      })
      .prefault({})
      .describe('Exponential backoff with jitter on a non-2xx answer or none.'),
  })
  .describe('A webhook receiver (SPEC §11), sent Standard Webhooks-signed JSON `{type, timestamp, data}`.');

export const webhooksSchema = z
  .array(webhookSchema)
  .default([])
  .superRefine((hooks, ctx) => {
    const seen = new Map<string, number>();
    hooks.forEach((h, i) => {
      const first = seen.get(h.url);
      if (first !== undefined)
        ctx.addIssue({ code: 'custom', path: [i, 'url'], message: `duplicate of webhooks[${first}].url` });
      else seen.set(h.url, i);
    });
  })
  .describe('Webhook receivers of quota and key events.');

export type WebhookConfig = z.output<typeof webhookSchema>;
