import { expect } from 'vitest';
import { catalog, type ProblemSlug } from '../../src/problems/catalog.js';

interface ProblemReply {
  status: number;
  headers: Record<string, unknown>;
  json: () => any;
}

/**
 * Checks the SPEC §3 shape of a problem response (status, content type, members, `instance` and
 * `request_id` matching `X-Request-Id`) and returns its body.
 */
export function expectProblem(res: ProblemReply, slug: ProblemSlug, typeBase?: string): Record<string, any> {
  expect(res.status).toBe(catalog[slug].status);
  expect(res.headers['content-type']).toBe('application/problem+json');
  const body = res.json();
  const id = res.headers['x-request-id'];
  expect(typeof id).toBe('string');
  expect(body).toMatchObject({
    title: catalog[slug].title,
    status: catalog[slug].status,
    instance: `/requests/${String(id)}`,
    request_id: id,
  });
  expect(String(body.type).endsWith('/' + slug) || String(body.type).endsWith(slug)).toBe(true);
  if (typeBase !== undefined) expect(body.type).toBe(typeBase + slug);
  expect(typeof body.detail).toBe('string');
  return body;
}
