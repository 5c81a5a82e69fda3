import { randomUUID } from 'node:crypto';
import type { Clock } from '../../shared/clock.js';
import type { RedisHandle } from '../../shared/redis.js';

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

/** In process memory, with expiry by the injected clock. */
export class MemoryIdempotencyStore implements IdempotencyStore {
  readonly #entries = new Map<string, { entry: Entry; expiresAt: number }>();
  readonly #clock: Clock;
  #ops = 0;

  constructor(clock: Clock) {
    this.#clock = clock;
  }

  #live(key: string): Entry | undefined {
    const found = this.#entries.get(key);
    if (found === undefined) return undefined;
    if (found.expiresAt <= this.#clock.now()) {
      this.#entries.delete(key);
      return undefined;
    }
    return found.entry;
  }

  begin(key: string, fingerprint: string, lockTtlMs: number): BeginResult {
    if (++this.#ops % 1000 === 0) this.#sweep();
    const existing = this.#live(key);
    if (existing !== undefined) return existing;
    const owner = randomUUID();
    this.#entries.set(key, {
      entry: { state: 'locked', fingerprint, owner },
      expiresAt: this.#clock.now() + lockTtlMs,
    });
    return { state: 'acquired', owner };
  }

  complete(
    key: string,
    owner: string,
    fingerprint: string,
    response: StoredResponse,
    ttlMs: number,
  ): Promise<void> {
    const existing = this.#live(key);
    // Our lock, or none left (it expired and nobody took the key since): the result is ours to keep.
    if (existing === undefined || (existing.state === 'locked' && existing.owner === owner))
      this.#entries.set(key, {
        entry: { state: 'done', fingerprint, response },
        expiresAt: this.#clock.now() + ttlMs,
      });
    return Promise.resolve();
  }

  release(key: string, owner: string): Promise<void> {
    const existing = this.#live(key);
    if (existing?.state === 'locked' && existing.owner === owner) this.#entries.delete(key);
    return Promise.resolve();
  }

  extend(key: string, owner: string, lockTtlMs: number): Promise<void> {
    const found = this.#entries.get(key);
    const existing = this.#live(key);
    if (found !== undefined && existing?.state === 'locked' && existing.owner === owner)
      found.expiresAt = this.#clock.now() + lockTtlMs;
    return Promise.resolve();
  }

  #sweep(): void {
    const now = this.#clock.now();
    for (const [k, v] of this.#entries) if (v.expiresAt <= now) this.#entries.delete(k);
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
