import { hash } from 'node:crypto';

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
  // One-shot `crypto.hash` (Node ≥ 20.12): no Hash object per request, ~1 µs less than createHash.
  return hash('sha256', key, 'hex');
}

/**
 * Constant-time equality of two hex digests of the same length: every character is compared, no
 * early exit. Hand-written instead of `crypto.timingSafeEqual`, which needs both as Buffers (two
 * allocations and hex decodes, ~1 µs on every API-key request, after a lookup by this very hash).
 */
export function sameHash(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}
