import type { Config } from '../config/schema.js';
import type { Env } from '../config/interpolate.js';
import type { Clock } from '../core/clock.js';
import type { RequestContext } from '../core/context.js';
import type { Logger } from '../observability/logger.js';
import { UpstreamRegistry } from '../policies/proxy/upstream-pool.js';
import { WebSocketTunnels } from '../policies/proxy/websocket-tunnel.js';
import { ReadinessRegistry } from '../observability/readiness.js';
import { RedisHandle } from '../shared/redis.js';
import { GatewayMetrics } from '../observability/metrics.js';
import { MemoryAuditStore, RedisAuditStore, type AuditStore } from '../observability/audit.js';
import { createRequestObserver } from '../observability/observer.js';
import { TelemetryHub, type TelemetryTuning } from '../observability/telemetry.js';
import { SecretBox } from '../keys/secret-box.js';
import { KeyService } from '../keys/service.js';
import { MemoryKeyStore } from '../keys/memory-store.js';
import { RedisKeyStore } from '../keys/redis-store.js';
import { MemoryReplayStore, RedisReplayStore, type ReplayStore } from '../policies/signature/replay-store.js';
import { MemoryCounters, type CounterStore } from '../policies/rate-limit/counters.js';
import { ResilientCounters } from '../policies/rate-limit/resilient-counters.js';
import {
  CounterLayoutMigration,
  type CounterLayoutMigrationOptions,
} from '../policies/rate-limit/layout-migration.js';
import {
  MemoryConcurrency,
  ResilientConcurrency,
  type ConcurrencyStore,
} from '../policies/concurrency/store.js';
import { remainingCounter } from '../policies/quota/quota.js';
import {
  MemoryIdempotencyStore,
  RedisIdempotencyStore,
  type IdempotencyStore,
} from '../policies/idempotency/store.js';
import { KeyManagement } from '../key-management/management.js';
import { MAX_QUEUE_DEPTH, WebhookDispatcher } from '../events/dispatcher.js';
import { MemoryDeliveryStore, RedisDeliveryStore } from '../events/store.js';
import { MemoryUsageStore, UsageRecorder } from '../usage/usage.js';
import { RedisUsageStore } from '../usage/redis-store.js';

/** Reloads since start (metrics, readiness). */
export interface ReloadStatus {
  count: number;
  failures: number;
  lastSuccess: boolean;
  lastAt: number | undefined;
}

/**
 * The long-lived dependencies of a gateway: made once by `createServices()` (the only place that
 * wires them) and kept across config reloads, so counters, caches, connections and warm upstream
 * sockets survive a reload.
 */
export interface Services {
  readonly clock: Clock;
  /** Uniform in [0, 1): fault injection draws from it (`Math.random` unless a test seeds one). */
  readonly random: () => number;
  readonly logger: Logger;
  readonly env: Env;
  readonly upstreams: UpstreamRegistry;
  /** The open WebSockets (metrics, drain); they outlive reloads. */
  readonly websockets: WebSocketTunnels;
  readonly readiness: ReadinessRegistry;
  /** The shared Redis connection when `redis` is configured (or `REDIS_URL` set); else in-memory stores. */
  readonly redis: RedisHandle | undefined;
  readonly metrics: GatewayMetrics;
  /** The `/metrics` text (this gateway's registry, or the cluster's aggregate in the primary). */
  readonly metricsText: () => Promise<string>;
  readonly audit: AuditStore;
  /** The admin trail (SPEC §11): a sibling of `audit`, so request traffic never pushes it out. */
  readonly adminAudit: AuditStore;
  /** API keys (memory or Redis store underneath). */
  readonly keys: KeyService;
  /** Seen HMAC signatures (replay protection). */
  readonly replay: ReplayStore;
  /** Rate-limit, quota and remaining-use counters (Redis with a memory fallback, or memory). */
  readonly counters: CounterStore;
  /** Folds the counters of builds before the shared hashes into them (with Redis; see layout-migration.ts). */
  readonly counterMigration: CounterLayoutMigration | undefined;
  /** Concurrency slots (Redis with a memory fallback, or memory). */
  readonly concurrency: ConcurrencyStore;
  /** Key management for the admin and self-service APIs. */
  readonly management: KeyManagement;
  /** Idempotency locks and stored responses. */
  readonly idempotency: IdempotencyStore;
  /** Webhooks: the event sink of stages and key management, and the delivery loop (SPEC §11). */
  readonly webhooks: WebhookDispatcher;
  /** Usage history per key and tenant (SPEC §11): fed by an observer and the meter settlement. */
  readonly usage: UsageRecorder;
  /** The config in force (the gateway swaps it on reload; key management reads plans from it). */
  readonly current: { config: Config };
  readonly reloadStatus: ReloadStatus;
  /** OpenTelemetry export (`telemetry.otlp`): the exporter in force across reloads, and its counts. */
  readonly telemetry: TelemetryHub;
  /** Called once per request when its response is over (access log, metrics, audit). */
  readonly observers: Array<(ctx: RequestContext) => void>;
  /** Closed in reverse order on shutdown. */
  readonly closers: Array<() => Promise<void> | void>;
}

export interface ServiceOptions {
  env: Env;
  clock: Clock;
  /** Default `Math.random`. */
  random?: (() => number) | undefined;
  logger: Logger;
  /** Where audit records go instead of the default store. */
  audit?: AuditStore | undefined;
  /** Internal (tests): the span export's queue, batch and timeouts. */
  telemetry?: TelemetryTuning | undefined;
  /** What `/metrics` serves instead of this gateway's own registry (the cluster primary aggregates). */
  metricsText?: (() => Promise<string>) | undefined;
  /** Internal (tests): the webhook delivery loop's timing and queue cap. */
  webhooks?:
    | { pollMs?: number; leaseMs?: number; maxQueueDepth?: number; random?: () => number; deliver?: boolean }
    | undefined;
  /** Internal (tests): how often and how long the counter layout migration repeats its sweep. */
  counterMigration?: Pick<CounterLayoutMigrationOptions, 'intervalMs' | 'repeatForMs'> | undefined;
}

/** Wires every dependency of a gateway from a validated config: Redis-backed stores with Redis, in-memory twins without. */
export function createServices(config: Config, o: ServiceOptions): Services {
  const { clock, logger, env } = o;
  const upstreams = new UpstreamRegistry(clock);
  const websockets = new WebSocketTunnels();
  const redisConfig = config.redis;
  const redis = redisConfig ? new RedisHandle(redisConfig, logger) : undefined;
  const failOpen = redisConfig?.onError === 'open';
  const readiness = new ReadinessRegistry();
  if (redis)
    readiness.register('redis', () => ({
      status: redis.ready ? 'ok' : 'down',
      // Without Redis the gateway still serves (rate limits fall back to memory) unless quota and
      // idempotency fail closed: then it is not ready.
      critical: !failOpen,
      state: redis.state,
    }));
  const keys = new KeyService({
    store: redis
      ? new RedisKeyStore({ redis, clock, logger, cacheTtlMs: config.auth.apiKeys.cacheTtlMs })
      : new MemoryKeyStore(),
    prefix: config.auth.apiKeys.prefix,
    box: new SecretBox(env.TOLLGATE_SECRET_KEY || undefined),
    clock,
    throwawaySealing: env.NODE_ENV === 'development',
  });
  const counters: CounterStore = redis ? new ResilientCounters(redis, failOpen) : new MemoryCounters();
  const concurrency: ConcurrencyStore = redis
    ? new ResilientConcurrency(redis, failOpen)
    : new MemoryConcurrency();
  // Off the request path: the old builds' counter keys, folded in at start and for a while after.
  const counterMigration = redis
    ? new CounterLayoutMigration(redis, { logger, ...o.counterMigration })
    : undefined;
  counterMigration?.start();
  keys.onRemainingChanged = (keyId) => {
    const { key, tag } = remainingCounter(keyId);
    return counters.reset(key, tag);
  };
  const auditOptions = { ...config.audit, clock, logger };
  const audit =
    o.audit ?? (redis ? new RedisAuditStore({ redis, ...auditOptions }) : new MemoryAuditStore(auditOptions));
  const adminAudit = redis
    ? new RedisAuditStore({
        redis,
        ...auditOptions,
        names: { stream: 'admin-stream', records: 'admin-reqs' },
      })
    : new MemoryAuditStore(auditOptions);
  const current = { config };
  const maxDepth = o.webhooks?.maxQueueDepth ?? MAX_QUEUE_DEPTH;
  // Built even with no receivers configured: a reload may add some, and with Redis this instance
  // also delivers what others queued.
  const webhooks = new WebhookDispatcher({
    store: redis ? new RedisDeliveryStore({ redis, maxDepth }) : new MemoryDeliveryStore({ maxDepth }),
    clock,
    logger,
    webhooks: () => current.config.webhooks,
    onOutcome: (outcome) => metrics.webhookDelivery(outcome),
    onDropped: (count) => metrics.webhookEventsDropped(count),
    pollMs: o.webhooks?.pollMs,
    leaseMs: o.webhooks?.leaseMs,
    maxOutbox: maxDepth,
    random: o.webhooks?.random,
    deliver: o.webhooks?.deliver,
  });
  const telemetry = new TelemetryHub(logger, o.telemetry);
  const usageOptions = {
    retentionDays: () => current.config.usage.retentionDays,
    now: () => clock.now(),
  };
  let usageWarnedAt = -Infinity;
  const usage = new UsageRecorder(
    redis
      ? new RedisUsageStore({
          redis,
          ...usageOptions,
          flushIntervalMs: () => current.config.usage.flushIntervalMs,
          // Kept for the next flush; told at most once a minute.
          onError: (err) => {
            if (clock.monotonic() - usageWarnedAt < 60_000) return;
            usageWarnedAt = clock.monotonic();
            logger.warn({ err }, 'usage history: write to Redis failed (kept for the next flush)');
          },
        })
      : new MemoryUsageStore(usageOptions),
  );
  const reloadStatus: ReloadStatus = { count: 0, failures: 0, lastSuccess: true, lastAt: undefined };
  const metrics = new GatewayMetrics({
    redisUp: redis ? () => (redis.ready ? 1 : 0) : undefined,
    redisErrors: () => redis?.errors ?? 0,
    rateLimitFallback: () => (counters instanceof ResilientCounters && counters.fallbackActive ? 1 : 0),
    targets: () => upstreams.health(),
    reloads: () => reloadStatus,
    webhookQueueDepth: () => webhooks.depth,
    websockets: () => websockets.byRoute(),
    telemetrySpans: () => telemetry.stats,
    usage: () => usage.store.stats(),
    auditTrimmed: redis
      ? () =>
          (audit instanceof RedisAuditStore ? audit.trimmed : 0) +
          (adminAudit instanceof RedisAuditStore ? adminAudit.trimmed : 0)
      : undefined,
    auditRedisBytes: redis
      ? () =>
          (audit instanceof RedisAuditStore ? audit.redisBytes : 0) +
          (adminAudit instanceof RedisAuditStore ? adminAudit.redisBytes : 0)
      : undefined,
  });
  websockets.onOpen = (route) => metrics.websocketHandshake(route, 'accepted');
  return {
    clock,
    random: o.random ?? Math.random,
    logger,
    env,
    upstreams,
    websockets,
    readiness,
    redis,
    metrics,
    metricsText: o.metricsText ?? (() => metrics.text()),
    audit,
    adminAudit,
    keys,
    replay: redis
      ? new RedisReplayStore(redis, failOpen)
      : new MemoryReplayStore(clock, config.auth.hmac.replayCache),
    counters,
    counterMigration,
    concurrency,
    management: new KeyManagement({
      keys,
      counters,
      plans: () => current.config.plans,
      clock,
      events: webhooks,
    }),
    idempotency: redis
      ? new RedisIdempotencyStore(redis)
      : new MemoryIdempotencyStore(clock, config.idempotency),
    webhooks,
    usage,
    current,
    reloadStatus,
    telemetry,
    observers: [createRequestObserver({ logger, metrics, audit, clock }), usage.request],
    // Closed in reverse: the audit store flushes before Redis goes.
    closers: [
      () => upstreams.close(),
      () => websockets.closeAll(),
      ...(redis ? [() => redis.close()] : []),
      // Stopped before Redis goes (its page in flight ends first).
      ...(counterMigration ? [() => counterMigration.close()] : []),
      // Meter settlements still batched are written before Redis goes.
      () => counters.flush(),
      // Slot releases still batched are sent before Redis goes (else their leases free them).
      ...(concurrency instanceof ResilientConcurrency ? [() => concurrency.flush()] : []),
      // Usage still pending is written before Redis goes.
      () => usage.store.close(),
      () => webhooks.close(),
      () => audit.close(),
      () => adminAudit.close(),
      () => keys.close(),
      // First of all (closed in reverse): the last spans leave while the process is still whole.
      () => telemetry.close(),
    ],
  };
}

/** Closes what `createServices` opened, in reverse (the audit store flushes before Redis goes). */
export async function closeServices(services: Services): Promise<void> {
  for (const close of [...services.closers].reverse()) {
    try {
      await close();
    } catch (err) {
      services.logger.warn({ err }, 'error while closing');
    }
  }
}
