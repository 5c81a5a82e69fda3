import { describe, expect, it } from 'vitest';
import { createHash, createHmac } from 'node:crypto';
import fc from 'fast-check';
// @ts-expect-error -- the console is plain JavaScript, served as is
import { hex, hmacSha256, sha256, signRequest, utf8 } from '../../console/sha256.js';
import { sign } from '../../src/policies/signature/signature.js';

describe("the console's signing code", () => {
  it('computes SHA-256 and HMAC-SHA256 exactly as node:crypto does (property)', () => {
    fc.assert(
      fc.property(
        fc.string({ maxLength: 300 }),
        fc.string({ maxLength: 120 }),
        (message: string, key: string) => {
          expect(hex(sha256(utf8(message)))).toBe(createHash('sha256').update(message).digest('hex'));
          expect(hex(hmacSha256(utf8(key), utf8(message)))).toBe(
            createHmac('sha256', key).update(message).digest('hex'),
          );
        },
      ),
      { numRuns: 300 },
    );
  });

  it('produces the gateway’s own signatures, the README test vector included', () => {
    const v = signRequest({
      secret: 'whsec_test_vector_0123456789abcdef',
      timestamp: '1700000000',
      method: 'POST',
      pathAndQuery: '/v1/orders?expand=items',
      body: '{"sku":"A1","qty":2}',
    });
    expect(v.signature).toBe('v1=b7806ac6420ecf74a0194abe739b7b6e4c4d3ae912073a494221917c1fadbc3f');
    fc.assert(
      fc.property(
        fc.string({ minLength: 1, maxLength: 80 }),
        fc.string({ maxLength: 200 }),
        (secret: string, body: string) => {
          const js = signRequest({ secret, timestamp: '1', method: 'put', pathAndQuery: '/a?b=c', body });
          expect(js.signature).toBe(sign(secret, '1', 'PUT', '/a?b=c', body));
        },
      ),
      { numRuns: 100 },
    );
  });
});
