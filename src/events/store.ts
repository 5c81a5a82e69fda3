import { createHash } from 'node:crypto';
import type { EventType } from '../core/events.js';
import type { RedisHandle } from '../shared/redis.js';

/** One event on its way to one receiver. */
export interface Delivery {
  /** `dlv_…`, unique per (event, receiver). */
  id: string;
  /** The event id, sent as `webhook-id` (the same on every attempt: receivers dedupe by it). */
  eventId: string;
  type: EventType;
  url: string;
  /** The JSON body `{type, timestamp, data}`, exactly as signed and sent. */
  body: string;
  /** Receiver + order key: deliveries of one group are attempted one at a time, in order. */
  group: string;
  /** Epoch ms the event was raised (the retry schedule runs from here). */
  createdAt: number;
  /** Attempts made so far. */
  attempts: number;
  lastStatus: number | null;
  lastError: string | null;
}

/** One attempt, as `GET /webhooks/deliveries` lists it. */
export interface AttemptRecord {
  time: string;
  delivery_id: string;
  event_id: string;
  type: EventType;
  url: string;
  /** The receiver's HTTP status; null when it did not answer. */
  status: number | null;
  error: string | null;
  attempts: number;
  outcome: 'delivered' | 'retry' | 'failed' | 'dropped';
  /** When the next attempt is due (outcome `retry`), else null. */
  next_retry_at: string | null;
}

/**
 * The durable side of webhook delivery: a queue per group (receiver + order key) of which only the
 * head is due, a schedule of heads by next attempt time, and claims with a lease — a delivery
 * claimed by an instance that dies is claimed again by another once its lease runs out. Bounded:
 * past `maxDepth` the oldest deliveries are dropped (and the count returned).
 */
export interface DeliveryStore {
  enqueue(deliveries: readonly Delivery[], now: number): Promise<{ dropped: number; depth: number }>;
  /** Up to `limit` due heads, each leased until `leaseUntil` (epoch ms). */
  claim(now: number, limit: number, leaseUntil: number): Promise<{ deliveries: Delivery[]; depth: number }>;
  /** The delivery is over (delivered, given up or dropped): its group's next one becomes due now. */
  finish(d: Delivery, attempt: AttemptRecord, now: number): Promise<void>;
  /** Tried and failed: due again at `nextAt`. */
  retry(d: Delivery, attempt: AttemptRecord, nextAt: number): Promise<void>;
  /** Newest first. */
  recent(limit: number): Promise<AttemptRecord[]>;
  /** True the first time `key` is seen within `ttlMs` (across instances with Redis). */
  once(key: string, ttlMs: number, now: number): Promise<boolean>;
}

/** Attempts kept for `GET /webhooks/deliveries`. */
export const RECENT_ATTEMPTS = 500;

/** A short, fixed-length name for a group (its parts are a URL and an id, of any length). */
export function groupOf(url: string, orderKey: string): string {
  return createHash('sha256').update(url).update('\n').update(orderKey).digest('base64url').slice(0, 22);
}

/** The in-memory twin: one process, same rules (per-group order, lease, cap). */
export class MemoryDeliveryStore implements DeliveryStore {
  readonly #maxDepth: number;
  /** In enqueue order (Map iteration order): the first is the oldest. */
  readonly #all = new Map<string, Delivery>();
  readonly #groups = new Map<string, string[]>();
  /** Heads only: id → due time. */
  readonly #due = new Map<string, number>();
  readonly #recent: AttemptRecord[] = [];
  readonly #once = new Map<string, number>();

  constructor(options: { maxDepth: number }) {
    this.#maxDepth = options.maxDepth;
  }

  enqueue(deliveries: readonly Delivery[], now: number): Promise<{ dropped: number; depth: number }> {
    for (const d of deliveries) {
      this.#all.set(d.id, d);
      let queue = this.#groups.get(d.group);
      if (queue === undefined) this.#groups.set(d.group, (queue = []));
      queue.push(d.id);
      if (queue.length === 1) this.#due.set(d.id, now);
    }
    let dropped = 0;
    while (this.#all.size > this.#maxDepth) {
      const oldest = this.#all.values().next().value!;
      this.#remove(oldest, now);
      dropped++;
    }
    return Promise.resolve({ dropped, depth: this.#all.size });
  }

  claim(now: number, limit: number, leaseUntil: number): Promise<{ deliveries: Delivery[]; depth: number }> {
    const due = [...this.#due].filter(([, at]) => at <= now).sort((a, b) => a[1] - b[1]);
    const out: Delivery[] = [];
    for (const [id] of due.slice(0, limit)) {
      this.#due.set(id, leaseUntil);
      out.push({ ...this.#all.get(id)! });
    }
    return Promise.resolve({ deliveries: out, depth: this.#all.size });
  }

  finish(d: Delivery, attempt: AttemptRecord, now: number): Promise<void> {
    this.#log(attempt);
    const queue = this.#groups.get(d.group);
    if (queue?.[0] === d.id) this.#remove(d, now);
    return Promise.resolve();
  }

  retry(d: Delivery, attempt: AttemptRecord, nextAt: number): Promise<void> {
    this.#log(attempt);
    if (this.#all.has(d.id) && this.#due.has(d.id)) {
      this.#all.set(d.id, d);
      this.#due.set(d.id, nextAt);
    }
    return Promise.resolve();
  }

  recent(limit: number): Promise<AttemptRecord[]> {
    return Promise.resolve(this.#recent.slice(0, limit));
  }

  once(key: string, ttlMs: number, now: number): Promise<boolean> {
    const until = this.#once.get(key);
    if (until !== undefined && until > now) return Promise.resolve(false);
    if (this.#once.size > 100_000) for (const [k, u] of this.#once) if (u <= now) this.#once.delete(k);
    this.#once.set(key, now + ttlMs);
    return Promise.resolve(true);
  }

  /** Removes a delivery wherever it is in its group; a removed head hands over to the next. */
  #remove(d: Delivery, now: number): void {
    this.#all.delete(d.id);
    const wasHead = this.#due.delete(d.id);
    const queue = this.#groups.get(d.group);
    if (queue === undefined) return;
    const at = queue.indexOf(d.id);
    if (at !== -1) queue.splice(at, 1);
    if (queue.length === 0) this.#groups.delete(d.group);
    else if (wasHead || at === 0) this.#due.set(queue[0]!, now);
  }

  #log(attempt: AttemptRecord): void {
    this.#recent.unshift(attempt);
    if (this.#recent.length > RECENT_ATTEMPTS) this.#recent.length = RECENT_ATTEMPTS;
  }
}

/*
 * Redis layout, every key under one `{webhooks}` hash tag (one Cluster slot):
 *   <base>:d:<id>      the delivery (JSON)
 *   <base>:g:<group>   list of delivery ids of one group, oldest first (the head is the one due)
 *   <base>:due         ZSET of group heads by next attempt time (a claim moves it to the lease's end)
 *   <base>:all         ZSET of every queued delivery by enqueue order (depth; the oldest is dropped)
 *   <base>:seq         enqueue order counter
 *   <base>:attempts    the newest attempts (JSON), capped
 *   <base>:once:<key>  SET NX PX: an event raised once per key
 */

const ENQUEUE_LUA = `
local base, cap, now = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local i = 4
while i <= #ARGV do
  local id, group, json = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  redis.call('SET', base .. ':d:' .. id, json)
  redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), id)
  if redis.call('RPUSH', base .. ':g:' .. group, id) == 1 then redis.call('ZADD', KEYS[1], now, id) end
  i = i + 3
end
local dropped = 0
while redis.call('ZCARD', KEYS[2]) > cap do
  local oldest = redis.call('ZPOPMIN', KEYS[2])[1]
  local json = redis.call('GET', base .. ':d:' .. oldest)
  redis.call('DEL', base .. ':d:' .. oldest)
  redis.call('ZREM', KEYS[1], oldest)
  if json then
    local g = base .. ':g:' .. cjson.decode(json).group
    redis.call('LREM', g, 1, oldest)
    local head = redis.call('LINDEX', g, 0)
    if head then redis.call('ZADD', KEYS[1], 'NX', now, head) end
  end
  dropped = dropped + 1
end
return { dropped, redis.call('ZCARD', KEYS[2]) }
`;

const CLAIM_LUA = `
local base = ARGV[1]
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
local out = { redis.call('ZCARD', KEYS[2]) }
for _, id in ipairs(ids) do
  local json = redis.call('GET', base .. ':d:' .. id)
  if json then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[4], id)
    out[#out + 1] = json
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
`;

const FINISH_LUA = `
local base, id, group, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
redis.call('LPUSH', KEYS[3], ARGV[5])
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[6]) - 1)
local g = base .. ':g:' .. group
if redis.call('LINDEX', g, 0) ~= id then return 0 end
redis.call('LPOP', g)
redis.call('DEL', base .. ':d:' .. id)
redis.call('ZREM', KEYS[1], id)
redis.call('ZREM', KEYS[2], id)
local head = redis.call('LINDEX', g, 0)
if head then redis.call('ZADD', KEYS[1], now, head) end
return 1
`;

const RETRY_LUA = `
local base, id = ARGV[1], ARGV[2]
redis.call('LPUSH', KEYS[2], ARGV[5])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[6]) - 1)
if redis.call('EXISTS', base .. ':d:' .. id) == 0 then return 0 end
redis.call('SET', base .. ':d:' .. id, ARGV[3])
redis.call('ZADD', KEYS[1], 'XX', ARGV[4], id)
return 1
`;

type WebhookScripts = {
  tollgateWebhookEnqueue(...args: Array<string | number>): Promise<[number, number]>;
  tollgateWebhookClaim(...args: Array<string | number>): Promise<[number, ...string[]]>;
  tollgateWebhookFinish(...args: Array<string | number>): Promise<number>;
  tollgateWebhookRetry(...args: Array<string | number>): Promise<number>;
};

/**
 * Deliveries in Redis, shared by every instance: a restart or a crash loses nothing queued, and
 * any instance delivers what another queued or left half-done (its lease runs out).
 */
export class RedisDeliveryStore implements DeliveryStore {
  readonly #redis: RedisHandle;
  readonly #maxDepth: number;
  readonly #base: string;
  readonly #due: string;
  readonly #all: string;
  readonly #seq: string;
  readonly #attempts: string;

  constructor(options: { redis: RedisHandle; maxDepth: number }) {
    this.#redis = options.redis;
    this.#maxDepth = options.maxDepth;
    this.#base = options.redis.key('{webhooks}');
    this.#due = `${this.#base}:due`;
    this.#all = `${this.#base}:all`;
    this.#seq = `${this.#base}:seq`;
    this.#attempts = `${this.#base}:attempts`;
    const client = options.redis.client as unknown as {
      defineCommand(name: string, def: { lua: string }): void;
    };
    client.defineCommand('tollgateWebhookEnqueue', { lua: ENQUEUE_LUA });
    client.defineCommand('tollgateWebhookClaim', { lua: CLAIM_LUA });
    client.defineCommand('tollgateWebhookFinish', { lua: FINISH_LUA });
    client.defineCommand('tollgateWebhookRetry', { lua: RETRY_LUA });
  }

  get #scripts(): WebhookScripts {
    return this.#redis.client as unknown as WebhookScripts;
  }

  async enqueue(deliveries: readonly Delivery[], now: number): Promise<{ dropped: number; depth: number }> {
    const args: Array<string | number> = [
      3,
      this.#due,
      this.#all,
      this.#seq,
      this.#base,
      this.#maxDepth,
      now,
    ];
    for (const d of deliveries) args.push(d.id, d.group, JSON.stringify(d));
    const [dropped, depth] = await this.#scripts.tollgateWebhookEnqueue(...args);
    return { dropped: Number(dropped), depth: Number(depth) };
  }

  async claim(
    now: number,
    limit: number,
    leaseUntil: number,
  ): Promise<{ deliveries: Delivery[]; depth: number }> {
    const [depth, ...json] = await this.#scripts.tollgateWebhookClaim(
      2,
      this.#due,
      this.#all,
      this.#base,
      now,
      limit,
      leaseUntil,
    );
    return { deliveries: json.map((j) => JSON.parse(j) as Delivery), depth: Number(depth) };
  }

  async finish(d: Delivery, attempt: AttemptRecord, now: number): Promise<void> {
    await this.#scripts.tollgateWebhookFinish(
      3,
      this.#due,
      this.#all,
      this.#attempts,
      this.#base,
      d.id,
      d.group,
      now,
      JSON.stringify(attempt),
      RECENT_ATTEMPTS,
    );
  }

  async retry(d: Delivery, attempt: AttemptRecord, nextAt: number): Promise<void> {
    await this.#scripts.tollgateWebhookRetry(
      2,
      this.#due,
      this.#attempts,
      this.#base,
      d.id,
      JSON.stringify(d),
      nextAt,
      JSON.stringify(attempt),
      RECENT_ATTEMPTS,
    );
  }

  async recent(limit: number): Promise<AttemptRecord[]> {
    const items = await this.#redis.run(() => this.#redis.client.lrange(this.#attempts, 0, limit - 1));
    return items.map((j) => JSON.parse(j) as AttemptRecord);
  }

  async once(key: string, ttlMs: number): Promise<boolean> {
    const set = await this.#redis.client.set(
      `${this.#base}:once:${key}`,
      '1',
      'PX',
      Math.max(1, Math.round(ttlMs)),
      'NX',
    );
    return set === 'OK';
  }
}
