import { GatewayMetrics } from '../observability/metrics.js';

/*
 * docs/metrics.md, generated from the registry itself (`npm run docs`): every metric a gateway
 * registers, with its type, labels, help text and how the cluster primary combines workers. A
 * test fails when the file drifts from the registry.
 */

/** What each label means. A label missing here fails the generator: every label is documented. */
const LABELS: Record<string, string> = {
  route: 'the route id from the config (`unmatched` when no route matched), never a raw path',
  method: 'a standard HTTP method, or `OTHER`',
  status_class: '`1xx` … `5xx`',
  target: "an upstream target's origin (`http://host:port`; a base path is not part of it)",
  code: 'the error code of the failed attempt (`ECONNREFUSED`, `ECONNRESET`, `UND_ERR_HEADERS_TIMEOUT`, …; `unknown` without one, `other` when not a plain code)',
  policy:
    'the name of the rate limit that refused (`concurrency` for a concurrency limit; for shadow rejections, the one that would have refused)',
  outcome:
    'a WebSocket handshake: `accepted`, `refused` (the gateway answered), `upstream_refused`, `failed` (no upstream answer) or `aborted` (the client left); a webhook delivery: `delivered` (2xx), `retry` (non-2xx or no answer; tried again later), `failed` (given up after `retry.maxAgeSec`), `dropped` (its receiver left the config)',
  meter: "the meter name from the route's `meters` (config)",
  problem: 'the problem slug (`invalid-credentials`, `insufficient-scope`, …)',
  reason:
    'idempotency conflicts: `in-flight` or `payload-mismatch`; dropped spans: `queue_full` (the export queue was full: the collector is slow or down) or `export_failed` (the collector refused them, or did not answer in time)',
  result: '`success` or `failure`',
  issuer: 'the `iss` of a JWT issuer with a `jwksUri` (from the config)',
  type: 'the kind of resource, handle or request (Node.js)',
  space: 'the V8 heap space',
  version: 'the Node.js version',
  major: 'the Node.js major version',
  minor: 'the Node.js minor version',
  patch: 'the Node.js patch version',
  kind: '`delay` or `abort` (faults injected); the kind of garbage collection (`minor`, `major`, `incremental`, `weakcb`) on `nodejs_gc_duration_seconds`',
};

/** How the cluster primary combines the workers' series (prom-client aggregators). */
const AGGREGATORS: Record<string, string> = {
  sum: 'sum',
  max: 'max',
  min: 'min',
  average: 'average',
  first: 'first worker',
  omit: 'omitted (per process)',
};

interface MetricInfo {
  name: string;
  type: string;
  help: string;
  labelNames: readonly string[];
  aggregator: string;
}

/** Every metric of a gateway's registry, Redis on (so the Redis-only ones are included). */
export function registeredMetrics(): MetricInfo[] {
  const metrics = new GatewayMetrics({
    redisUp: () => 1,
    redisErrors: () => 0,
    rateLimitFallback: () => 0,
    targets: () => [],
    reloads: () => ({ count: 0, failures: 0, lastSuccess: true }),
    webhookQueueDepth: () => 0,
    usage: () => ({ pending: 0, dropped: 0 }),
    auditTrimmed: () => 0,
    auditRedisBytes: () => 0,
  });
  return metrics.registry.getMetricsAsArray().map((m) => {
    const info = m as unknown as Partial<MetricInfo> & { name: string };
    return {
      name: info.name,
      type: info.type ?? 'untyped',
      help: info.help ?? '',
      labelNames: info.labelNames ?? [],
      aggregator: info.aggregator ?? 'sum',
    };
  });
}

const cell = (s: string) => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');

function table(metrics: MetricInfo[]): string[] {
  return [
    '| metric | type | labels | meaning | across workers |',
    '|---|---|---|---|---|',
    ...metrics.map((m) => {
      const labels = m.labelNames.map((l) => `\`${l}\``).join(', ');
      return `| \`${m.name}\` | ${m.type} | ${labels} | ${cell(m.help)} | ${AGGREGATORS[m.aggregator] ?? m.aggregator} |`;
    }),
  ];
}

/** docs/metrics.md */
export function metricsMarkdown(): string {
  const all = registeredMetrics();
  const labels = [...new Set(all.flatMap((m) => m.labelNames))];
  const undocumented = labels.filter((l) => LABELS[l] === undefined);
  if (undocumented.length > 0)
    throw new Error(`labels without a description in src/docs/metrics.ts: ${undocumented.join(', ')}`);
  const own = all.filter((m) => m.name.startsWith('tollgate_'));
  const node = all.filter((m) => !m.name.startsWith('tollgate_'));
  return [
    '# Metrics reference',
    '',
    '<!-- Generated from the registry of src/observability/metrics.ts by `npm run docs`. Do not edit by hand. -->',
    '',
    '`GET /metrics` on the admin listener (no token, for scrapers) answers the Prometheus text format.',
    'Counters end in `_total`; a histogram also exports `<name>_bucket` (label `le`), `<name>_sum` and',
    '`<name>_count`. Labels are bounded: route ids from the config, never raw paths or client input.',
    'With `workers: N` the primary serves the aggregate of every worker, combined as the last column says.',
    '',
    '## Gateway metrics',
    '',
    ...table(own),
    '',
    '`tollgate_redis_up` exists only when Redis is configured (an unset gauge would read 0, "down").',
    '',
    '## Process metrics',
    '',
    "Node's standard metrics (prom-client's defaults), under their usual names without a prefix, so",
    'stock Node.js dashboards and alerts work unchanged. Listed as registered on Linux, the platform',
    'the gateway ships on; some `process_*` memory and file-descriptor metrics exist only there.',
    '',
    ...table(node),
    '',
    '## Labels',
    '',
    '| label | meaning |',
    '|---|---|',
    ...labels.sort().map((l) => `| \`${l}\` | ${cell(LABELS[l]!)} |`),
    '',
  ].join('\n');
}
