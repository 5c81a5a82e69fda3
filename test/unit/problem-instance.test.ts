import { describe, expect, it } from 'vitest';
import { Problem } from '../../src/problems/problem.js';
import { ProblemWriter, instanceFunction } from '../../src/problems/problem-details.js';
import { upstreamProblem } from '../../src/problems/upstream-errors.js';

// `instance` links are configurable in library mode (issue 21): a base, a function, or the default.
describe('problem instance links', () => {
  it('default /requests/<id>; a base gets the id URL-encoded; a function is used as it is', () => {
    expect(instanceFunction(undefined)('abc')).toBe('/requests/abc');
    expect(instanceFunction('https://api.example.com/requests/')('a/b?c#d')).toBe(
      'https://api.example.com/requests/a%2Fb%3Fc%23d',
    );
    expect(instanceFunction((id) => `urn:request:${id}`)('x1')).toBe('urn:request:x1');
  });

  it('the writer uses it for its own problems and for rewritten upstream errors', () => {
    const writer = new ProblemWriter({ typeBase: 'https://e.example/', instance: 'https://logs.example/r/' });
    expect(writer.document(new Problem('not-found'), 'id-1')).toMatchObject({
      instance: 'https://logs.example/r/id-1',
      request_id: 'id-1',
    });
    const doc = upstreamProblem(502, 'text/plain', Buffer.from('boom'), 'id-2', [], writer.instanceOf);
    expect(doc.instance).toBe('https://logs.example/r/id-2');
    expect(
      new ProblemWriter({ typeBase: 'https://e.example/' }).document(new Problem('forbidden'), 'z').instance,
    ).toBe('/requests/z');
  });
});
