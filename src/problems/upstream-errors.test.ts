import { describe, expect, it } from 'vitest';
import { upstreamProblem } from './upstream-errors.js';

const json = (v: unknown) => Buffer.from(JSON.stringify(v));
const rewrite = (status: number, body: unknown, contentType = 'application/json') =>
  upstreamProblem(status, contentType, json(body), 'req-1');

describe('upstream error rewriting (SPEC §3, in-process)', () => {
  it.each([
    [{ code: 'OUT_OF_STOCK' }, 'OUT_OF_STOCK'],
    [{ error: { code: 'card_declined', message: 'declined' } }, 'card_declined'],
    [{ error_code: 'E1042' }, 'E1042'],
    [{ error_code: 17 }, 17],
    [{ type: 'invalid_request_error' }, 'invalid_request_error'],
    // `code` first, then `error.code`, `error_code`, `type`.
    [{ type: 'kind', error_code: 'E2', code: 'C1' }, 'C1'],
    [{ type: 'kind', error_code: 'E2' }, 'E2'],
  ])('a 4xx keeps the code of %j', (body, code) => {
    expect(rewrite(400, body).code).toBe(code);
  });

  it.each([
    [{ type: 'https://errors.example/x' }],
    [{ type: 'about:blank' }],
    [{ type: 'urn:problem:x' }],
    [{ type: '/problems/out-of-stock' }],
    [{ type: 'problems/out-of-stock' }],
    [{ code: '   ' }],
    [{ code: { nested: true } }],
    [{ code: 1.5 }],
  ])('no code from %j (a URI reference is a problem type; an unusable value is none)', (body) => {
    expect(rewrite(400, body).code).toBeUndefined();
  });

  it("keeps FastAPI's item types in errors, and the message as detail", () => {
    const doc = rewrite(422, {
      detail: [
        { loc: ['body', 'qty'], msg: 'Field required', type: 'missing' },
        { loc: 'a.b', msg: 'bad' },
      ],
    });
    expect(doc.errors).toEqual([
      { pointer: '/body/qty', message: 'Field required', type: 'missing' },
      { pointer: '/a/b', message: 'bad' },
    ]);
  });

  it('a 5xx passes no code, detail or other member on; a 5xx problem keeps type, title, status only', () => {
    const plain = rewrite(500, { code: 'PG_DOWN', message: 'db7.internal unreachable', stack: 'at x' });
    expect(plain).toEqual({
      type: 'about:blank',
      title: 'Internal Server Error',
      status: 500,
      detail: 'The upstream service failed to handle the request.',
      instance: '/requests/req-1',
      request_id: 'req-1',
    });
    const dropped: string[] = [];
    const problem = upstreamProblem(
      503,
      'application/problem+json',
      json({
        type: 'https://e.example/db',
        title: 'DB down',
        status: 503,
        detail: 'db7',
        trace: 'x',
        code: 'c',
      }),
      'req-2',
      dropped,
    );
    expect(Object.keys(problem).sort()).toEqual([
      'detail',
      'instance',
      'request_id',
      'status',
      'title',
      'type',
    ]);
    expect(problem.detail).toBe('The upstream service failed to handle the request.');
    expect(dropped.sort()).toEqual(['code', 'detail', 'trace']);
  });
});
