import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { configurationMarkdown, problemTable, problemsMarkdown } from '../../src/docs/reference.js';
import { catalog } from '../../src/problems/catalog.js';

describe('documentation drift', () => {
  it('docs/configuration.md is generated from the schema (run `npm run docs`)', () => {
    expect(readFileSync('docs/configuration.md', 'utf8')).toBe(configurationMarkdown());
  });

  it('docs/problems.md is generated from the catalog (run `npm run docs`)', () => {
    expect(readFileSync('docs/problems.md', 'utf8')).toBe(problemsMarkdown());
  });

  it("the README's problem catalog is the catalog's table", () => {
    const readme = readFileSync('README.md', 'utf8');
    const start = readme.indexOf('<!-- problems:start -->');
    const end = readme.indexOf('<!-- problems:end -->');
    expect(start).toBeGreaterThan(-1);
    expect(readme.slice(start + '<!-- problems:start -->'.length, end).trim()).toBe(problemTable());
  });

  it('the catalog has exactly the slugs and statuses SPEC §3 fixes', () => {
    const spec: Record<string, number> = {
      'missing-credentials': 401,
      'invalid-credentials': 401,
      'expired-credentials': 401,
      'invalid-signature': 401,
      'timestamp-skew': 401,
      'replayed-request': 401,
      'insufficient-scope': 403,
      forbidden: 403,
      'quota-exceeded': 402,
      'rate-limit-exceeded': 429,
      conflict: 409,
      'idempotency-conflict': 409,
      'validation-failed': 400,
      'not-found': 404,
      'method-not-allowed': 405,
      gone: 410,
      'payload-too-large': 413,
      'bad-request': 400,
      'headers-too-large': 431,
      // Version 2: an `Expect` other than 100-continue (RFC 9110 §10.1.1), answered as a problem.
      'expectation-failed': 417,
      'bad-gateway': 502,
      'service-unavailable': 503,
      'gateway-timeout': 504,
      'internal-error': 500,
    };
    expect(Object.fromEntries(Object.entries(catalog).map(([slug, e]) => [slug, e.status]))).toEqual(spec);
  });
});
