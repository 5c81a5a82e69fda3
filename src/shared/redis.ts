import { Cluster, Redis, type ClusterOptions, type RedisOptions as IoRedisOptions } from 'ioredis';
import { redisSchema, type RedisConfig } from './redis-schema.js';
import { pino, type Logger } from 'pino';
import { Problem, isProblem } from '../problems/problem.js';

/** Either a single node (plain or via Sentinel) or a Redis Cluster: both speak the same commands. */
export type RedisClient = Redis | Cluster;

export type RedisState = 'connecting' | 'ready' | 'down';

/**
 * The gateway's Redis connection, shared by every store. Tuned so that a dead or frozen Redis
 * never stalls a request: no offline queue (a command while disconnected fails at once), a
 * per-command timeout (`redis.commandTimeoutMs`, default 200 ms), and reconnection forever with
 * a capped backoff so the gateway uses Redis again without a restart.
 *
 * Keys: every store builds its keys with `key()`, which applies `redis.keyPrefix`. Multi-key
 * scripts put one `{hash tag}` in all their keys so a Cluster sees them in one slot.
 */
export class RedisHandle {
  readonly client: RedisClient;
  readonly prefix: string;
  readonly config: RedisConfig;
  readonly #logger: Logger;
  #state: RedisState = 'connecting';
  #subscriber: Redis | undefined;
  #closing = false;
  readonly #listeners = new Set<(state: RedisState) => void>();
  /** Commands that failed since start (for metrics). */
  errors = 0;
  /** Monotonic ms until which Redis is skipped after a failure (a frozen Redis must not stall requests). */
  #skipUntil = 0;
  /** Outages since start (transitions to `down`). */
  outages = 0;

  constructor(config: RedisConfig, logger: Logger) {
    this.config = config;
    this.prefix = config.keyPrefix;
    this.#logger = logger;
    this.client = createClient(config);
    this.client.on('ready', () => {
      // A fresh connection is a healthy one: stop skipping Redis at once.
      this.#skipUntil = 0;
      this.#set('ready');
    });
    this.client.on('error', (err: Error) => {
      // Logged once per outage by #set; the event itself must have a listener or it would crash.
      if (this.#state !== 'down') this.#logger.debug({ err }, 'redis error');
      this.#set('down');
    });
    this.client.on('end', () => this.#set('down'));
    this.client.on('close', () => {
      if (this.#state === 'ready') this.#set('down');
    });
  }

  get state(): RedisState {
    return this.#state;
  }

  get ready(): boolean {
    return this.#state === 'ready';
  }

  /**
   * Ready, and no command failed in the last second. A frozen Redis keeps its socket (ready) but
   * answers nothing: each command then costs `commandTimeoutMs`. After one failure the hot-path
   * stores skip Redis for a second (fall back or fail closed at once), then try it again.
   */
  get available(): boolean {
    return this.#state === 'ready' && performance.now() >= this.#skipUntil;
  }

  /**
   * Resolves when the connection is ready (at once if it is), or rejects with 503
   * service-unavailable after `timeoutMs`. For operations off the hot path (key management,
   * audit reads) that may run while the connection is still being made.
   */
  whenReady(timeoutMs = this.config.connectTimeoutMs): Promise<void> {
    if (this.#state === 'ready') return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(
          new Problem('service-unavailable', {
            detail: 'Redis is unavailable.',
            headers: { 'retry-after': '1' },
          }),
        );
      }, timeoutMs);
      const off = this.onStateChange((state) => {
        if (state !== 'ready') return;
        clearTimeout(timer);
        off();
        resolve();
      });
    });
  }

  /**
   * Runs a command off the hot path (key management, audit reads): waits for the connection
   * (bounded), and turns a failure — a command timeout on a frozen Redis, a connection lost
   * mid-command — into 503 service-unavailable instead of an internal error.
   */
  async run<T>(fn: () => Promise<T>): Promise<T> {
    await this.whenReady();
    try {
      return await fn();
    } catch (err) {
      if (isProblem(err)) throw err;
      this.recordError(false);
      throw new Problem('service-unavailable', {
        detail: 'Redis is unavailable.',
        headers: { 'retry-after': '1' },
        cause: err,
      });
    }
  }

  /** `prefix + parts.join(':')`. */
  key(...parts: string[]): string {
    return this.prefix + parts.join(':');
  }

  /** Called on every state change (ready ↔ down). */
  onStateChange(listener: (state: RedisState) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** A second connection for SUBSCRIBE (a subscribed connection cannot run other commands). */
  subscriber(): Redis {
    if (!this.#subscriber) {
      const sub = createClient(this.config, { subscriber: true }) as Redis;
      sub.on('error', () => undefined); // state is tracked on the main client
      this.#subscriber = sub;
    }
    return this.#subscriber;
  }

  /**
   * Counts a failed command. A failure on the request path (`skip`, the default) also makes the
   * hot-path stores skip Redis for a second; background writers (audit, last-use) only count.
   */
  recordError(skip = true): void {
    this.errors++;
    if (skip) this.#skipUntil = performance.now() + 1000;
  }

  async close(): Promise<void> {
    this.#closing = true;
    // QUIT waits for a reply: a frozen Redis would hold shutdown forever, so it gets a bound.
    const quit = async (c: RedisClient) => {
      let timer: NodeJS.Timeout | undefined;
      const bound = new Promise<void>((_, reject) => {
        timer = setTimeout(() => reject(new Error('QUIT timed out')), this.config.commandTimeoutMs + 500);
      });
      try {
        await Promise.race([c.quit(), bound]);
      } catch {
        c.disconnect();
      } finally {
        clearTimeout(timer);
      }
    };
    await Promise.all([quit(this.client), this.#subscriber ? quit(this.#subscriber) : Promise.resolve()]);
  }

  #set(state: RedisState): void {
    if (state === this.#state || this.#closing) return;
    const previous = this.#state;
    this.#state = state;
    if (state === 'down') {
      this.outages++;
      this.#logger.warn(
        { redis: 'down' },
        'redis unavailable: rate limits fall back to memory; quota, idempotency and concurrency follow redis.onError',
      );
    } else if (state === 'ready' && previous === 'down')
      this.#logger.info({ redis: 'ready' }, 'redis available again');
    for (const l of this.#listeners) l(state);
  }
}

function createClient(config: RedisConfig, options: { subscriber?: boolean } = {}): RedisClient {
  const base: IoRedisOptions = {
    // A subscriber may queue its SUBSCRIBE until connected; the command client must fail fast.
    enableOfflineQueue: options.subscriber === true,
    commandTimeout: options.subscriber ? undefined : config.commandTimeoutMs,
    connectTimeout: config.connectTimeoutMs,
    maxRetriesPerRequest: options.subscriber ? null : 0,
    retryStrategy: (times: number) => Math.min(50 * 2 ** Math.min(times, 6), 2000),
    // After a failover the old master turns replica and answers writes with READONLY: reconnect
    // (through the Sentinel, to the new master) instead of failing every write until it drops us.
    // (A RESP error reply carries its code as the first word: `READONLY You can't write…`.)
    reconnectOnError: (err: Error) => err.message.split(' ', 1)[0] === 'READONLY',
    lazyConnect: false,
  };
  if (config.cluster) {
    const nodes = config.cluster.map((u) => {
      const url = new URL(u);
      return { host: url.hostname, port: Number(url.port || 6379) };
    });
    const first = new URL(config.cluster[0]!);
    const clusterOptions: ClusterOptions = {
      enableOfflineQueue: options.subscriber === true,
      clusterRetryStrategy: (times: number) => Math.min(50 * 2 ** Math.min(times, 6), 2000),
      redisOptions: {
        ...base,
        username: first.username || undefined,
        password: first.password ? decodeURIComponent(first.password) : undefined,
        tls: first.protocol === 'rediss:' ? {} : undefined,
      },
    };
    return new Cluster(nodes, clusterOptions);
  }
  if (config.sentinels)
    return new Redis({
      ...base,
      sentinels: config.sentinels,
      name: config.sentinelName,
      // Listen for the Sentinels' +switch-master and reconnect at once, not at the next error.
      failoverDetector: true,
    });
  return new Redis(config.url ?? 'redis://127.0.0.1:6379', base);
}

/** `redis` settings as a library user writes them (the config's `redis` block). */
export interface RedisOptions {
  url?: string;
  cluster?: string[];
  sentinels?: Array<{ host: string; port: number }>;
  sentinelName?: string;
  keyPrefix?: string;
  commandTimeoutMs?: number;
  connectTimeoutMs?: number;
  onError?: 'closed' | 'open';
}

/**
 * A Redis connection for the Redis twins of the library (`RedisCounters`, `RedisKeyStore`,
 * `RedisIdempotencyStore`, …), with the gateway's defaults (fail fast, bounded commands,
 * reconnect forever). Close it with `close()`.
 *
 * @example
 * const redis = createRedis({ url: process.env.REDIS_URL, keyPrefix: 'myapp:' });
 * app.use(rateLimit({ limits, store: new RedisCounters(redis) }));
 */
export function createRedis(options: RedisOptions = {}, logger?: Logger): RedisHandle {
  return new RedisHandle(redisSchema.parse(options), logger ?? pino({ level: 'silent' }));
}
