import type { Router } from 'express';

type StatusClass = '1xx' | '2xx' | '3xx' | '4xx' | '5xx';

/** One route's share of the figures (`route` label; `none` for requests that matched no route). */
export interface RouteStats {
  requests: Record<StatusClass, number>;
  rateLimited: number;
  quotaRejected: number;
  /** Sum and count of the request-duration histogram (seconds): the mean latency between two readings. */
  durationSum: number;
  durationCount: number;
}

export interface TrafficStats {
  /** Epoch ms when the figures were read. */
  time: number;
  /** Requests answered since start, by status class. */
  requests: Record<StatusClass, number>;
  rateLimited: number;
  quotaRejected: number;
  /** Would-be refusals of shadow-mode rate limits (let through), summed over policies. */
  shadowRejected: number;
  /** The same counters per route, keyed by route id. */
  routes: Record<string, RouteStats>;
  /** The request-duration histogram, cumulative since start, summed over routes: `le` in seconds. */
  latency: Array<{ le: number | null; count: number }>;
  /** Problem `type` = this + slug (the console links slugs to their documentation). */
  problemTypeBase: string;
}

const SAMPLE = /^([a-zA-Z_:][\w:]*)(?:\{([^}]*)\})?\s+(\S+)/;

/**
 * The live-traffic summary the console polls: read from the same Prometheus registry as
 * `/metrics` (in a cluster, the aggregate across workers), parsed here on the server so the
 * browser gets a small JSON document. Cumulative counters and histogram buckets: the browser
 * turns two readings into rates and into latency quantiles for the interval between them.
 */
export function trafficStats(metricsText: string, typeBase: string, now: number): TrafficStats {
  const stats: TrafficStats = {
    time: now,
    requests: { '1xx': 0, '2xx': 0, '3xx': 0, '4xx': 0, '5xx': 0 },
    rateLimited: 0,
    quotaRejected: 0,
    shadowRejected: 0,
    routes: {},
    latency: [],
    problemTypeBase: typeBase,
  };
  const buckets = new Map<string, number>();
  // A null-prototype map: a route id is config text, and `__proto__` must stay a plain key.
  const routes = Object.create(null) as Record<string, RouteStats>;
  const routeOf = (labels: string): RouteStats => {
    const id = /(?:^|,)route="((?:[^"\\]|\\.)*)"/.exec(labels)?.[1]?.replace(/\\(.)/g, '$1') ?? 'none';
    return (routes[id] ??= {
      requests: { '1xx': 0, '2xx': 0, '3xx': 0, '4xx': 0, '5xx': 0 },
      rateLimited: 0,
      quotaRejected: 0,
      durationSum: 0,
      durationCount: 0,
    });
  };
  for (const line of metricsText.split('\n')) {
    if (line.startsWith('#') || line === '') continue;
    const m = SAMPLE.exec(line);
    if (!m) continue;
    const [, name, labels = '', raw] = m;
    const value = Number(raw);
    if (!Number.isFinite(value)) continue;
    if (name === 'tollgate_requests_total') {
      const cls = /status_class="(\dxx)"/.exec(labels)?.[1] as keyof TrafficStats['requests'] | undefined;
      if (cls !== undefined && cls in stats.requests) {
        stats.requests[cls] += value;
        routeOf(labels).requests[cls] += value;
      }
    } else if (name === 'tollgate_rate_limit_rejections_total') {
      stats.rateLimited += value;
      routeOf(labels).rateLimited += value;
    } else if (name === 'tollgate_quota_rejections_total') {
      stats.quotaRejected += value;
      routeOf(labels).quotaRejected += value;
    } else if (name === 'tollgate_rate_limit_shadow_rejections_total') stats.shadowRejected += value;
    else if (name === 'tollgate_request_duration_seconds_sum') routeOf(labels).durationSum += value;
    else if (name === 'tollgate_request_duration_seconds_count') routeOf(labels).durationCount += value;
    else if (name === 'tollgate_request_duration_seconds_bucket') {
      const le = /le="([^"]+)"/.exec(labels)?.[1];
      if (le !== undefined) buckets.set(le, (buckets.get(le) ?? 0) + value);
    }
  }
  stats.routes = { ...routes };
  stats.latency = [...buckets]
    .map(([le, count]) => ({ le: le === '+Inf' ? null : Number(le), count }))
    .sort((a, b) => (a.le ?? Infinity) - (b.le ?? Infinity));
  return stats;
}

export function mountStatsRoute(
  router: Router,
  deps: { metricsText: () => Promise<string>; typeBase: () => string; now: () => number },
): void {
  router.get('/stats', async (_req, res) => {
    res.json(trafficStats(await deps.metricsText(), deps.typeBase(), deps.now()));
  });
}
