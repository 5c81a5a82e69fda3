import { parseArgs } from 'node:util';
import { patchKeyBody, rotateKeyBody, listKeysQuery } from '../admin/schemas.js';
import { fromZodIssues } from '../config/issues.js';
import type { KeyManagement } from '../key-management/management.js';
import type { KeyView } from '../keys/record.js';
import { UsageError, type CliIo } from './args.js';
import { withManagement } from './management.js';
import { EXIT } from './help.js';

/**
 * `tollgate keys list|show|update|rotate|revoke`: the admin API's key operations against the
 * config's Redis store, through the same KeyManagement the admin API uses (live `remaining`,
 * rotation sharing the allowance, a new `remaining` restarting the count). An in-memory store
 * lives inside the gateway process: there, use the admin API.
 */

type Values = Record<string, string | boolean | undefined>;

function parseCommand(
  args: string[],
  options: NonNullable<Parameters<typeof parseArgs>[0]>['options'],
  positionals: number,
): { values: Values; id: string | undefined } {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      strict: true,
      allowPositionals: positionals > 0,
      options: {
        config: { type: 'string', short: 'c' },
        json: { type: 'boolean', default: false },
        ...options,
      },
    });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (parsed.positionals.length > positionals)
    throw new UsageError(`unexpected "${parsed.positionals.at(-1)}"`);
  if (positionals > 0 && parsed.positionals.length === 0) throw new UsageError('the key id is required');
  return { values: parsed.values, id: parsed.positionals[0] };
}

/** `withManagement` for `tollgate keys <command>`. */
function withKeys(
  command: string,
  values: Values,
  io: CliIo,
  fn: (m: KeyManagement, plans: Readonly<Record<string, unknown>>) => Promise<number>,
): Promise<number> {
  return withManagement(
    `keys ${command}`,
    'use the admin API (/keys on the admin listener)',
    values,
    io,
    (m, config) => fn(m, config.plans),
  );
}

function printView(io: CliIo, view: KeyView & { key?: string; signingSecret?: string }): void {
  const rows: Array<[string, unknown]> = [
    ['id', view.id],
    ['name', view.name],
    ['key', view.maskedKey],
    ['enabled', view.enabled],
    ['scopes', view.scopes.join(',') || '-'],
    ['plan', view.plan ?? '-'],
    ['owner', view.ownerId ?? '-'],
    ['tenant', view.tenantId ?? '-'],
    ['expires', view.expiresAt ?? 'never'],
    ['remaining', view.remaining ?? 'unlimited'],
    [
      'rate limits',
      view.rateLimits?.map((r) => `${r.name}=${r.limit}/${r.windowSec}s by ${r.by}`).join(', ') ?? '-',
    ],
    ['hmac', view.hmac],
    ['created', view.createdAt],
    ['last used', view.lastUsedAt ?? 'never'],
    ['rotated from', view.rotatedFrom ?? '-'],
  ];
  for (const [k, v] of rows) io.out(`${(k + ':').padEnd(14)}${String(v)}`);
}

function notFound(io: CliIo, command: string, id: string): number {
  io.err(`tollgate keys ${command}: no key ${id}`);
  return EXIT.notFound;
}

function invalid(io: CliIo, command: string, issues: ReturnType<typeof fromZodIssues>): number {
  for (const i of issues) io.err(`tollgate keys ${command}: ${i.path}: ${i.message}`);
  return EXIT.usage;
}

export async function keysList(args: string[], io: CliIo): Promise<number> {
  const { values } = parseCommand(
    args,
    {
      owner: { type: 'string' },
      tenant: { type: 'string' },
      limit: { type: 'string' },
      cursor: { type: 'string' },
    },
    0,
  );
  const query = listKeysQuery.safeParse({
    ...(values.owner !== undefined ? { ownerId: values.owner } : {}),
    ...(values.tenant !== undefined ? { tenantId: values.tenant } : {}),
    ...(values.limit !== undefined ? { limit: values.limit } : {}),
    ...(values.cursor !== undefined ? { cursor: values.cursor } : {}),
  });
  if (!query.success) return invalid(io, 'list', fromZodIssues(query.error.issues));
  return withKeys('list', values, io, async (m) => {
    const page = await m.keys.list(query.data);
    const items = await Promise.all(page.items.map((r) => m.view(r)));
    if (values.json) {
      io.out(JSON.stringify({ items, nextCursor: page.nextCursor }));
      return EXIT.ok;
    }
    const header = ['ID', 'NAME', 'KEY', 'ENABLED', 'PLAN', 'EXPIRES', 'REMAINING', 'LAST USED'];
    const rows = items.map((v) => [
      v.id,
      v.name,
      v.maskedKey,
      String(v.enabled),
      v.plan ?? '-',
      v.expiresAt ?? 'never',
      v.remaining === null ? 'unlimited' : String(v.remaining),
      v.lastUsedAt ?? 'never',
    ]);
    const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
    for (const r of [header, ...rows])
      io.out(
        r
          .map((c, i) => c.padEnd(widths[i]!))
          .join('  ')
          .trimEnd(),
      );
    if (page.nextCursor) io.out(`more: --cursor ${page.nextCursor}`);
    return EXIT.ok;
  });
}

export async function keysShow(args: string[], io: CliIo): Promise<number> {
  const { values, id } = parseCommand(args, {}, 1);
  return withKeys('show', values, io, async (m) => {
    const record = await m.keys.get(id!);
    if (record === undefined) return notFound(io, 'show', id!);
    const view = await m.view(record);
    if (values.json) io.out(JSON.stringify(view));
    else printView(io, view);
    return EXIT.ok;
  });
}

/** `--x none|never|unlimited` clears a field (null). */
function nullable(value: string | boolean | undefined, words: string[]): string | null | undefined {
  if (typeof value !== 'string') return undefined;
  return words.includes(value) ? null : value;
}

export async function keysUpdate(args: string[], io: CliIo): Promise<number> {
  const { values, id } = parseCommand(
    args,
    {
      name: { type: 'string' },
      scopes: { type: 'string' },
      plan: { type: 'string' },
      enable: { type: 'boolean' },
      disable: { type: 'boolean' },
      expires: { type: 'string' },
      remaining: { type: 'string' },
      meta: { type: 'string' },
    },
    1,
  );
  if (values.enable && values.disable) throw new UsageError('--enable and --disable exclude each other');
  const patch: Record<string, unknown> = {};
  if (typeof values.name === 'string') patch.name = values.name;
  if (typeof values.scopes === 'string')
    patch.scopes = values.scopes
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
  const plan = nullable(values.plan, ['none']);
  if (plan !== undefined) patch.plan = plan;
  if (values.enable) patch.enabled = true;
  if (values.disable) patch.enabled = false;
  const expires = nullable(values.expires, ['never']);
  if (expires !== undefined) patch.expiresAt = expires;
  const remaining = nullable(values.remaining, ['unlimited']);
  if (remaining !== undefined)
    patch.remaining = remaining === null ? null : /^\d+$/.test(remaining) ? Number(remaining) : remaining;
  if (typeof values.meta === 'string') {
    try {
      patch.meta = JSON.parse(values.meta) as unknown;
    } catch {
      throw new UsageError('--meta must be a JSON object');
    }
  }
  if (Object.keys(patch).length === 0) throw new UsageError('nothing to update');
  const parsed = patchKeyBody.safeParse(patch);
  if (!parsed.success) return invalid(io, 'update', fromZodIssues(parsed.error.issues));
  return withKeys('update', values, io, async (m, plans) => {
    if (typeof parsed.data.plan === 'string' && !Object.hasOwn(plans, parsed.data.plan)) {
      io.err(`tollgate keys update: plan "${parsed.data.plan}" is not in the config's plans`);
      return EXIT.failed;
    }
    const view = await m.update(id!, parsed.data);
    if (view === undefined) return notFound(io, 'update', id!);
    if (values.json) io.out(JSON.stringify(view));
    else printView(io, view);
    return EXIT.ok;
  });
}

export async function keysRotate(args: string[], io: CliIo): Promise<number> {
  const { values, id } = parseCommand(args, { grace: { type: 'string' } }, 1);
  const body = rotateKeyBody.safeParse(
    typeof values.grace === 'string'
      ? { gracePeriodSec: /^\d+$/.test(values.grace) ? Number(values.grace) : values.grace }
      : {},
  );
  if (!body.success) return invalid(io, 'rotate', fromZodIssues(body.error.issues));
  return withKeys('rotate', values, io, async (m) => {
    const rotated = await m.rotate(id!, body.data.gracePeriodSec);
    if (rotated === undefined) return notFound(io, 'rotate', id!);
    if (values.json) {
      io.out(JSON.stringify(rotated));
      return EXIT.ok;
    }
    io.out(`id:             ${rotated.id}`);
    io.out(`key:            ${rotated.key}`);
    if (rotated.signingSecret) io.out(`signing secret: ${rotated.signingSecret}`);
    io.out(`previous:       ${rotated.previous.id} (works until ${rotated.previous.expiresAt})`);
    io.out('Store the key now: it is not kept and will not be shown again.');
    return EXIT.ok;
  });
}

export async function keysRevoke(args: string[], io: CliIo): Promise<number> {
  const { values, id } = parseCommand(args, {}, 1);
  return withKeys('revoke', values, io, async (m) => {
    const revoked = await m.keys.revoke(id!);
    if (revoked === undefined) return notFound(io, 'revoke', id!);
    if (values.json) io.out(JSON.stringify({ id: revoked.id, revoked: true }));
    else io.out(`revoked ${revoked.id}`);
    return EXIT.ok;
  });
}
