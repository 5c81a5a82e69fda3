import { describe, expect, expectTypeOf, it } from 'vitest';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import {
  definePolicy,
  fakeContext,
  policyStage,
  Problem,
  type AuthenticateOptions,
  type IdempotencyMiddlewareOptions,
  type Identity,
  type PolicyRequest,
  type ProxyOptions,
  type QuotaOptions,
  type RateLimitOptions,
  type RequestContext,
  type Stage,
} from '../../src/index.js';

describe('the public types a library user touches (type-checked by tsc; asserted at run time where they can be)', () => {
  it('definePolicy infers its options from the schema, and its handler sees a PolicyRequest', () => {
    const policy = definePolicy({
      name: 'typed',
      schema: z.object({ header: z.string(), max: z.number().default(3) }),
      create(options) {
        expectTypeOf(options).toEqualTypeOf<{ header: string; max: number }>();
        return (req) => {
          expectTypeOf(req).toEqualTypeOf<PolicyRequest>();
          expectTypeOf(req.headers[options.header]).toEqualTypeOf<string | string[] | undefined>();
          if (req.headers[options.header] === undefined) throw new Problem('forbidden');
        };
      },
    });
    const stage: Stage = policyStage(policy, { header: 'x-pass' });
    const refused = fakeContext();
    expect(() => stage.run(refused.ctx)).toThrow(Problem);
    const allowed = fakeContext({ headers: { 'x-pass': '1' } });
    expect(stage.run(allowed.ctx)).toBeUndefined();
  });

  it('Stage and RequestContext are the shapes a built-in policy is written against', () => {
    expectTypeOf<Stage['run']>().toEqualTypeOf<(ctx: RequestContext) => void | Promise<void>>();
    expectTypeOf<RequestContext['identity']>().toEqualTypeOf<Identity | undefined>();
    expectTypeOf<Identity['method']>().toEqualTypeOf<'jwt' | 'api-key'>();
    const t = fakeContext({ url: '/a?b=1' });
    expect([t.ctx.path, t.ctx.search]).toEqual(['/a', '?b=1']);
  });

  it('option types are plain: each field is what a user writes, not a zod input type', () => {
    expectTypeOf<ProxyOptions['targets']>().toEqualTypeOf<string[]>();
    expectTypeOf<ProxyOptions['timeoutMs']>().toEqualTypeOf<number | undefined>();
    expectTypeOf<RateLimitOptions['limits'][number]['by']>().toEqualTypeOf<
      'ip' | 'key' | 'subject' | 'tenant' | 'route' | 'global'
    >();
    expectTypeOf<QuotaOptions['period']>().toEqualTypeOf<'day' | 'month' | 'lifetime'>();
    expectTypeOf<NonNullable<AuthenticateOptions['route']>['methods']>().toEqualTypeOf<
      Array<'jwt' | 'apiKey'> | undefined
    >();
    expectTypeOf<IdempotencyMiddlewareOptions['ttlSec']>().toEqualTypeOf<number | undefined>();
    // And at run time, a sample of each is accepted by the middleware that takes it.
    expect(typeof ({ targets: ['http://127.0.0.1:1'] } satisfies ProxyOptions)).toBe('object');
  });

  it('the built declaration files of the policy API and the middlewares mention no zod types', () => {
    const dirs = ['dist/core', ...readdirSync('dist/policies').map((p) => join('dist/policies', p))];
    const files = dirs.flatMap((d) =>
      readdirSync(d)
        .filter((f) => f.endsWith('.d.ts') && !f.startsWith('schema') && !f.endsWith('.test.d.ts'))
        .map((f) => join(d, f)),
    );
    const withZod = files
      .filter((f) => /middleware\.d\.ts$|define-policy\.d\.ts$|^dist\/core\//.test(f))
      .filter((f) =>
        /from ['"]zod['"]|import\("zod"\)|\bz\.(input|output|infer|Zod\w*)</.test(
          readFileSync(f, 'utf8').replace(/\/\*[\s\S]*?\*\//g, ''),
        ),
      );
    expect(withZod).toEqual([]);
  });
});
