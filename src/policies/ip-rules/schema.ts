import { isIPv6 } from 'node:net';
import ipaddr from 'ipaddr.js';
import { z } from 'zod';

/** The names proxy-addr (and `trustProxy`) know, usable as ipRules entries too. */
export const IP_RANGE_NAMES = ['loopback', 'linklocal', 'uniquelocal'] as const;

const OCTET = '(25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)';
/** Four dotted decimal octets only: ipaddr.js also takes `10.1` or `0x0a.0.0.1`, where a typo hides. */
const DOTTED_QUAD = new RegExp(`^${OCTET}(\\.${OCTET}){3}$`);
const PREFIX = /^(0|[1-9]\d{0,2})$/;

/**
 * Why an ipRules entry is not an address, a CIDR or a range name, or undefined when it is one.
 * Strict where a typo would silently mean another range: dotted-quad IPv4 only, a decimal prefix
 * length within the family, no zone id, and no host bits set beyond the prefix (`10.1.2.0/8`
 * is refused, with the network it probably means).
 */
export function ipRuleProblem(entry: string): string | undefined {
  if ((IP_RANGE_NAMES as readonly string[]).includes(entry)) return undefined;
  const slash = entry.indexOf('/');
  const address = slash === -1 ? entry : entry.slice(0, slash);
  const v4 = DOTTED_QUAD.test(address);
  if (!v4 && !(isIPv6(address) && !address.includes('%')))
    return `"${address}" is not an IPv4 (a.b.c.d) or IPv6 address, nor one of ${IP_RANGE_NAMES.join(', ')}`;
  if (slash === -1) return undefined;
  const max = v4 ? 32 : 128;
  const prefixText = entry.slice(slash + 1);
  const prefix = PREFIX.test(prefixText) ? Number(prefixText) : NaN;
  if (!(prefix >= 0 && prefix <= max)) return `the prefix length must be an integer from 0 to ${max}`;
  const bytes = ipaddr.parse(address).toByteArray();
  const network = bytes.map((b, i) => {
    const keep = Math.min(8, Math.max(0, prefix - i * 8));
    return b & (0xff << (8 - keep)) & 0xff;
  });
  if (network.some((b, i) => b !== bytes[i]))
    return `has host bits set beyond /${prefix} (did you mean ${ipaddr.fromByteArray(network).toString()}/${prefix}?)`;
  return undefined;
}

const ipRuleEntry = z
  .string()
  .superRefine((entry, ctx) => {
    const problem = ipRuleProblem(entry.trim());
    if (problem !== undefined) ctx.addIssue({ code: 'custom', message: problem });
  })
  .transform((entry) => entry.trim());

export const ipRulesSchema = z
  .strictObject({
    allow: z
      .array(ipRuleEntry)
      .min(1, 'must list at least one address (omit `allow` to allow every address not denied)')
      .optional()
      .describe(
        'Only these addresses and CIDRs may call (IPv4, IPv6, or `loopback`, `linklocal`, `uniquelocal`); an IPv4-mapped IPv6 client (`::ffff:10.1.2.3`) matches IPv4 entries.',
      ),
    deny: z
      .array(ipRuleEntry)
      .optional()
      .describe('These addresses and CIDRs are refused, whatever `allow` says.'),
  })
  .describe(
    'IP rules (SPEC §9) on the client IP `trustProxy` decides: refused (403 forbidden, before authentication) when in `deny`, or when `allow` is given and it is not in it. Top-level rules apply to every request; a route’s rules apply on top of them.',
  );

export type IpRulesConfig = z.output<typeof ipRulesSchema>;
