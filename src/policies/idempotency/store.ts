import { randomUUID } from 'node:crypto';
import type { Clock } from '../../core/clock.js';
import type { RedisHandle } from '../../shared/redis.js';
import { Problem } from '../../problems/problem.js';
import { idempotencyStoreSchema, type IdempotencyStoreConfig } from './schema.js';

/** A response as stored for replay. */
export interface StoredResponse {
  status: number;
  /** Flat `[name, value, …]`, end-to-end headers only. */
  headers: string[];
  /** The body, base64. */
  body: string;
}

/** What the store holds under an idempotency key: a lock while the first request runs, then its response. */
export type Entry =
  | { state: 'locked'; fingerprint: string; owner: string }
  | { state: 'done'; fingerprint: string; response: StoredResponse };

export type BeginResult = { state: 'acquired'; owner: string } | Entry;

/**
 * Where idempotency records live. `begin` is atomic: exactly one caller acquires a free key; the
 * others see the lock (in flight) or the stored response. Memory and Redis twins pass one
 * contract suite.
 */
export interface IdempotencyStore {
  begin(key: string, fingerprint: string, lockTtlMs: number): BeginResult | Promise<BeginResult>;
  /** Stores the response (for `ttlMs`) in place of the caller's own lock. */
  complete(
    key: string,
    owner: string,
    fingerprint: string,
    response: StoredResponse,
    ttlMs: number,
  ): Promise<void>;
  /** Drops the caller's own lock without storing anything (so the client may retry). */
  release(key: string, owner: string): Promise<void>;
  /** Pushes the expiry of the caller's own lock to `lockTtlMs` from now (a long response still running). */
  extend(key: string, owner: string, lockTtlMs: number): Promise<void>;
}

interface Held {
  entry: Entry;
  expiresAt: number;
  /** Approximate size (key, fingerprint, owner or response), for `maxBytes`. */
  bytes: number;
  caller: string;
}

/** What one caller holds (the key's hash tag: the stage puts the caller's scope there). */
interface Holdings {
  entries: number;
  bytes: number;
}

/** The caller a key belongs to: its `{hash tag}` (the idempotency stage's scope), else the key. */
function callerOf(key: string): string {
  const open = key.indexOf('{');
  const close = open === -1 ? -1 : key.indexOf('}', open + 1);
  return close === -1 ? key : key.slice(open + 1, close);
}

function sizeOf(key: string, entry: Entry): number {
  let bytes = key.length + entry.fingerprint.length + 64;
  if (entry.state === 'locked') return bytes + entry.owner.length;
  bytes += entry.response.body.length;
  for (const h of entry.response.headers) bytes += h.length;
  return bytes;
}

/**
 * In process memory, with expiry by the injected clock, and bounded: at most `maxEntries` keys and
 * `maxBytes`, of which one caller holds at most `callerShare`. Full, a new key is refused (503
 * `service-unavailable`, Retry-After until the first entry expires) — a lock or a kept response is
 * never dropped to make room: dropping a lock lets a retry run twice, dropping a kept response lets
 * a retry of a request whose answer was lost (the client hung up) run twice. Expired entries are
 * swept when room is needed (at most once per expiry) and every 1000 operations.
 */
export class MemoryIdempotencyStore implements IdempotencyStore {
  readonly #entries = new Map<string, Held>();
  readonly #callers = new Map<string, Holdings>();
  readonly #clock: Clock;
  readonly #maxEntries: number;
  readonly #maxBytes: number;
  readonly #callerEntries: number;
  readonly #callerBytes: number;
  #bytes = 0;
  /** No entry expires before this (a lower bound; exact after a sweep). */
  #nextExpiry = Infinity;
  #ops = 0;

  constructor(clock: Clock, limits: IdempotencyStoreConfig = idempotencyStoreSchema.parse({})) {
    this.#clock = clock;
    this.#maxEntries = limits.maxEntries;
    this.#maxBytes = limits.maxBytes;
    this.#callerEntries = Math.max(1, Math.floor(limits.maxEntries * limits.callerShare));
    this.#callerBytes = Math.max(1, Math.floor(limits.maxBytes * limits.callerShare));
  }

  /** Keys held (locks and kept responses), and their approximate bytes. */
  get size(): { entries: number; bytes: number } {
    return { entries: this.#entries.size, bytes: this.#bytes };
  }

  #live(key: string): Entry | undefined {
    const found = this.#entries.get(key);
    if (found === undefined) return undefined;
    if (found.expiresAt <= this.#clock.now()) {
      this.#drop(key, found);
      return undefined;
    }
    return found.entry;
  }

  begin(key: string, fingerprint: string, lockTtlMs: number): BeginResult {
    if (++this.#ops % 1000 === 0) this.#sweep(this.#clock.now());
    const existing = this.#live(key);
    if (existing !== undefined) return existing;
    const owner = randomUUID();
    const entry: Entry = { state: 'locked', fingerprint, owner };
    const caller = callerOf(key);
    const bytes = sizeOf(key, entry);
    const now = this.#clock.now();
    if (!this.#fits(caller, 1, bytes, now)) {
      const retryAfter = Math.max(1, Math.ceil((this.#nextExpiry - now) / 1000));
      throw new Problem('service-unavailable', {
        detail: 'Too many idempotency records are held; try again later.',
        headers: { 'retry-after': String(Number.isFinite(retryAfter) ? retryAfter : 1) },
        cause: new Error(`idempotency store full (${this.#entries.size} keys, ${this.#bytes} bytes)`),
      });
    }
    this.#put(key, { entry, expiresAt: now + lockTtlMs, bytes, caller });
    return { state: 'acquired', owner };
  }

  complete(
    key: string,
    owner: string,
    fingerprint: string,
    response: StoredResponse,
    ttlMs: number,
  ): Promise<void> {
    const found = this.#entries.get(key);
    const existing = this.#live(key);
    // Our lock, or none left (it expired and nobody took the key since): the result is ours to keep.
    if (existing === undefined || (existing.state === 'locked' && existing.owner === owner)) {
      const entry: Entry = { state: 'done', fingerprint, response };
      const caller = callerOf(key);
      const bytes = sizeOf(key, entry);
      const ours = existing === undefined ? undefined : found;
      // The lock's own room counts as ours: only the growth must fit.
      const now = this.#clock.now();
      if (this.#fits(caller, ours ? 0 : 1, bytes - (ours?.bytes ?? 0), now))
        this.#put(key, { entry, expiresAt: now + ttlMs, bytes, caller });
      // It does not fit: not kept (as a response over maxResponseBytes), and the key is free again.
      else if (ours !== undefined) this.#drop(key, ours);
    }
    return Promise.resolve();
  }

  release(key: string, owner: string): Promise<void> {
    const found = this.#entries.get(key);
    const existing = this.#live(key);
    if (found !== undefined && existing?.state === 'locked' && existing.owner === owner)
      this.#drop(key, found);
    return Promise.resolve();
  }

  extend(key: string, owner: string, lockTtlMs: number): Promise<void> {
    const found = this.#entries.get(key);
    const existing = this.#live(key);
    if (found !== undefined && existing?.state === 'locked' && existing.owner === owner)
      found.expiresAt = this.#clock.now() + lockTtlMs;
    return Promise.resolve();
  }

  /** Whether `entries` more keys and `bytes` more bytes fit, for this caller and overall (sweeping if that can help). */
  #fits(caller: string, entries: number, bytes: number, now: number): boolean {
    const fits = () => {
      const mine = this.#callers.get(caller);
      return (
        this.#entries.size + entries <= this.#maxEntries &&
        this.#bytes + bytes <= this.#maxBytes &&
        (mine?.entries ?? 0) + entries <= this.#callerEntries &&
        (mine?.bytes ?? 0) + bytes <= this.#callerBytes
      );
    };
    if (fits()) return true;
    // Full: only entries that expired may make room — and none has, before `nextExpiry`.
    if (now < this.#nextExpiry) return false;
    this.#sweep(now);
    return fits();
  }

  #put(key: string, held: Held): void {
    const before = this.#entries.get(key);
    if (before !== undefined) this.#account(before, -1);
    this.#entries.set(key, held);
    this.#account(held, 1);
    if (held.expiresAt < this.#nextExpiry) this.#nextExpiry = held.expiresAt;
  }

  #drop(key: string, held: Held): void {
    this.#entries.delete(key);
    this.#account(held, -1);
  }

  #account(held: Held, sign: 1 | -1): void {
    this.#bytes += sign * held.bytes;
    let mine = this.#callers.get(held.caller);
    if (mine === undefined) this.#callers.set(held.caller, (mine = { entries: 0, bytes: 0 }));
    mine.entries += sign;
    mine.bytes += sign * held.bytes;
    if (mine.entries === 0) this.#callers.delete(held.caller);
  }

  #sweep(now: number): void {
    let next = Infinity;
    for (const [k, v] of this.#entries) {
      if (v.expiresAt <= now) this.#drop(k, v);
      else if (v.expiresAt < next) next = v.expiresAt;
    }
    this.#nextExpiry = next;
  }
}

// Take the key if it is free; else say what holds it. Atomic, so two instances cannot both win.
const BEGIN_LUA = `
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
`;
// Replace our own lock (or nothing) with the result; never someone else's lock.
const COMPLETE_LUA = `
local v = redis.call('GET', KEYS[1])
if v and string.find(v, ARGV[1], 1, true) == nil then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
`;
const RELEASE_LUA = `
local v = redis.call('GET', KEYS[1])
if v and string.find(v, ARGV[1], 1, true) then redis.call('DEL', KEYS[1]) end
return 1
`;

// Only our own lock, and only while it is a lock (never a stored result).
const EXTEND_LUA = `
local v = redis.call('GET', KEYS[1])
if v and string.find(v, ARGV[1], 1, true) and string.find(v, '"state":"locked"', 1, true) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
`;

type Scripts = {
  tollgateIdemBegin(key: string, lock: string, ttl: number): Promise<string | null>;
  tollgateIdemComplete(key: string, ownerMarker: string, record: string, ttl: number): Promise<number>;
  tollgateIdemRelease(key: string, ownerMarker: string): Promise<number>;
  tollgateIdemExtend(key: string, ownerMarker: string, ttl: number): Promise<number>;
};

/**
 * In Redis: the lock is taken with an atomic get-or-set (SET … PX lockTtl when the key is free), so
 * concurrent identical requests on several instances reach the upstream once. A lock whose owner
 * died expires by its TTL (bounded by the route's upstream timeout, not by the 24 h record TTL).
 */
export class RedisIdempotencyStore implements IdempotencyStore {
  readonly #redis: RedisHandle;

  constructor(redis: RedisHandle) {
    this.#redis = redis;
    const client = redis.client as unknown as {
      defineCommand(name: string, def: { numberOfKeys: number; lua: string }): void;
    };
    client.defineCommand('tollgateIdemBegin', { numberOfKeys: 1, lua: BEGIN_LUA });
    client.defineCommand('tollgateIdemComplete', { numberOfKeys: 1, lua: COMPLETE_LUA });
    client.defineCommand('tollgateIdemRelease', { numberOfKeys: 1, lua: RELEASE_LUA });
    client.defineCommand('tollgateIdemExtend', { numberOfKeys: 1, lua: EXTEND_LUA });
  }

  #scripts(): Scripts {
    return this.#redis.client as unknown as Scripts;
  }

  async begin(key: string, fingerprint: string, lockTtlMs: number): Promise<BeginResult> {
    if (!this.#redis.available) {
      // Connecting at start: wait (bounded). Down: fail at once rather than wait for a timeout.
      if (this.#redis.state === 'connecting') await this.#redis.whenReady();
      else throw new Error('redis unavailable');
    }
    const owner = randomUUID();
    const lock: Entry = { state: 'locked', fingerprint, owner };
    let existing: string | null;
    try {
      existing = await this.#scripts().tollgateIdemBegin(
        this.#redis.key(key),
        JSON.stringify(lock),
        lockTtlMs,
      );
    } catch (err) {
      this.#redis.recordError();
      throw err;
    }
    if (existing === null) return { state: 'acquired', owner };
    return JSON.parse(existing) as Entry;
  }

  async complete(
    key: string,
    owner: string,
    fingerprint: string,
    response: StoredResponse,
    ttlMs: number,
  ): Promise<void> {
    const entry: Entry = { state: 'done', fingerprint, response };
    await this.#scripts().tollgateIdemComplete(
      this.#redis.key(key),
      `"owner":"${owner}"`,
      JSON.stringify(entry),
      ttlMs,
    );
  }

  async release(key: string, owner: string): Promise<void> {
    await this.#scripts().tollgateIdemRelease(this.#redis.key(key), `"owner":"${owner}"`);
  }

  async extend(key: string, owner: string, lockTtlMs: number): Promise<void> {
    await this.#scripts().tollgateIdemExtend(this.#redis.key(key), `"owner":"${owner}"`, lockTtlMs);
  }
}
