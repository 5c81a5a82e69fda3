import { randomFillSync } from 'node:crypto';
import { createRequire } from 'node:module';
import type * as Api from '@opentelemetry/api';
import type * as Sdk from '@opentelemetry/sdk-trace';
import type * as Resources from '@opentelemetry/resources';
import type * as Exporter from '@opentelemetry/exporter-trace-otlp-proto';
import type * as Semconv from '@opentelemetry/semantic-conventions';
import {
  CLIENT_CLOSED,
  finalStatus,
  type RequestContext,
  type RequestTrace,
  type UpstreamTrace,
} from '../core/context.js';
import { packageVersion } from '../shared/version.js';
import type { Logger } from './logger.js';
import type { OtlpConfig } from './telemetry-schema.js';

/*
 * OpenTelemetry traces (SPEC §12): a server span per request, a client span per upstream attempt,
 * exported over OTLP/HTTP (protobuf) by the OpenTelemetry JS SDK — its `sdk-trace` package (the
 * one without `OTEL_*` environment fallbacks: the config says what the gateway does), the
 * BatchSpanProcessor (bounded queue, one export at a time) and the OTLP proto exporter.
 *
 * Free when off: the SDK and exporter are loaded on first use (about 300 ms and 18 MB that a
 * gateway without telemetry never pays; the small `@opentelemetry/api` is loaded by prom-client
 * anyway), and the request path only checks `ctx.trace === undefined`.
 */

// `require`, not `import()`: the gateway builds its state synchronously (and the packages ship CommonJS).
const require = createRequire(import.meta.url);
interface Otel {
  api: typeof Api;
  sdk: typeof Sdk;
  resources: typeof Resources;
  exporter: typeof Exporter;
  semconv: typeof Semconv;
}
let loaded: Otel | undefined;
function otel(): Otel {
  return (loaded ??= {
    api: require('@opentelemetry/api') as typeof Api,
    sdk: require('@opentelemetry/sdk-trace') as typeof Sdk,
    resources: require('@opentelemetry/resources') as typeof Resources,
    exporter: require('@opentelemetry/exporter-trace-otlp-proto') as typeof Exporter,
    semconv: require('@opentelemetry/semantic-conventions') as typeof Semconv,
  });
}

type ExporterConfig = NonNullable<ConstructorParameters<typeof Exporter.OTLPTraceExporter>[0]>;

/** How the export is bounded. The defaults are the OpenTelemetry SDK's; tests shrink them. */
export interface TelemetryTuning {
  /** Spans waiting for export; more are dropped (and counted). Default 2048. */
  maxQueueSize?: number | undefined;
  /** Spans per export request. Default 512. */
  maxExportBatchSize?: number | undefined;
  /** Longest a span waits before its batch is sent. Default 5000 ms. */
  scheduledDelayMs?: number | undefined;
  /** One export request (retries of a 429/502/503/504 or a refused connection included). Default 10 000 ms. */
  exportTimeoutMs?: number | undefined;
  /** Longest `close()` waits for the last spans to be sent. Default 5000 ms. */
  shutdownTimeoutMs?: number | undefined;
}

/** Spans since start, across every exporter the gateway had (reloads replace them). */
export interface TelemetryStats {
  exported: number;
  /** Dropped because the queue was full (the collector is slow or down). */
  queueFull: number;
  /** Dropped because their export failed (refused, timed out, an error status). */
  exportFailed: number;
}

/** The SDK's own count of processed spans (its self-observability metric; `error.type` says why one failed). */
const PROCESSED = 'otel.sdk.processor.span.processed';

// Span ids drawn from a pooled buffer (the SDK's default calls Math.random four times per id).
const POOL_SIZE = 4096;
const pool = Buffer.allocUnsafe(POOL_SIZE);
let poolOffset = POOL_SIZE;
function randomHex(bytes: number): string {
  if (poolOffset + bytes > POOL_SIZE) {
    randomFillSync(pool);
    poolOffset = 0;
  }
  const hex = pool.toString('hex', poolOffset, poolOffset + bytes);
  poolOffset += bytes;
  return hex;
}

/**
 * Span and trace ids. A trace the gateway starts (no valid `traceparent` came in) keeps the id
 * the gateway already made and logs: `startSpan` asks for the root's trace id synchronously, so
 * the caller sets `nextTraceId` just before starting the span.
 */
class GatewayIds implements Sdk.IdGenerator {
  nextTraceId: string | undefined;

  generateTraceId(): string {
    const id = this.nextTraceId;
    if (id === undefined) return randomHex(16);
    this.nextTraceId = undefined;
    return id;
  }

  generateSpanId(): string {
    return randomHex(8);
  }
}

/**
 * One exporter (one `telemetry.otlp` config): provider, batch processor, OTLP exporter. Kept
 * across reloads that leave `telemetry.otlp` as it was; replaced otherwise, the old one shut
 * down (flushed) once the requests that started spans on it are over.
 */
export class TelemetryExport {
  readonly key: string;
  readonly tracer: Api.Tracer;
  readonly ids = new GatewayIds();
  readonly #provider: Sdk.TracerProvider;
  readonly #shutdownTimeoutMs: number;
  #inFlight = 0;
  #retired = false;
  #closing: Promise<void> | undefined;

  constructor(otlp: OtlpConfig, key: string, hub: TelemetryHub) {
    const { sdk, resources, exporter, semconv } = otel();
    const t = hub.tuning;
    const exportTimeoutMs = t.exportTimeoutMs ?? 10_000;
    this.key = key;
    this.#shutdownTimeoutMs = t.shutdownTimeoutMs ?? 5_000;
    const spanExporter = new exporter.OTLPTraceExporter({
      url: `${otlp.endpoint.replace(/\/+$/, '')}/v1/traces`,
      headers: { ...otlp.headers },
      timeoutMillis: exportTimeoutMs,
      // Set here so that the environment cannot change them; it can still add OTEL_EXPORTER_OTLP_HEADERS
      // (the config's names win), as every OpenTelemetry exporter does.
      compression: 'none' as ExporterConfig['compression'],
      concurrencyLimit: 2,
    });
    const processor = new sdk.BatchSpanProcessor({
      exporter: spanExporter,
      maxQueueSize: t.maxQueueSize ?? 2048,
      maxExportBatchSize: Math.min(t.maxExportBatchSize ?? 512, t.maxQueueSize ?? 2048),
      scheduledDelayMillis: t.scheduledDelayMs ?? 5_000,
      // The exporter's own timeout answers first, so every batch is counted as exported or failed.
      exportTimeoutMillis: exportTimeoutMs + 1_000,
      selfObsMeterProvider: processedCounter((count, errorType) => hub.processed(count, errorType)),
    });
    this.#provider = new sdk.TracerProvider({
      resource: resources.resourceFromAttributes({
        [semconv.ATTR_SERVICE_NAME]: otlp.serviceName,
        [semconv.ATTR_SERVICE_VERSION]: packageVersion(),
      }),
      // The caller's sampling decision (`traceparent` flags) holds; a trace the gateway starts is sampled.
      sampler: new sdk.ParentBasedSampler({ root: new sdk.AlwaysOnSampler() }),
      idGenerator: this.ids,
      spanProcessors: [processor],
      forceFlushTimeoutMillis: this.#shutdownTimeoutMs,
    });
    this.tracer = this.#provider.getTracer('tollgate', packageVersion());
  }

  /** A span started on this exporter (it is not shut down before the span ends). */
  opened(): void {
    this.#inFlight++;
  }

  closed(): void {
    if (--this.#inFlight === 0 && this.#retired) void this.shutdown();
  }

  /** No new spans start here: shut down once the last one ends. */
  retire(): void {
    this.#retired = true;
    if (this.#inFlight <= 0) void this.shutdown();
  }

  /** Sends what is queued now (bounded by the shutdown timeout). */
  flush(): Promise<void> {
    return bounded(this.#provider.forceFlush(), this.#shutdownTimeoutMs);
  }

  /** Flushes and stops the exporter, once; bounded: a dead collector cannot hold a shutdown. */
  shutdown(): Promise<void> {
    return (this.#closing ??= bounded(this.#provider.shutdown(), this.#shutdownTimeoutMs));
  }
}

/** Resolves when `p` settles or after `ms`, whichever is first; never rejects. */
function bounded(p: Promise<unknown>, ms: number): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    timer.unref();
    p.then(
      () => {
        clearTimeout(timer);
        resolve();
      },
      () => {
        clearTimeout(timer);
        resolve();
      },
    );
  });
}

/**
 * A MeterProvider for the batch processor's self-observability (the SDK's public option): only
 * its processed-spans counter is read, as the count of spans exported, dropped with a full
 * queue (`error.type` `queue_full`), or failed in export. No private SDK field is read.
 */
function processedCounter(
  onProcessed: (count: number, errorType: string | undefined) => void,
): Api.MeterProvider {
  const { api } = otel();
  const noop = api.createNoopMeter();
  const counter: Api.Counter = {
    add(value, attributes) {
      const type = attributes?.['error.type'];
      onProcessed(value, typeof type === 'string' ? type : undefined);
    },
  };
  const meter = Object.assign(Object.create(noop) as Api.Meter, {
    createCounter: (name: string, options?: Api.MetricOptions) =>
      name === PROCESSED ? counter : noop.createCounter(name, options),
  });
  return { getMeter: () => meter };
}

/**
 * The gateway's telemetry across reloads (one per gateway, in its services): the exporter of the
 * config in force, the ones retiring, and the counts the metrics read.
 */
export class TelemetryHub {
  readonly stats: TelemetryStats = { exported: 0, queueFull: 0, exportFailed: 0 };
  readonly tuning: TelemetryTuning;
  readonly #logger: Logger;
  readonly #all = new Set<TelemetryExport>();
  #current: TelemetryExport | undefined;
  #outage = false;

  constructor(logger: Logger, tuning: TelemetryTuning = {}) {
    this.#logger = logger;
    this.tuning = tuning;
  }

  /**
   * The exporter for a config's `telemetry.otlp` (undefined: off): the current one when the
   * settings did not change, else a new one, and the previous one retires.
   */
  select(otlp: OtlpConfig | undefined): TelemetryExport | undefined {
    const key = otlp === undefined ? undefined : JSON.stringify(otlp);
    const current = this.#current;
    if (current?.key === key) return current;
    current?.retire();
    if (otlp === undefined || key === undefined) {
      this.#current = undefined;
      return undefined;
    }
    const next = new TelemetryExport(otlp, key, this);
    this.#all.add(next);
    this.#current = next;
    return next;
  }

  /** Counted and, once per outage, logged: never the error's text (a collector's body) nor a header. */
  processed(count: number, errorType: string | undefined): void {
    const stats = this.stats;
    if (errorType === undefined) {
      stats.exported += count;
      if (this.#outage) {
        this.#outage = false;
        this.#logger.info('telemetry: span export recovered');
      }
      return;
    }
    if (errorType === 'queue_full') stats.queueFull += count;
    else stats.exportFailed += count;
    if (!this.#outage) {
      this.#outage = true;
      this.#logger.warn(
        { error_type: errorType },
        'telemetry: spans are being dropped (the OTLP collector is slow or unreachable); requests are not affected',
      );
    }
  }

  /** Sends the spans queued now (tests; a process about to be frozen). */
  async flush(): Promise<void> {
    await this.#current?.flush();
  }

  /** Flushes and stops every exporter (bounded). */
  async close(): Promise<void> {
    this.#current = undefined;
    await Promise.all([...this.#all].map((e) => e.shutdown()));
    this.#all.clear();
  }
}

/** `host:port` of a target → the client span's `server.*` attributes (computed once per target). */
function serverAttributes(origin: string): { address: string; port: number } {
  const url = new URL(origin);
  const address = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  const port = url.port === '' ? (url.protocol === 'https:' ? 443 : 80) : Number(url.port);
  return { address, port };
}

function traceparentOf(span: Api.Span): string {
  const sc = span.spanContext();
  return `00-${sc.traceId}-${sc.spanId}-${(sc.traceFlags & 1) === 1 ? '01' : '00'}`;
}

/** The remote parent a valid inbound `traceparent` names (`ctx.traceparent` is it, unchanged). */
function remoteParent(traceparent: string): Api.SpanContext {
  return {
    traceId: traceparent.slice(3, 35),
    spanId: traceparent.slice(36, 52),
    traceFlags: parseInt(traceparent.slice(53, 55), 16) & 0xff,
    isRemote: true,
  };
}

/**
 * The parent of a request's first span: the embedding app's active span (an Express app with its
 * own OpenTelemetry instrumentation), else the valid inbound `traceparent`; undefined when the
 * gateway started the trace itself.
 */
function parentContext(ctx: RequestContext): Api.Context | undefined {
  const { api } = otel();
  const active = api.context.active();
  const hosted = api.trace.getSpanContext(active);
  if (hosted !== undefined && api.trace.isSpanContextValid(hosted)) return active;
  if (ctx.req.headers.traceparent === ctx.traceparent)
    return api.trace.setSpanContext(api.ROOT_CONTEXT, remoteParent(ctx.traceparent));
  return undefined;
}

/** One upstream attempt. */
class ClientSpan implements UpstreamTrace {
  readonly traceparent: string;
  readonly #span: Api.Span;
  readonly #export: TelemetryExport | undefined;
  #ended = false;

  constructor(span: Api.Span, exp: TelemetryExport | undefined) {
    this.#span = span;
    this.#export = exp;
    this.traceparent = traceparentOf(span);
    exp?.opened();
  }

  end(status: number | undefined, error?: string): void {
    if (this.#ended) return;
    this.#ended = true;
    const span = this.#span;
    if (span.isRecording()) {
      const { api, semconv } = otel();
      if (status !== undefined) span.setAttribute(semconv.ATTR_HTTP_RESPONSE_STATUS_CODE, status);
      const failure = error ?? (status !== undefined && status >= 500 ? String(status) : undefined);
      if (failure !== undefined) {
        span.setAttribute(semconv.ATTR_ERROR_TYPE, failure);
        span.setStatus({ code: api.SpanStatusCode.ERROR });
      }
    }
    span.end();
    this.#export?.closed();
  }
}

/** Starts client spans under `parent` (shared by the gateway's server spans and `proxy({tracer})`). */
function startClient(
  tracer: Api.Tracer,
  parent: Api.Context,
  method: string,
  target: { readonly origin: string },
  resend: number,
  servers: Map<string, { address: string; port: number }>,
  exp: TelemetryExport | undefined,
): ClientSpan {
  const { api, semconv } = otel();
  let server = servers.get(target.origin);
  if (server === undefined) {
    server = serverAttributes(target.origin);
    if (servers.size < 1024) servers.set(target.origin, server);
  }
  const attributes: Api.Attributes = {
    [semconv.ATTR_HTTP_REQUEST_METHOD]: method,
    [semconv.ATTR_SERVER_ADDRESS]: server.address,
    [semconv.ATTR_SERVER_PORT]: server.port,
  };
  if (resend > 0) attributes[semconv.ATTR_HTTP_REQUEST_RESEND_COUNT] = resend;
  return new ClientSpan(tracer.startSpan(method, { kind: api.SpanKind.CLIENT, attributes }, parent), exp);
}

/** A request's spans on the gateway: its server span, and the client spans of its attempts. */
class ServerTrace implements RequestTrace {
  readonly #t: GatewayTelemetry;
  readonly #span: Api.Span;
  #context: Api.Context | undefined;
  #ended = false;

  constructor(t: GatewayTelemetry, span: Api.Span) {
    this.#t = t;
    this.#span = span;
    t.export.opened();
  }

  upstream(
    method: string,
    target: { readonly host: string; readonly origin: string },
    resend: number,
  ): UpstreamTrace {
    const t = this.#t;
    const parent = (this.#context ??= otel().api.trace.setSpan(otel().api.ROOT_CONTEXT, this.#span));
    return startClient(t.export.tracer, parent, method, target, resend, t.servers, t.export);
  }

  finish(ctx: RequestContext): void {
    if (this.#ended) return;
    this.#ended = true;
    const span = this.#span;
    if (span.isRecording()) {
      const { api, semconv } = otel();
      const method = ctx.req.method ?? 'GET';
      const routeId = ctx.routeId;
      const path = routeId === undefined ? undefined : this.#t.routePaths.get(routeId);
      if (routeId !== undefined) {
        span.setAttribute('tollgate.route.id', routeId);
        if (path !== undefined) {
          span.setAttribute(semconv.ATTR_HTTP_ROUTE, path);
          span.updateName(`${method} ${path}`);
        }
      }
      span.setAttribute('tollgate.request.id', ctx.requestId);
      const status = finalStatus(ctx);
      // 499 is nginx's word for "the client left before an answer", not a status anyone sent.
      if (status === CLIENT_CLOSED) span.setAttribute('tollgate.aborted', true);
      else span.setAttribute(semconv.ATTR_HTTP_RESPONSE_STATUS_CODE, status);
      const id = ctx.identity;
      if (id !== undefined) {
        // The credential's id (the key id, a JWT's `sub`-independent id), never the credential.
        span.setAttribute('tollgate.credential.id', id.credentialId);
        span.setAttribute('tollgate.auth.method', id.method);
      }
      const problem = ctx.problem?.slug;
      if (problem !== undefined) span.setAttribute('tollgate.problem', problem);
      const closeCode = ctx.upgrade?.closeCode;
      if (closeCode !== undefined) span.setAttribute('tollgate.websocket.close_code', closeCode);
      if (status >= 500 && status !== CLIENT_CLOSED) {
        span.setAttribute(semconv.ATTR_ERROR_TYPE, String(status));
        span.setStatus({ code: api.SpanStatusCode.ERROR });
      }
    }
    span.end();
    this.#t.export.closed();
  }
}

/**
 * The telemetry of one config: the exporter in force and what the spans name (route paths). The
 * gateway starts a request's server span with `start` when the request arrives.
 */
export class GatewayTelemetry {
  readonly export: TelemetryExport;
  readonly routePaths: ReadonlyMap<string, string>;
  /** `server.*` attributes per target origin. */
  readonly servers = new Map<string, { address: string; port: number }>();

  constructor(exp: TelemetryExport, routes: ReadonlyArray<{ readonly id: string; readonly path: string }>) {
    this.export = exp;
    this.routePaths = new Map(routes.map((r) => [r.id, r.path]));
  }

  /** The server span of a request that just arrived (the route is named when it ends). */
  start(ctx: RequestContext): ServerTrace {
    const { api, semconv } = otel();
    const exp = this.export;
    const parent = parentContext(ctx);
    // No valid `traceparent` came in: the span is the root of the trace the gateway made (and logs).
    if (parent === undefined) exp.ids.nextTraceId = ctx.traceId;
    const method = ctx.req.method ?? 'GET';
    const span = exp.tracer.startSpan(
      method,
      { kind: api.SpanKind.SERVER, attributes: { [semconv.ATTR_HTTP_REQUEST_METHOD]: method } },
      parent ?? api.ROOT_CONTEXT,
    );
    exp.ids.nextTraceId = undefined;
    return new ServerTrace(this, span);
  }
}

/**
 * The trace of a request in a plain Express app whose `proxy()` was given a `tracer` (the app's
 * own OpenTelemetry): client spans only, under the app's active span (its HTTP instrumentation's
 * server span) or else the request's `traceparent`. The app owns the server span.
 */
export function libraryTrace(tracer: Api.Tracer, ctx: RequestContext): RequestTrace {
  const { api } = otel();
  const active = api.context.active();
  const hosted = api.trace.getSpanContext(active);
  const parent =
    hosted !== undefined && api.trace.isSpanContextValid(hosted)
      ? active
      : api.trace.setSpanContext(api.ROOT_CONTEXT, remoteParent(ctx.traceparent));
  const servers = new Map<string, { address: string; port: number }>();
  return {
    upstream: (method, target, resend) =>
      startClient(tracer, parent, method, target, resend, servers, undefined),
    finish: () => undefined,
  };
}
