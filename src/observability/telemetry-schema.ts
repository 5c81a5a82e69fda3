import { z } from 'zod';
import { outboundUrl } from '../config/primitives.js';

/** RFC 9110 §5.6.2 `token`: what a header name may be. */
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** A header value Node sends as given: visible Latin-1, spaces and tabs inside, no CR, LF or NUL. */
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
/**
 * Names the exporter owns (framing, the payload's type) or that would change what the request is:
 * a copy from the config would break the export or be silently replaced.
 */
const RESERVED = new Set([
  'connection',
  'content-encoding',
  'content-length',
  'content-type',
  'expect',
  'host',
  'keep-alive',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'user-agent',
]);

/**
 * The collector's base URL (as `OTEL_EXPORTER_OTLP_ENDPOINT` means it): spans go to
 * `<endpoint>/v1/traces`. Credentials belong in `headers`, which are never logged; a URL is.
 */
const endpoint = outboundUrl({
  credentialsHint: 'send them in telemetry.otlp.headers',
  query: false,
  baseHint: 'spans go to <endpoint>/v1/traces',
});

// Messages never quote a value: header values are secrets (a vendor's API key, a bearer token).
const headerValue = z
  .string({ error: 'must be a string' })
  .max(8192, 'must be at most 8192 characters')
  .regex(FIELD_VALUE, 'must be a header value without control characters (CR, LF, NUL) or non-Latin-1 text');

/** `telemetry`: OpenTelemetry traces (SPEC §12). Off unless `otlp` is set. */
export const telemetrySchema = z
  .strictObject({
    otlp: z
      .strictObject({
        endpoint: endpoint.describe(
          'Base URL of an OTLP/HTTP receiver (an OpenTelemetry Collector, a vendor): spans are POSTed as protobuf to `<endpoint>/v1/traces`. http or https; no credentials, query or fragment in it.',
        ),
        serviceName: z
          .string()
          .min(1)
          .max(256)
          .default('tollgate')
          .describe('The `service.name` of the spans.'),
        headers: z
          .record(z.string(), headerValue)
          .superRefine((h, ctx) => {
            const names = Object.keys(h);
            if (names.length > 32) ctx.addIssue({ code: 'custom', message: 'must have at most 32 headers' });
            const seen = new Set<string>();
            for (const name of names) {
              const lower = name.toLowerCase();
              const message = !TOKEN.test(name)
                ? "is not an HTTP header name (letters, digits and !#$%&'*+.^_`|~-)"
                : RESERVED.has(lower)
                  ? 'is set by the exporter itself'
                  : seen.has(lower)
                    ? 'names a header already listed (names are case-insensitive)'
                    : undefined;
              seen.add(lower);
              if (message !== undefined) ctx.addIssue({ code: 'custom', path: [name], message });
            }
          })
          .default({})
          .describe(
            "Headers sent with every export (a vendor's API key, `authorization`). Secrets: never logged, never in a span; use `${VAR}` to keep them out of the file.",
          ),
      })
      .optional()
      .describe(
        'Export a server span per request and a client span per upstream attempt over OTLP/HTTP, parented on the incoming `traceparent`. Batched and bounded: a slow or dead collector never slows requests (spans are dropped and counted instead).',
      ),
  })
  .prefault({})
  .describe('OpenTelemetry traces. Off (and free) unless `otlp` is set.');

export type TelemetryConfig = z.output<typeof telemetrySchema>;
export type OtlpConfig = NonNullable<TelemetryConfig['otlp']>;
