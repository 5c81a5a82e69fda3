import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { RequestContext } from '../core/context.js';
import { CLIENT_CLOSED, finalStatus } from '../core/context.js';
import { SeriesHistogram, type HistogramSeries } from './series.js';

const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'TRACE']);
const AUTH_FAILURES = new Set([
  'missing-credentials',
  'invalid-credentials',
  'expired-credentials',
  'invalid-signature',
  'timestamp-skew',
  'replayed-request',
  'insufficient-scope',
  'forbidden',
]);

const statusClass = (status: number): string => `${Math.floor(status / 100)}xx`;

/** A target URL's origin (`http://host:port`), the `target` label of every metric. */
function originOf(target: string): string {
  try {
    return new URL(target).origin;
  } catch {
    return target;
  }
}

/** Sources read when Prometheus scrapes (gauges computed on demand, nothing per request). */
export interface MetricSources {
  redisUp?: () => number | undefined;
  redisErrors?: () => number;
  rateLimitFallback?: () => number;
  targets?: () => Array<{ route: string; target: string; healthy: boolean }>;
  reloads?: () => { count: number; failures: number; lastSuccess: boolean };
  /** Webhook deliveries waiting (queued, not yet delivered or given up). */
  webhookQueueDepth?: () => number;
  /** Open WebSockets per route. */
  websockets?: () => ReadonlyMap<string, number>;
  /** Spans exported and dropped (`telemetry.otlp`), since start. */
  telemetrySpans?: () => { exported: number; queueFull: number; exportFailed: number };
  /** Usage history: buckets waiting for the next flush (Redis), and buckets dropped so far. */
  usage?: () => { pending: number; dropped: number };
  /** Audit records this instance deleted from Redis before their retention ended (`audit.maxRedisBytes`). */
  auditTrimmed?: () => number;
  /** The audit trail's counted size in Redis, in bytes, as this instance last read it (every 5 s). */
  auditRedisBytes?: () => number;
}

/** How a webhook delivery attempt ended. */
export type WebhookOutcome = 'delivered' | 'retry' | 'failed' | 'dropped';
/** One remote JWKS as the metrics show it (`fetchedAt`: epoch ms of the last good fetch, or null). */
export interface JwksMetric {
  issuer: string;
  usable: boolean;
  lastFetchOk: boolean;
  fetchedAt: number | null;
}

/**
 * The request metrics of one route × method × status: plain numbers per request, published on
 * scrape (the counter's `collect`, `SeriesHistogram`) — prom-client's label work per call cost ~2 µs.
 */
interface RequestSeries {
  labels: { route: string; method: string; status_class: string };
  /** Requests not yet added to the counter (it is added to on scrape). */
  pending: number;
  duration: HistogramSeries;
}

/**
 * Prometheus metrics (prom-client), on a registry of the gateway's own (several gateways in one
 * process never share series). Labels are bounded: the route id (never the raw path), a known
 * method or `OTHER`, the status class, the policy or problem slug from config and catalog.
 * Per-request work is two cached-child updates plus what the request's outcome adds.
 */
export class GatewayMetrics {
  readonly registry = new Registry();
  readonly #requests: Counter<string>;
  readonly #duration: SeriesHistogram;
  readonly #upstreamDuration: SeriesHistogram;
  readonly #upstreamErrors: Counter<string>;
  readonly #rateLimited: Counter<string>;
  readonly #quota: Counter<string>;
  readonly #authFailures: Counter<string>;
  readonly #replays: Counter<string>;
  readonly #conflicts: Counter<string>;
  readonly #faults: Counter<string>;
  readonly #shadow: Counter<string>;
  readonly #meterMissing: Counter<string>;
  readonly #webhookDeliveries: Counter<string>;
  readonly #webhookDropped: Counter<string>;
  readonly #handshakes: Counter<string>;
  readonly #series = new Map<string, RequestSeries>();
  /** The remote key sets of the config in force (the gateway sets it; it changes on reload). */
  jwksSource: (() => JwksMetric[]) | undefined;
  readonly #upstreamSeries = new Map<string, HistogramSeries>();

  constructor(sources: MetricSources = {}, options: { defaultMetrics?: boolean } = {}) {
    const registers = [this.registry];
    // Node's standard names, unprefixed (`process_cpu_seconds_total`, `nodejs_heap_size_used_bytes`):
    // stock Node.js dashboards and alerts work as they are. Only the gateway's own carry `tollgate_`.
    if (options.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry });
    const series = this.#series;
    this.#requests = new Counter({
      name: 'tollgate_requests_total',
      help: 'Requests answered, by route, method and status class.',
      labelNames: ['route', 'method', 'status_class'],
      registers,
      collect() {
        for (const s of series.values())
          if (s.pending > 0) {
            this.inc(s.labels, s.pending);
            s.pending = 0;
          }
      },
    });
    this.#duration = new SeriesHistogram({
      name: 'tollgate_request_duration_seconds',
      help: 'Time from request to the end of the response, by route, method and status class.',
      labelNames: ['route', 'method', 'status_class'],
      // Up to the default requestTimeoutMs (60 s): slow responses land in a bucket, not only in +Inf.
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers,
    });
    this.#upstreamDuration = new SeriesHistogram({
      name: 'tollgate_upstream_duration_seconds',
      help: 'Time until the upstream answered (headers), by route and target.',
      labelNames: ['route', 'target'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    this.#upstreamErrors = new Counter({
      name: 'tollgate_upstream_errors_total',
      help: 'Failed upstream attempts (connection errors, resets, timeouts), by route, target and code.',
      labelNames: ['route', 'target', 'code'],
      registers,
    });
    this.#rateLimited = new Counter({
      name: 'tollgate_rate_limit_rejections_total',
      help: 'Requests refused with 429, by route and the policy that tripped.',
      labelNames: ['route', 'policy'],
      registers,
    });
    this.#quota = new Counter({
      name: 'tollgate_quota_rejections_total',
      help: 'Requests refused with 402 quota-exceeded, by route.',
      labelNames: ['route'],
      registers,
    });
    this.#authFailures = new Counter({
      name: 'tollgate_auth_failures_total',
      help: 'Authentication and authorisation failures, by problem slug.',
      labelNames: ['route', 'problem'],
      registers,
    });
    this.#replays = new Counter({
      name: 'tollgate_idempotent_replays_total',
      help: 'Stored responses replayed for a repeated Idempotency-Key, by route.',
      labelNames: ['route'],
      registers,
    });
    this.#shadow = new Counter({
      name: 'tollgate_rate_limit_shadow_rejections_total',
      help: 'Requests a rate limit in shadow mode would have refused (they were let through), by policy.',
      labelNames: ['policy'],
      registers,
    });
    this.#meterMissing = new Counter({
      name: 'tollgate_meter_missing_total',
      help: 'Responses whose meter value was missing or unusable (non-numeric, negative, fractional, over 2^53): they added 0, by route and meter.',
      labelNames: ['route', 'meter'],
      registers,
    });
    this.#conflicts = new Counter({
      name: 'tollgate_idempotency_conflicts_total',
      help: 'Idempotency-Key conflicts (409), by route and reason.',
      labelNames: ['route', 'reason'],
      registers,
    });
    this.#faults = new Counter({
      name: 'tollgate_faults_injected_total',
      help: 'Faults injected by a route’s `fault` policy, by route and kind (`delay` or `abort`).',
      labelNames: ['route', 'kind'],
      registers,
    });
    this.#webhookDeliveries = new Counter({
      name: 'tollgate_webhook_deliveries_total',
      help: 'Webhook delivery attempts, by outcome: delivered (2xx), retry (non-2xx or no answer, tried again later), failed (given up after retry.maxAgeSec), dropped (its receiver left the config).',
      labelNames: ['outcome'],
      registers,
    });
    this.#webhookDropped = new Counter({
      name: 'tollgate_webhook_events_dropped_total',
      help: 'Webhook deliveries dropped unsent because the queue was over its cap (the oldest go first).',
      registers,
    });
    const webhookQueueDepth = sources.webhookQueueDepth;
    if (webhookQueueDepth !== undefined)
      new Gauge({
        name: 'tollgate_webhook_queue_depth',
        aggregator: 'max',
        help: 'Webhook deliveries waiting to be delivered (in Redis: across instances, as last seen by this one).',
        registers,
        collect() {
          this.set(webhookQueueDepth());
        },
      });
    const usage = sources.usage;
    if (usage !== undefined) {
      new Gauge({
        name: 'tollgate_usage_pending_buckets',
        aggregator: 'sum',
        help: 'Usage-history buckets (subject × hour) counted but not yet written to Redis (docs/usage.md).',
        registers,
        collect() {
          this.set(usage().pending);
        },
      });
      let dropped = 0;
      new Counter({
        name: 'tollgate_usage_dropped_total',
        help: 'Usage-history buckets dropped: over the pending cap while Redis was away, a write that timed out, or (memory) the oldest past the store cap.',
        registers,
        collect() {
          const now = usage().dropped;
          if (now > dropped) this.inc(now - dropped);
          dropped = now;
        },
      });
    }
    const auditRedisBytes = sources.auditRedisBytes;
    if (auditRedisBytes !== undefined)
      new Gauge({
        name: 'tollgate_audit_redis_bytes',
        aggregator: 'max',
        help: 'The audit trail in Redis, in bytes, as its size count has it (across instances, read every 5 s by each): past audit.maxRedisBytes its oldest records are deleted.',
        registers,
        collect() {
          this.set(auditRedisBytes());
        },
      });
    const auditTrimmed = sources.auditTrimmed;
    if (auditTrimmed !== undefined) {
      let trimmed = 0;
      new Counter({
        name: 'tollgate_audit_trimmed_total',
        help: 'Audit records this instance deleted from Redis before audit.retentionSec ended, to keep the trail under audit.maxRedisBytes.',
        registers,
        collect() {
          const now = auditTrimmed();
          if (now > trimmed) this.inc(now - trimmed);
          trimmed = now;
        },
      });
    }
    this.#handshakes = new Counter({
      name: 'tollgate_websocket_handshakes_total',
      help: 'WebSocket handshakes, by route and outcome: accepted (101 relayed), refused (the gateway answered: auth, limits, bad handshake), upstream_refused (the upstream answered without 101), failed (no upstream answer), aborted (the client left).',
      labelNames: ['route', 'outcome'],
      registers,
    });
    new Gauge({
      name: 'tollgate_websocket_connections',
      aggregator: 'sum',
      help: 'Open WebSockets, by route.',
      labelNames: ['route'],
      registers,
      collect() {
        this.reset();
        for (const [route, n] of sources.websockets?.() ?? []) this.set({ route }, n);
      },
    });
    // Registered only with Redis: an unset gauge would still be exported as 0 ("down").
    const redisUp = sources.redisUp;
    if (redisUp !== undefined)
      new Gauge({
        name: 'tollgate_redis_up',
        aggregator: 'min',
        help: '1 when the Redis connection is ready, 0 when it is down (absent without Redis).',
        registers,
        collect() {
          this.set(redisUp() ?? 0);
        },
      });
    // Counts kept by their owners, read when scraped: counters (`_total`), so `rate()` works.
    new Counter({
      name: 'tollgate_redis_errors_total',
      aggregator: 'sum',
      help: 'Redis commands that failed since start.',
      registers,
      collect() {
        this.reset();
        this.inc(sources.redisErrors?.() ?? 0);
      },
    });
    new Gauge({
      name: 'tollgate_rate_limit_fallback_active',
      aggregator: 'max',
      help: '1 while rate limits run on the in-memory fallback because Redis is unavailable.',
      registers,
      collect() {
        this.set(sources.rateLimitFallback?.() ?? 0);
      },
    });
    new Gauge({
      name: 'tollgate_upstream_target_healthy',
      aggregator: 'min',
      help: '1 when a target is in rotation, 0 while passive health checking keeps it out.',
      labelNames: ['route', 'target'],
      registers,
      collect() {
        this.reset();
        // `target` is the origin, as on every other metric (a base path is not part of it): targets
        // of one route that differ only by path share a series, healthy only when all are.
        const series = new Map<string, { route: string; target: string; healthy: boolean }>();
        for (const t of sources.targets?.() ?? []) {
          const target = originOf(t.target);
          const key = `${t.route}|${target}`;
          const seen = series.get(key);
          if (seen === undefined) series.set(key, { route: t.route, target, healthy: t.healthy });
          else seen.healthy &&= t.healthy;
        }
        for (const t of series.values()) this.set({ route: t.route, target: t.target }, t.healthy ? 1 : 0);
      },
    });
    const spans = sources.telemetrySpans;
    new Counter({
      name: 'tollgate_telemetry_spans_exported_total',
      aggregator: 'sum',
      help: 'Spans the OTLP collector accepted (telemetry.otlp).',
      registers,
      collect() {
        this.reset();
        this.inc(spans?.().exported ?? 0);
      },
    });
    new Counter({
      name: 'tollgate_telemetry_spans_dropped_total',
      aggregator: 'sum',
      help: 'Spans dropped instead of slowing requests (telemetry.otlp), by reason.',
      labelNames: ['reason'],
      registers,
      collect() {
        const s = spans?.();
        this.reset();
        this.inc({ reason: 'queue_full' }, s?.queueFull ?? 0);
        this.inc({ reason: 'export_failed' }, s?.exportFailed ?? 0);
      },
    });
    new Counter({
      name: 'tollgate_config_reloads_total',
      // Every worker of a cluster reloads on the same signal: the cluster's count is one worker's.
      aggregator: 'max',
      help: 'Config reloads attempted since start, by result.',
      labelNames: ['result'],
      registers,
      collect() {
        const r = sources.reloads?.();
        if (!r) return;
        this.reset();
        this.inc({ result: 'success' }, r.count - r.failures);
        this.inc({ result: 'failure' }, r.failures);
      },
    });
    const jwks = () => this.jwksSource?.() ?? [];
    new Gauge({
      name: 'tollgate_jwks_usable',
      aggregator: 'min',
      help: '1 while a JWKS issuer has a key set fresh enough to verify tokens (within maxStaleMs), else 0.',
      labelNames: ['issuer'],
      registers,
      collect() {
        this.reset();
        for (const j of jwks()) this.set({ issuer: j.issuer }, j.usable ? 1 : 0);
      },
    });
    new Gauge({
      name: 'tollgate_jwks_last_fetch_success',
      aggregator: 'min',
      help: "1 when the last fetch of a JWKS issuer's key set succeeded, else 0 (serving from the cached set).",
      labelNames: ['issuer'],
      registers,
      collect() {
        this.reset();
        for (const j of jwks()) this.set({ issuer: j.issuer }, j.lastFetchOk ? 1 : 0);
      },
    });
    new Gauge({
      name: 'tollgate_jwks_age_seconds',
      aggregator: 'max',
      help: 'Seconds since the key set of a JWKS issuer was last fetched successfully (absent before the first fetch).',
      labelNames: ['issuer'],
      registers,
      collect() {
        this.reset();
        const now = Date.now();
        for (const j of jwks())
          if (j.fetchedAt !== null) this.set({ issuer: j.issuer }, Math.max(0, (now - j.fetchedAt) / 1000));
      },
    });
    new Gauge({
      name: 'tollgate_config_last_reload_success',
      aggregator: 'min',
      help: '1 when the last config reload succeeded (or none happened yet), else 0.',
      registers,
      collect() {
        this.set(sources.reloads?.().lastSuccess === false ? 0 : 1);
      },
    });
  }

  /** A request Node refused before routing (answered by the `clientError` handler). */
  observeRefused(status: number): void {
    this.#requests.labels({ route: 'unmatched', method: 'OTHER', status_class: statusClass(status) }).inc();
  }

  /** Records one finished request: called once per request from the gateway's close handler. */
  observe(ctx: RequestContext, endMono: number): void {
    const route = ctx.routeId ?? 'unmatched';
    const method = METHODS.has(ctx.req.method ?? '') ? ctx.req.method! : 'OTHER';
    const status = finalStatus(ctx);
    const key = `${route}|${method}|${status}`;
    let series = this.#series.get(key);
    if (series === undefined) {
      const labels = { route, method, status_class: statusClass(status) };
      series = { labels, pending: 0, duration: this.#duration.labels(labels) };
      // Bounded by routes × methods × statuses seen: route ids come from config, never raw paths.
      this.#series.set(key, series);
    }
    series.pending++;
    const upgrade = ctx.upgrade;
    if (upgrade !== undefined) {
      // A WebSocket's life is not a request latency: only a refused handshake is timed; an
      // accepted one was counted at its 101.
      if (!upgrade.established)
        this.#handshakes.inc({
          route,
          outcome:
            status === CLIENT_CLOSED
              ? 'aborted'
              : ctx.upstreamStatus !== undefined
                ? 'upstream_refused'
                : ctx.upstreamTarget !== undefined
                  ? 'failed'
                  : 'refused',
        });
    }
    if (upgrade === undefined || !upgrade.established)
      series.duration.observe((endMono - ctx.startMono) / 1000);
    if (ctx.upstreamLatencyMs !== undefined && ctx.upstreamTarget !== undefined) {
      const upstreamKey = `${route}|${ctx.upstreamTarget}`;
      let upstream = this.#upstreamSeries.get(upstreamKey);
      if (upstream === undefined) {
        upstream = this.#upstreamDuration.labels({ route, target: ctx.upstreamTarget });
        this.#upstreamSeries.set(upstreamKey, upstream);
      }
      upstream.observe(ctx.upstreamLatencyMs / 1000);
    }
    if (ctx.idempotentReplay) this.#replays.inc({ route });
    const shadow = ctx.rateLimitShadow;
    if (shadow !== undefined) for (const policy of shadow) this.#shadow.inc({ policy });
    const slug = ctx.problem?.slug;
    // An injected fault is counted as such (`faultInjected`), not as the failure it imitates.
    if (slug === undefined || ctx.problem?.extensions?.injected === true) return;
    if (slug === 'rate-limit-exceeded')
      this.#rateLimited.inc({ route, policy: ctx.rateLimitPolicy ?? 'unknown' });
    else if (slug === 'quota-exceeded') this.#quota.inc({ route });
    else if (slug === 'idempotency-conflict') {
      const reason = ctx.problem?.extensions?.reason;
      this.#conflicts.inc({ route, reason: typeof reason === 'string' ? reason : 'unknown' });
    } else if (AUTH_FAILURES.has(slug)) this.#authFailures.inc({ route, problem: slug });
  }

  /** A fault a route's `fault` policy injected. */
  faultInjected(route: string, kind: 'delay' | 'abort'): void {
    this.#faults.inc({ route, kind });
  }

  /** A response whose meter value was missing or unusable (it added 0). */
  meterMissing(route: string, meter: string): void {
    this.#meterMissing.inc({ route, meter });
  }

  /** A WebSocket handshake with its outcome (`accepted` when the 101 was relayed). */
  websocketHandshake(route: string, outcome: string): void {
    this.#handshakes.inc({ route, outcome });
  }

  /** A failed upstream attempt (retries included). */
  upstreamError(route: string, target: string, code: string): void {
    this.#upstreamErrors.inc({ route, target, code: /^[A-Za-z0-9_]{1,40}$/.test(code) ? code : 'other' });
  }

  /** One webhook delivery attempt ended. */
  webhookDelivery(outcome: WebhookOutcome): void {
    this.#webhookDeliveries.inc({ outcome });
  }

  /** Deliveries dropped from a full queue. */
  webhookEventsDropped(count: number): void {
    if (count > 0) this.#webhookDropped.inc(count);
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
