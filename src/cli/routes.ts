import type { RouteConfig } from '../config/schema.js';
import { loadConfigFile } from '../config/load.js';
import { ConfigError, createGateway } from '../gateway/create-gateway.js';
import { configPathFrom, parse, type CliIo } from './args.js';
import { EXIT } from './help.js';

export interface RouteRow {
  id: string;
  path: string;
  methods: string[] | '*';
  auth: 'none' | { methods: string[]; scopes: string[]; hmac: string };
  limits: {
    rateLimits: Array<{ name: string; by: string; limit: number; windowSec: number; cost: number }>;
    quotaCost: number | null;
    idempotency: boolean;
  };
  upstream: { targets: string[] } | 'mock' | 'gone';
}

/** One route as the gateway runs it (the validated config: defaults filled in). */
export function routeRow(route: RouteConfig): RouteRow {
  const auth = route.auth === undefined || route.auth === 'none' ? 'none' : route.auth;
  return {
    id: route.id,
    path: route.path,
    methods: route.methods ? [...route.methods] : '*',
    auth:
      auth === 'none' ? 'none' : { methods: [...auth.methods], scopes: [...auth.scopes], hmac: auth.hmac },
    limits: {
      rateLimits: route.rateLimits.map((r) => ({
        name: r.name,
        by: r.by,
        limit: r.limit,
        windowSec: r.windowSec,
        cost: r.cost,
      })),
      quotaCost: route.quota ? route.quota.cost : null,
      idempotency: route.idempotency !== undefined,
    },
    upstream: route.upstream ? { targets: [...route.upstream.targets] } : route.mock ? 'mock' : 'gone',
  };
}

function text(row: RouteRow): string[] {
  const auth =
    row.auth === 'none'
      ? 'none'
      : [
          row.auth.methods.join('|'),
          row.auth.scopes.length ? `scopes=${row.auth.scopes.join(',')}` : '',
          row.auth.hmac !== 'off' ? `hmac=${row.auth.hmac}` : '',
        ]
          .filter(Boolean)
          .join(' ');
  const limits = [
    ...row.limits.rateLimits.map((r) => `${r.name}=${r.limit}/${r.windowSec}s by ${r.by}`),
    row.limits.quotaCost !== null ? `quota cost ${row.limits.quotaCost}` : '',
    row.limits.idempotency ? 'idempotency' : '',
  ].filter(Boolean);
  return [
    row.path,
    row.methods === '*' ? '*' : row.methods.join(','),
    auth,
    limits.join('; ') || '-',
    typeof row.upstream === 'string' ? row.upstream : row.upstream.targets.join(' '),
    row.id,
  ];
}

/** `tollgate routes [--config FILE] [--json]`: the compiled route table, for checking an edited file. */
export async function routes(args: string[], io: CliIo): Promise<number> {
  const { values } = parse(args, {
    config: { type: 'string', short: 'c' },
    json: { type: 'boolean', default: false },
  }) as { values: { config?: string; json?: boolean } };
  const loaded = await loadConfigFile(configPathFrom(values, io.env), io.env);
  if (!loaded.ok) throw new ConfigError(loaded.issues);
  // Built as the gateway would build it (nothing listens): what the factories refuse is refused here too.
  const gateway = createGateway(loaded.config, { env: io.env, policies: loaded.modules });
  await gateway.close();
  const rows = loaded.config.routes.map(routeRow);
  if (values.json) {
    io.out(JSON.stringify(rows, null, 2));
    return EXIT.ok;
  }
  const header = ['PATH', 'METHODS', 'AUTH', 'LIMITS', 'UPSTREAM', 'ID'];
  const cells = rows.map(text);
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  for (const r of [header, ...cells])
    io.out(
      r
        .map((c, i) => c.padEnd(widths[i]!))
        .join('  ')
        .trimEnd(),
    );
  return EXIT.ok;
}
