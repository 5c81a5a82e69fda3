import type { Clock } from '../core/clock.js';
import type { Logger } from '../observability/logger.js';
import type { UpstreamRegistry } from '../policies/proxy/upstream-pool.js';
import type { ReadinessRegistry } from '../observability/readiness.js';
import type { RequestContext } from '../core/context.js';
import type { RedisHandle } from '../shared/redis.js';
import type { GatewayMetrics } from '../observability/metrics.js';
import type { AuditStore } from '../observability/audit.js';
import type { KeyService } from '../keys/service.js';
import type { ReplayStore } from '../policies/signature/replay-store.js';
import type { CounterStore } from '../policies/rate-limit/counters.js';
import type { IdempotencyStore } from '../policies/idempotency/store.js';
import type { KeyManagement } from '../key-management/management.js';

/**
 * The long-lived dependencies of a gateway: made once by `createGateway()` (the only place that
 * wires them) and kept across config reloads, so counters, caches, connections and warm upstream
 * sockets survive a reload.
 */
export interface Services {
  readonly clock: Clock;
  readonly logger: Logger;
  readonly upstreams: UpstreamRegistry;
  readonly readiness: ReadinessRegistry;
  /** The shared Redis connection when `redis` is configured (or `REDIS_URL` set); else in-memory stores. */
  readonly redis: RedisHandle | undefined;
  readonly metrics: GatewayMetrics;
  /** The `/metrics` text (this gateway's registry, or the cluster's aggregate in the primary). */
  readonly metricsText: () => Promise<string>;
  readonly audit: AuditStore;
  /** API keys (memory or Redis store underneath). */
  readonly keys: KeyService;
  /** Seen HMAC signatures (replay protection). */
  readonly replay: ReplayStore;
  /** Rate-limit, quota and remaining-use counters (Redis with a memory fallback, or memory). */
  readonly counters: CounterStore;
  /** Key management for the admin and self-service APIs. */
  readonly management: KeyManagement;
  /** Idempotency locks and stored responses. */
  readonly idempotency: IdempotencyStore;
  /** Called once per request when its response is over (access log, metrics, audit). */
  readonly observers: Array<(ctx: RequestContext) => void>;
  /** Closed in reverse order on shutdown. */
  readonly closers: Array<() => Promise<void> | void>;
}
