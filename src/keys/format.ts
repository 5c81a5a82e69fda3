import { randomBytes } from 'node:crypto';

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
/** Random base62 characters in a key body, before the 6-character checksum (≈178 bits). */
const RANDOM_CHARS = 30;
const CHECKSUM_CHARS = 6;

export type KeyEnvironment = 'live' | 'test';

/** `count` base62 characters from crypto-random bytes (rejection sampling: no modulo bias). */
export function randomBase62(count: number): string {
  let out = '';
  while (out.length < count) {
    for (const byte of randomBytes(count * 2)) {
      if (byte < 248) out += BASE62[byte % 62];
      if (out.length === count) break;
    }
  }
  return out;
}

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32 (IEEE) of an ASCII string. */
export function crc32(text: string): number {
  let crc = 0xffffffff;
  for (let i = 0; i < text.length; i++) crc = CRC_TABLE[(crc ^ text.charCodeAt(i)) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

function checksum(text: string): string {
  let n = crc32(text);
  let out = '';
  for (let i = 0; i < CHECKSUM_CHARS; i++) {
    out = BASE62[n % 62]! + out;
    n = Math.floor(n / 62);
  }
  return out;
}

/**
 * A new API key: `<prefix>_<live|test>_<30 random base62><6-char CRC-32 checksum of the rest>`.
 * The checksum (as GitHub's tokens have) lets the gateway refuse a mistyped or made-up key
 * without a store lookup, and lets secret scanners recognise a leaked key with few false positives.
 */
export function generateKey(prefix: string, environment: KeyEnvironment = 'live'): string {
  const head = `${prefix}_${environment}_${randomBase62(RANDOM_CHARS)}`;
  return head + checksum(head);
}

export interface ParsedKey {
  environment: KeyEnvironment;
  /** The last 4 characters, for masking. */
  last4: string;
}

/** Whether `key` has the shape and a valid checksum for `prefix` (no store lookup involved). */
export function parseKey(key: string, prefix: string): ParsedKey | undefined {
  // prefix _ env _ body(32+): cheap checks first; a JWT or garbage fails here.
  if (key.length < prefix.length + 6 + 32 || key.length > prefix.length + 6 + 128) return undefined;
  if (!key.startsWith(prefix) || key.charCodeAt(prefix.length) !== 95 /* _ */) return undefined;
  const env = key.slice(prefix.length + 1, prefix.length + 5);
  if ((env !== 'live' && env !== 'test') || key.charCodeAt(prefix.length + 5) !== 95) return undefined;
  const body = key.slice(prefix.length + 6);
  for (let i = 0; i < body.length; i++) {
    const c = body.charCodeAt(i);
    const alnum = (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122);
    if (!alnum) return undefined;
  }
  const head = key.slice(0, key.length - CHECKSUM_CHARS);
  if (checksum(head) !== key.slice(-CHECKSUM_CHARS)) return undefined;
  return { environment: env, last4: key.slice(-4) };
}

/** Whether a bearer value looks like one of our API keys (as opposed to a JWT). */
export function looksLikeKey(value: string, prefix: string): boolean {
  return value.startsWith(`${prefix}_live_`) || value.startsWith(`${prefix}_test_`);
}

/** `tg_live_…AbCd`: prefix, environment and the last 4 characters. */
export function maskKey(prefix: string, environment: KeyEnvironment, last4: string): string {
  return `${prefix}_${environment}_…${last4}`;
}

/** A key record id: `key_` and 16 base62 characters. */
export function newKeyId(): string {
  return `key_${randomBase62(16)}`;
}
