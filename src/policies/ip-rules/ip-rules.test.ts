import fc from 'fast-check';
import ipaddr from 'ipaddr.js';
import { describe, expect, it } from 'vitest';
import { compileTrust } from '../../core/client-ip.js';
import { fakeContext } from '../../core/fake-context.js';
import type { Stage } from '../../core/stage.js';
import { Problem } from '../../problems/problem.js';
import { compileIpList, createIpRulesStage } from './ip-rules.js';
import { ipRuleProblem, ipRulesSchema } from './schema.js';

/** The stage's verdict for one client: 'pass', or the slug it refused with. */
function verdict(stage: Stage, remoteAddress: string, headers: Record<string, string> = {}, trust?: string) {
  const t = fakeContext({ remoteAddress, headers });
  if (trust !== undefined) t.ctx.trust = compileTrust(trust);
  try {
    void stage.run(t.ctx);
    return 'pass';
  } catch (err) {
    expect(err).toBeInstanceOf(Problem);
    const p = err as Problem;
    expect(p.status).toBe(403);
    if (remoteAddress !== '') expect(p.detail).not.toContain(remoteAddress); // names no address
    return p.slug;
  }
}

const rules = (input: unknown) => ipRulesSchema.parse(input);

describe('ip-rules stage (in-process)', () => {
  it('is not built when no rule is given (a route without rules pays nothing)', () => {
    expect(createIpRulesStage(undefined, undefined)).toBeUndefined();
    expect(createIpRulesStage(rules({}), rules({ deny: [] }))).toBeUndefined();
  });

  it('allow: only listed addresses pass; deny wins over allow', () => {
    const stage = createIpRulesStage(
      rules({ allow: ['10.0.0.0/8', '2001:db8::/32'], deny: ['10.9.0.0/16'] }),
    )!;
    expect(verdict(stage, '10.1.2.3')).toBe('pass');
    expect(verdict(stage, '2001:db8::7')).toBe('pass');
    expect(verdict(stage, '10.9.1.1')).toBe('forbidden');
    expect(verdict(stage, '192.0.2.1')).toBe('forbidden');
    expect(verdict(stage, '2001:db9::1')).toBe('forbidden');
  });

  it('deny only: everything else passes', () => {
    const stage = createIpRulesStage(rules({ deny: ['192.0.2.0/24', '::1'] }))!;
    expect(verdict(stage, '192.0.2.200')).toBe('forbidden');
    expect(verdict(stage, '::1')).toBe('forbidden');
    expect(verdict(stage, '198.51.100.1')).toBe('pass');
  });

  it('an IPv4-mapped IPv6 client matches IPv4 rules (a dual-stack socket reports ::ffff:a.b.c.d)', () => {
    const deny = createIpRulesStage(rules({ deny: ['203.0.113.0/24'] }))!;
    expect(verdict(deny, '::ffff:203.0.113.9')).toBe('forbidden');
    expect(verdict(deny, '::FFFF:cb00:7109')).toBe('forbidden');
    const allow = createIpRulesStage(rules({ allow: ['127.0.0.1'] }))!;
    expect(verdict(allow, '::ffff:127.0.0.1')).toBe('pass');
    expect(verdict(allow, '::ffff:127.0.0.2')).toBe('forbidden');
  });

  it('/0 means every address of its family (proxy-addr alone refuses /0)', () => {
    const v4 = createIpRulesStage(rules({ deny: ['0.0.0.0/0'] }))!;
    expect(verdict(v4, '1.2.3.4')).toBe('forbidden');
    expect(verdict(v4, '255.255.255.255')).toBe('forbidden');
    expect(verdict(v4, '::ffff:8.8.8.8')).toBe('forbidden');
    expect(verdict(v4, '2001:db8::1')).toBe('pass');
    const v6 = createIpRulesStage(rules({ deny: ['::/0'] }))!;
    expect(verdict(v6, '2001:db8::1')).toBe('forbidden');
    expect(verdict(v6, 'ffff::1')).toBe('forbidden');
    expect(verdict(v6, '8.8.8.8')).toBe('pass');
  });

  it('layers all apply: the top-level deny holds on a route with its own allow', () => {
    const stage = createIpRulesStage(rules({ deny: ['10.6.6.6'] }), rules({ allow: ['10.0.0.0/8'] }))!;
    expect(verdict(stage, '10.1.1.1')).toBe('pass');
    expect(verdict(stage, '10.6.6.6')).toBe('forbidden');
    expect(verdict(stage, '11.0.0.1')).toBe('forbidden');
  });

  it('judges the client IP trustProxy decides: a spoofed X-Forwarded-For from an untrusted peer is ignored', () => {
    const deny = createIpRulesStage(rules({ deny: ['198.51.100.7'] }))!;
    const allow = createIpRulesStage(rules({ allow: ['10.0.0.0/8'] }))!;
    // No trusted proxy: the header is the client's own words.
    expect(verdict(deny, '198.51.100.7', { 'x-forwarded-for': '10.1.1.1' })).toBe('forbidden');
    expect(verdict(allow, '198.51.100.7', { 'x-forwarded-for': '10.1.1.1' })).toBe('forbidden');
    // A trusted peer's list is read right to left: the right-most untrusted address is the client.
    expect(verdict(deny, '127.0.0.1', { 'x-forwarded-for': '198.51.100.7' }, 'loopback')).toBe('forbidden');
    expect(verdict(allow, '127.0.0.1', { 'x-forwarded-for': '10.1.1.1' }, 'loopback')).toBe('pass');
    // Prepending an allowed address does not help: the proxy appended the real one.
    expect(verdict(allow, '127.0.0.1', { 'x-forwarded-for': '10.1.1.1, 198.51.100.7' }, 'loopback')).toBe(
      'forbidden',
    );
  });

  it('an unusable client address is not in any list (allow refuses it, deny lets it by)', () => {
    expect(verdict(createIpRulesStage(rules({ allow: ['10.0.0.0/8'] }))!, '')).toBe('forbidden');
    expect(verdict(createIpRulesStage(rules({ deny: ['10.0.0.0/8'] }))!, '')).toBe('pass');
  });
});

describe('ipRules validation', () => {
  const issues = (input: unknown) => {
    const r = ipRulesSchema.safeParse(input);
    return r.success ? [] : r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
  };

  it('accepts addresses, CIDRs of both families and the range names', () => {
    expect(
      issues({
        allow: [
          '10.0.0.0/8',
          '192.0.2.1',
          '2001:db8::/32',
          '::1',
          '::ffff:10.0.0.0/104',
          'loopback',
          '0.0.0.0/0',
        ],
        deny: ['uniquelocal', ' 203.0.113.0/24 '],
      }),
    ).toEqual([]);
    expect(rules({ deny: [' 203.0.113.0/24 '] }).deny).toEqual(['203.0.113.0/24']);
  });

  it.each([
    ['10.0.0/8', 'is not an IPv4'], // a CIDR typo ipaddr.js would read as 10.0.0.8
    ['10.0.0.0.0/8', 'is not an IPv4'],
    ['256.1.1.1', 'is not an IPv4'],
    ['0x0a.0.0.1', 'is not an IPv4'],
    ['example.com', 'is not an IPv4'],
    ['fe80::1%eth0', 'is not an IPv4'],
    ['2001:db8:::1/48', 'is not an IPv4'],
    ['10.0.0.0/33', 'from 0 to 32'],
    ['10.0.0.0/-1', 'from 0 to 32'],
    ['10.0.0.0/8.5', 'from 0 to 32'],
    ['10.0.0.0/', 'from 0 to 32'],
    ['10.0.0.0/255.0.0.0', 'from 0 to 32'],
    ['2001:db8::/129', 'from 0 to 128'],
    ['10.1.2.0/8', 'did you mean 10.0.0.0/8'],
    ['2001:db8::1/32', 'did you mean 2001:db8::/32'],
  ])('refuses %s with the path of the entry', (entry, message) => {
    const found = issues({ allow: ['10.0.0.0/8', entry] });
    expect(found).toHaveLength(1);
    expect(found[0]).toMatch(/^allow\.1: /);
    expect(found[0]).toContain(message);
  });

  it('refuses an empty allow list and unknown fields', () => {
    expect(issues({ allow: [] })[0]).toMatch(/^allow: /);
    expect(issues({ alow: ['10.0.0.0/8'] })).toHaveLength(1);
    expect(ipRuleProblem('10.0.0.1')).toBeUndefined();
  });
});

/** Random addresses and prefixes: the compiled lists agree with ipaddr.js' own `match`. */
describe('CIDR matching (property, against ipaddr.js)', () => {
  const v4 = fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 4, maxLength: 4 });
  const v6 = fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 8, maxLength: 8 });
  const networkOf = (bytes: number[], prefix: number) =>
    bytes.map((b, i) => b & (0xff << (8 - Math.min(8, Math.max(0, prefix - i * 8)))) & 0xff);
  /** A random CIDR near the address half the time, so both outcomes are common. */
  const cidrFor = (addr: ipaddr.IPv4 | ipaddr.IPv6, other: number[], near: boolean, prefix: number) => {
    const bytes = addr.toByteArray();
    const base = near
      ? bytes.map((b, i) => (i * 8 + 8 <= prefix ? b : other[i % other.length]! & 0xff))
      : other;
    const network = ipaddr.fromByteArray(networkOf(base.slice(0, bytes.length), prefix));
    return { text: `${network.toString()}/${prefix}`, network };
  };

  it('IPv4 addresses (and their IPv4-mapped IPv6 form) against IPv4 CIDRs', () => {
    fc.assert(
      fc.property(v4, v4, fc.boolean(), fc.integer({ min: 0, max: 32 }), (a, b, near, prefix) => {
        const addr = ipaddr.fromByteArray(a) as ipaddr.IPv4;
        const cidr = cidrFor(addr, b, near, prefix);
        expect(ipRuleProblem(cidr.text)).toBeUndefined();
        const matches = compileIpList([cidr.text]);
        const expected = addr.match(cidr.network as ipaddr.IPv4, prefix);
        expect(matches(addr.toString())).toBe(expected);
        expect(matches(addr.toIPv4MappedAddress().toString())).toBe(expected);
        // Never across families: an IPv4 rule says nothing about a native IPv6 address.
        expect(matches(`2001:db8::${a[0]!.toString(16)}`)).toBe(false);
      }),
      { numRuns: 1000 },
    );
  });

  it('IPv6 addresses against IPv6 CIDRs', () => {
    fc.assert(
      fc.property(v6, v6, fc.boolean(), fc.integer({ min: 0, max: 128 }), (a, b, near, prefix) => {
        const addr = new ipaddr.IPv6(a);
        // Mapped addresses are IPv4 clients (proxy-addr reads them as such): covered above.
        fc.pre(!addr.isIPv4MappedAddress());
        const bytes = new ipaddr.IPv6(b).toByteArray();
        const cidr = cidrFor(addr, bytes, near, prefix);
        fc.pre(!(cidr.network as ipaddr.IPv6).isIPv4MappedAddress() || prefix < 96);
        expect(ipRuleProblem(cidr.text)).toBeUndefined();
        const matches = compileIpList([cidr.text]);
        expect(matches(addr.toString())).toBe(addr.match(cidr.network as ipaddr.IPv6, prefix));
      }),
      { numRuns: 1000 },
    );
  });

  it('a list matches when any entry does', () => {
    fc.assert(
      fc.property(
        v4,
        fc.array(fc.tuple(v4, fc.integer({ min: 1, max: 32 })), { minLength: 1, maxLength: 6 }),
        (a, list) => {
          const addr = ipaddr.fromByteArray(a) as ipaddr.IPv4;
          const cidrs = list.map(([b, p]) => ({
            net: ipaddr.fromByteArray(networkOf(b, p)) as ipaddr.IPv4,
            p,
          }));
          const matches = compileIpList(cidrs.map((c) => `${c.net.toString()}/${c.p}`));
          expect(matches(addr.toString())).toBe(cidrs.some((c) => addr.match(c.net, c.p)));
        },
      ),
      { numRuns: 1000 },
    );
  });
});
