import proxyaddr from 'proxy-addr';
import { Problem } from '../../problems/problem.js';
import type { RequestContext } from '../../core/context.js';
import type { Stage } from '../../core/stage.js';
import type { IpRulesConfig } from './schema.js';

/** Whether an address is in a compiled list (proxy-addr's trust function, hop ignored). */
type Matcher = (address: string) => boolean;

/** Client addresses whose verdict a stage remembers. */
const VERDICT_CACHE_SIZE = 4096;

const FORBIDDEN_DETAIL = 'Requests from this network address are not allowed.';

/**
 * Compiles validated entries with proxy-addr (the same compiler `trustProxy` uses, so the two
 * read an address list alike; IPv4-mapped IPv6 clients match IPv4 entries). proxy-addr refuses a
 * `/0` prefix, so "every address of a family" is written as its two halves.
 */
export function compileIpList(entries: readonly string[]): Matcher {
  const expanded: string[] = [];
  for (const entry of entries) {
    if (entry.endsWith('/0')) {
      if (entry.includes(':')) expanded.push('::/1', '8000::/1');
      else expanded.push('0.0.0.0/1', '128.0.0.0/1');
    } else expanded.push(entry);
  }
  const trust = proxyaddr.compile(expanded);
  return (address) => trust(address, 0);
}

interface CompiledRules {
  readonly allow: Matcher | undefined;
  readonly deny: Matcher | undefined;
}

/** Whether one rule set lets `address` in (SPEC §9: not in `deny`, and in `allow` when it is given). */
function admits(rules: CompiledRules, address: string): boolean {
  if (rules.deny !== undefined && rules.deny(address)) return false;
  return rules.allow === undefined || rules.allow(address);
}

/**
 * The IP rules stage: 403 forbidden for a client address a rule set refuses. `layers` are applied
 * in order and all must admit the client (the top-level rules, then the route's). The address is
 * `ctx.clientIp`, which `trustProxy` decides: `X-Forwarded-For` counts only from a trusted peer.
 * Returns undefined when no layer has a rule (a route without rules pays nothing).
 */
export function createIpRulesStage(...layers: ReadonlyArray<IpRulesConfig | undefined>): Stage | undefined {
  const compiled: CompiledRules[] = [];
  for (const layer of layers) {
    if (layer === undefined || (layer.allow === undefined && (layer.deny ?? []).length === 0)) continue;
    compiled.push({
      allow: layer.allow === undefined ? undefined : compileIpList(layer.allow),
      deny: layer.deny === undefined || layer.deny.length === 0 ? undefined : compileIpList(layer.deny),
    });
  }
  if (compiled.length === 0) return undefined;
  // proxy-addr parses the address on every call (~µs): verdicts are remembered per address, in a
  // bounded map (emptied when full, so many distinct addresses cost a parse each, never memory).
  const verdicts = new Map<string, boolean>();
  return {
    name: 'ip-rules',
    run(ctx: RequestContext) {
      const address = ctx.clientIp;
      let admitted = verdicts.get(address);
      if (admitted === undefined) {
        admitted = compiled.every((rules) => admits(rules, address));
        if (verdicts.size >= VERDICT_CACHE_SIZE) verdicts.clear();
        verdicts.set(address, admitted);
      }
      if (!admitted) throw new Problem('forbidden', { detail: FORBIDDEN_DETAIL });
    },
  };
}
