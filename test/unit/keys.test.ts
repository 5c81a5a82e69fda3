import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { crc32, generateKey, looksLikeKey, maskKey, parseKey } from '../../src/keys/format.js';
import { hashKey, sameHash } from '../../src/keys/hash.js';
import { SecretBox } from '../../src/keys/secret-box.js';

describe('key format', () => {
  it('makes <prefix>_<env>_<36 base62> keys that pass their own checksum', () => {
    for (let i = 0; i < 200; i++) {
      const key = generateKey('tg', i % 2 ? 'live' : 'test');
      expect(key).toMatch(/^tg_(live|test)_[0-9A-Za-z]{36}$/);
      expect(parseKey(key, 'tg')).toEqual({ environment: i % 2 ? 'live' : 'test', last4: key.slice(-4) });
    }
  });

  it('refuses any single-character change without a lookup (property)', () => {
    const key = generateKey('tg');
    const alphabet = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
    fc.assert(
      fc.property(fc.integer({ min: 8, max: key.length - 1 }), fc.constantFrom(...alphabet), (pos, ch) => {
        fc.pre(key[pos] !== ch);
        const typo = key.slice(0, pos) + ch + key.slice(pos + 1);
        expect(parseKey(typo, 'tg')).toBeUndefined();
      }),
    );
  });

  it('refuses other prefixes, environments, lengths and characters', () => {
    const key = generateKey('tg');
    expect(parseKey(key, 'xx')).toBeUndefined();
    expect(parseKey(key.replace('_live_', '_prod_'), 'tg')).toBeUndefined();
    expect(parseKey(key.slice(0, -1), 'tg')).toBeUndefined();
    expect(parseKey(key.slice(0, 20) + '-' + key.slice(21), 'tg')).toBeUndefined();
    expect(parseKey('eyJhbGciOiJIUzI1NiJ9.e30.x', 'tg')).toBeUndefined();
  });

  it('CRC-32 matches the standard check value', () => {
    expect(crc32('123456789')).toBe(0xcbf43926);
  });

  it('masks as prefix, environment and last 4', () => {
    expect(maskKey('tg', 'live', 'AbCd')).toBe('tg_live_…AbCd');
    expect(looksLikeKey('tg_test_abc', 'tg')).toBe(true);
    expect(looksLikeKey('eyJ.x.y', 'tg')).toBe(false);
  });

  it('hashes with SHA-256 and compares in constant time', () => {
    const h = hashKey('tg_live_x');
    expect(h).toMatch(/^[0-9a-f]{64}$/);
    expect(sameHash(h, hashKey('tg_live_x'))).toBe(true);
    expect(sameHash(h, hashKey('tg_live_y'))).toBe(false);
    expect(sameHash(h, 'ab')).toBe(false);
  });
});

describe('SecretBox', () => {
  it('seals with AES-256-GCM and opens only with the same key', () => {
    const box = new SecretBox('a-secret-key-of-at-least-32-characters!!');
    const sealed = box.seal('whsec_abc');
    expect(sealed).toMatch(/^v1\.[\w-]+\.[\w-]+\.[\w-]+$/);
    expect(sealed).not.toContain('whsec_abc');
    expect(box.open(sealed)).toBe('whsec_abc');
    expect(box.seal('whsec_abc')).not.toBe(sealed); // fresh IV each time
    expect(new SecretBox('another-secret-key-of-32-characters!!!!').open(sealed)).toBeUndefined();
    const tampered = sealed.slice(0, -2) + (sealed.endsWith('A') ? 'BB' : 'AA');
    expect(box.open(tampered)).toBeUndefined();
    expect(new SecretBox(undefined).ephemeral).toBe(true);
  });
});
