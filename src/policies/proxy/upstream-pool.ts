import { Pool } from 'undici';
import type { Clock } from '../../core/clock.js';
import type { UpstreamConfig } from './schema.js';

/**
 * One upstream target: an undici connection pool (keep-alive, HTTP/1.1) and passive health state.
 *
 * Why undici and not `http.request` (or http-proxy-middleware, which wraps it): undici is the
 * HTTP client Node itself ships for `fetch`, and on this machine it forwards a request for
 * ~15 µs less CPU than `http.request` with a keep-alive agent (../shared/bench numbers put a
 * whole naive gateway at ~250 µs; the proxy hop is the largest single cost left). Its dispatch
 * API streams the response straight into the client's response with backpressure, and reports
 * failures with stable error codes.
 */
export class Target {
  readonly origin: string;
  /** The path of the target URL (no trailing slash), prepended to the forwarded path. */
  readonly basePath: string;
  /** `Host` header value for this target. */
  readonly host: string;
  readonly pool: Pool;
  consecutiveFailures = 0;
  /** Epoch ms until which the target is out of rotation. */
  downUntil = 0;

  constructor(url: string, config: UpstreamConfig) {
    const u = new URL(url);
    this.origin = u.origin;
    this.basePath = u.pathname === '/' ? '' : u.pathname.replace(/\/+$/, '');
    this.host = u.host;
    this.pool = new Pool(u.origin, {
      connections: config.maxSockets,
      pipelining: 1,
      // Idle sockets close after 4 s unless the upstream's own `Keep-Alive: timeout=` says less
      // (undici honours the hint), so a socket the upstream is closing is rarely reused.
      keepAliveTimeout: 4_000,
      connect: { timeout: Math.min(config.timeoutMs, 10_000) },
      headersTimeout: config.timeoutMs,
      bodyTimeout: config.timeoutMs,
    });
  }
}

export interface TargetHealth {
  target: string;
  healthy: boolean;
  consecutiveFailures: number;
  downUntil: number | null;
}

/** Round-robin over the healthy targets of one upstream, with passive health checking. */
export class UpstreamPool {
  readonly targets: readonly Target[];
  /** Ids of the routes that use this pool (labels for health metrics). */
  readonly routes = new Set<string>();
  readonly #threshold: number;
  readonly #cooldownMs: number;
  readonly #clock: Clock;
  #next = 0;
  /** Called when a target is taken out of rotation or put back (metrics, logs). */
  onHealthChange: ((target: Target, healthy: boolean) => void) | undefined;

  constructor(config: UpstreamConfig, clock: Clock) {
    this.targets = config.targets.map((t) => new Target(t, config));
    this.#threshold = config.passiveHealth.failures;
    this.#cooldownMs = config.passiveHealth.cooldownSec * 1000;
    this.#clock = clock;
  }

  /** The next healthy target not in `exclude`, or undefined when none is left. */
  pick(exclude?: readonly Target[]): Target | undefined {
    const targets = this.targets;
    const n = targets.length;
    const now = this.#clock.now();
    for (let i = 0; i < n; i++) {
      const index = (this.#next + i) % n;
      const t = targets[index]!;
      if (t.downUntil > now) continue;
      if (exclude !== undefined && exclude.includes(t)) continue;
      if (t.downUntil !== 0) {
        // Cooldown over: the target is back in rotation on probation.
        t.downUntil = 0;
        this.onHealthChange?.(t, true);
      }
      this.#next = (index + 1) % n;
      return t;
    }
    return undefined;
  }

  /** Whole seconds until the first target comes back (for `Retry-After`), at least 1. */
  retryAfterSec(): number {
    const now = this.#clock.now();
    let soonest = Infinity;
    for (const t of this.targets) if (t.downUntil > now) soonest = Math.min(soonest, t.downUntil - now);
    return Number.isFinite(soonest) ? Math.max(1, Math.ceil(soonest / 1000)) : 1;
  }

  failed(t: Target): void {
    t.consecutiveFailures++;
    if (t.consecutiveFailures >= this.#threshold && t.downUntil === 0) {
      t.downUntil = this.#clock.now() + this.#cooldownMs;
      t.consecutiveFailures = 0;
      this.onHealthChange?.(t, false);
    }
  }

  succeeded(t: Target): void {
    if (t.consecutiveFailures !== 0) t.consecutiveFailures = 0;
  }

  health(): TargetHealth[] {
    const now = this.#clock.now();
    return this.targets.map((t) => ({
      target: t.origin + t.basePath,
      healthy: t.downUntil <= now,
      consecutiveFailures: t.consecutiveFailures,
      downUntil: t.downUntil > now ? t.downUntil : null,
    }));
  }

  close(): Promise<void> {
    return Promise.all(this.targets.map((t) => t.pool.destroy())).then(() => undefined);
  }
}

/**
 * Upstream pools outlive config reloads: a route whose upstream block did not change keeps its
 * agents (warm sockets) and health state. Pools no longer used are closed after a grace period
 * so in-flight requests finish on them.
 */
export class UpstreamRegistry {
  readonly #pools = new Map<string, UpstreamPool>();
  readonly #clock: Clock;
  onPoolCreated: ((pool: UpstreamPool) => void) | undefined;

  constructor(clock: Clock) {
    this.#clock = clock;
  }

  pool(config: UpstreamConfig, routeId?: string): UpstreamPool {
    const key = JSON.stringify(config);
    let pool = this.#pools.get(key);
    if (!pool) {
      pool = new UpstreamPool(config, this.#clock);
      this.#pools.set(key, pool);
      this.onPoolCreated?.(pool);
    }
    if (routeId !== undefined) pool.routes.add(routeId);
    return pool;
  }

  /** Every target of every pool, per route using it. */
  health(): Array<{ route: string; target: string; healthy: boolean }> {
    const out: Array<{ route: string; target: string; healthy: boolean }> = [];
    for (const pool of this.#pools.values())
      for (const t of pool.health())
        for (const route of pool.routes) out.push({ route, target: t.target, healthy: t.healthy });
    return out;
  }

  /** Closes pools not in `keep` after `graceMs`. */
  retain(keep: ReadonlySet<UpstreamPool>, graceMs: number): void {
    for (const [key, pool] of this.#pools) {
      if (keep.has(pool)) continue;
      this.#pools.delete(key);
      setTimeout(() => void pool.close(), graceMs).unref();
    }
  }

  all(): UpstreamPool[] {
    return [...this.#pools.values()];
  }

  async close(): Promise<void> {
    const pools = [...this.#pools.values()];
    this.#pools.clear();
    await Promise.all(pools.map((pool) => pool.close()));
  }
}
