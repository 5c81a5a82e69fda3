import { describe, expect, it } from 'vitest';
import { fakeContext } from '../../core/fake-context.js';
import { securityHeaders } from '../../shared/security-headers.js';
import { createMockStage } from './mock.js';
import { mockSchema } from './schema.js';

describe('mock stage (in-process)', () => {
  it('answers the configured status, headers and JSON body with the request id', async () => {
    const stage = createMockStage(
      mockSchema.parse({ status: 201, headers: { 'x-demo': '1' }, body: { ok: true } }),
      securityHeaders(),
    );
    const t = fakeContext({ headers: { 'x-request-id': 'mock-1' } });
    expect(stage.run(t.ctx)).toBeUndefined();
    expect(t.ctx.handled).toBe(true);
    const res = await t.response();
    expect(res.status).toBe(201);
    expect(res.headers['x-demo']).toBe('1');
    expect(res.headers['x-request-id']).toBe('mock-1');
    expect(res.headers['content-type']).toBe('application/json; charset=utf-8');
    expect(res.json()).toEqual({ ok: true });
  });
});
