import { createHash, timingSafeEqual } from 'node:crypto';

/**
 * The stored form of an API key: SHA-256, hex.
 *
 * A fast hash is right here, and a slow password KDF (bcrypt, scrypt, argon2) is not: the key
 * carries ~178 random bits, so no dictionary or brute force against a leaked hash is feasible,
 * and the gateway must check a key on every request — a deliberately slow hash would cost
 * milliseconds per request and invite denial of service. Salting is unnecessary for the same
 * reason (no two keys share a value to precompute against), and an unsalted hash lets the key be
 * looked up by its hash directly.
 */
export function hashKey(key: string): string {
  return createHash('sha256').update(key).digest('hex');
}

/** Constant-time equality of two hex digests of the same length. */
export function sameHash(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  return timingSafeEqual(Buffer.from(a, 'hex'), Buffer.from(b, 'hex'));
}
