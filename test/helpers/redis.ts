import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { Redis } from 'ioredis';
import { inject } from 'vitest';
import { freePort, waitFor } from './http.js';
import { sharedRedisUrlFrom, TEST_KEY_ROOT } from './test-run.js';

/** The Redis CI provides (REDIS_URL, else the local default). Tests isolate themselves with `uniquePrefix()`. */
export const sharedRedisUrl = sharedRedisUrlFrom(process.env);

/**
 * A key prefix no other test uses: `tollgate-test:<run id>:<name>:<random>:`. Every key under the
 * run id is deleted when the run ends (test/helpers/global-setup.ts), so a test that writes to the
 * shared Redis under this prefix leaves nothing behind; deleting its own keys earlier is harmless.
 */
export function uniquePrefix(name: string): string {
  const run = inject('tollgateTestRun');
  if (!run)
    throw new Error('uniquePrefix() needs the run id of test/helpers/global-setup.ts (vitest globalSetup)');
  return `${TEST_KEY_ROOT}${run}:${name}:${randomBytes(4).toString('hex')}:`;
}

export interface PrivateRedis {
  url: string;
  port: number;
  process: ChildProcess;
  /** SIGSTOP: the server freezes (connections stay open, nothing answers). */
  freeze(): void;
  /** SIGCONT after `freeze()`. */
  thaw(): void;
  /** Stops the server (SIGKILL when `hard`); `start()` brings it back on the same port. */
  stop(hard?: boolean): Promise<void>;
  start(): Promise<void>;
}

/**
 * Whether the Redis answering on `port` is the process `pid` (`INFO server` names it). A port from
 * `freePort()` can be taken by another process before redis-server binds it; redis-server then
 * exits, and a plain PING would reach the other process's Redis — a test would stop, freeze or
 * write to a server it does not own.
 */
export function servedBy(port: number, pid: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    let reply = '';
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(500, () => done(false));
    socket.on('error', () => done(false));
    socket.on('data', (d: Buffer) => {
      reply += d.toString();
      if (reply.startsWith('-')) return done(false); // e.g. -LOADING
      const m = /\r\nprocess_id:(\d+)\r\n/.exec(reply);
      if (m) done(Number(m[1]) === pid);
    });
    socket.on('connect', () => socket.write('INFO server\r\n'));
  });
}

class PortTaken extends Error {}

/** Resolves once `child` serves on `port`; rejects at once when it exits (its port was taken). */
async function serving(child: ChildProcess, port: number): Promise<void> {
  await waitFor(
    async () => {
      if (child.exitCode !== null || child.signalCode !== null)
        throw new PortTaken(`redis-server for port ${port} exited (${child.exitCode ?? child.signalCode})`);
      return child.pid !== undefined && servedBy(port, child.pid);
    },
    10_000,
    25,
  );
}

/** Runs `start` again, on fresh ports, when a port it was given was taken before redis-server bound it. */
async function onFreshPorts<T>(start: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await start();
    } catch (err) {
      if (!(err instanceof PortTaken) || attempt === 3) throw err;
    }
  }
}

/**
 * A private `redis-server` on a free loopback port, for tests that stop, freeze or kill Redis —
 * they must never touch the shared one. Stop it in `afterAll`. `extraArgs` go to `redis-server` as
 * given (say `--rename-command PEXPIRETIME ""`, a Redis without a command).
 */
export async function startPrivateRedis(extraArgs: readonly string[] = []): Promise<PrivateRedis> {
  let port = 0;
  let child!: ChildProcess;
  const launch = async () => {
    child = spawn(
      'redis-server',
      [
        '--port',
        String(port),
        '--bind',
        '127.0.0.1',
        '--save',
        '',
        '--appendonly',
        'no',
        '--daemonize',
        'no',
        '--loglevel',
        'warning',
        ...extraArgs,
      ],
      { stdio: 'ignore' },
    );
    try {
      await serving(child, port);
    } catch (err) {
      child.kill('SIGKILL');
      throw err;
    }
  };
  await onFreshPorts(async () => {
    port = await freePort();
    await launch();
  });
  const handle: PrivateRedis = {
    url: `redis://127.0.0.1:${port}`,
    port,
    get process() {
      return child;
    },
    freeze: () => child.kill('SIGSTOP'),
    thaw: () => child.kill('SIGCONT'),
    async stop(hard = false) {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGCONT');
      child.kill(hard ? 'SIGKILL' : 'SIGTERM');
      await exited;
    },
    start: launch,
  };
  return handle;
}

export interface PrivateCluster {
  urls: string[];
  stop(): Promise<void>;
}

/**
 * A real three-node Redis Cluster on free loopback ports (no replicas), made with
 * `redis-cli --cluster create`. For tests of hash-tagged multi-key scripts.
 */
export function startRedisCluster(): Promise<PrivateCluster> {
  return onFreshPorts(async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-cluster-'));
    const ports = [await freePort(), await freePort(), await freePort()];
    const children = ports.map((port) =>
      spawn(
        'redis-server',
        [
          '--port',
          String(port),
          '--bind',
          '127.0.0.1',
          '--cluster-enabled',
          'yes',
          '--cluster-config-file',
          join(dir, `nodes-${port}.conf`),
          '--dir',
          dir,
          '--save',
          '',
          '--appendonly',
          'no',
          '--loglevel',
          'warning',
        ],
        { stdio: 'ignore' },
      ),
    );
    const stop = () => killAll(children, dir);
    try {
      for (const [i, port] of ports.entries()) await serving(children[i]!, port);
      await new Promise<void>((resolve, reject) => {
        execFile(
          'redis-cli',
          [
            '--cluster',
            'create',
            ...ports.map((p) => `127.0.0.1:${p}`),
            '--cluster-replicas',
            '0',
            '--cluster-yes',
          ],
          { timeout: 20_000 },
          (err) => (err ? reject(new Error(`redis-cli --cluster create failed: ${err.message}`)) : resolve()),
        );
      });
      const clusterOk = (port: number) =>
        new Promise<boolean>((resolve) => {
          execFile('redis-cli', ['-p', String(port), 'cluster', 'info'], { timeout: 2000 }, (err, out) =>
            resolve(!err && out.includes('cluster_state:ok')),
          );
        });
      await waitFor(async () => (await Promise.all(ports.map(clusterOk))).every(Boolean), 15_000, 100);
    } catch (err) {
      await stop();
      throw err;
    }
    return { urls: ports.map((p) => `redis://127.0.0.1:${p}`), stop };
  });
}

export interface PrivateSentinel {
  /** For `redis.sentinels`. */
  sentinels: Array<{ host: string; port: number }>;
  name: string;
  /** The port of the current master, as the sentinel reports it. */
  masterPort(): Promise<number>;
  /** Forces a failover to the replica and resolves when the sentinel reports the new master. */
  failover(): Promise<number>;
  /**
   * Connections subscribed on the sentinel: ioredis' failover detectors (one per client in
   * Sentinel mode), which hear `+switch-master`. A failover before they attach goes unheard.
   */
  subscribers(): Promise<number>;
  stop(): Promise<void>;
}

/** `redis-cli -p PORT ARGS…`, resolving with its output. */
export function redisCli(port: number, args: string[]): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile('redis-cli', ['-p', String(port), ...args], { timeout: 3000 }, (err, out) => {
      if (err) reject(new Error(`redis-cli ${args.join(' ')}: ${err.message}`, { cause: err }));
      else resolve(out);
    }),
  );
}

/**
 * A master, one replica and one Sentinel (`redis-server --sentinel`), all on free loopback ports,
 * for tests of `redis.sentinels` and of a failover.
 */
export function startRedisSentinel(): Promise<PrivateSentinel> {
  return onFreshPorts(async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-sentinel-'));
    const name = 'tollgate-test';
    const [master, replica, sentinel] = [await freePort(), await freePort(), await freePort()];
    const common = ['--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--loglevel', 'warning'];
    const children: ChildProcess[] = [];
    const stop = () => killAll(children, dir);
    const masterPort = async () => {
      const out = await redisCli(sentinel, ['sentinel', 'get-master-addr-by-name', name]);
      return Number(out.trim().split('\n')[1]);
    };
    try {
      children.push(
        spawn('redis-server', ['--port', String(master), '--dir', dir, ...common], { stdio: 'ignore' }),
      );
      children.push(
        spawn(
          'redis-server',
          ['--port', String(replica), '--dir', dir, '--replicaof', '127.0.0.1', String(master), ...common],
          { stdio: 'ignore' },
        ),
      );
      const conf = join(dir, 'sentinel.conf');
      writeFileSync(
        conf,
        [
          `port ${sentinel}`,
          'bind 127.0.0.1',
          `dir ${dir}`,
          `sentinel monitor ${name} 127.0.0.1 ${master} 1`,
          `sentinel down-after-milliseconds ${name} 1000`,
          `sentinel failover-timeout ${name} 5000`,
          '',
        ].join('\n'),
      );
      children.push(spawn('redis-server', [conf, '--sentinel'], { stdio: 'ignore' }));
      for (const [i, port] of [master, replica, sentinel].entries()) await serving(children[i]!, port);
      // The replica is in sync, and the sentinel knows it (a failover needs a known, healthy replica).
      await waitFor(
        async () => (await redisCli(replica, ['info', 'replication'])).includes('master_link_status:up'),
        10_000,
        50,
      );
      await waitFor(
        async () => {
          const out = await redisCli(sentinel, ['sentinel', 'replicas', name]);
          return out.includes(String(replica)) && !out.includes('disconnected');
        },
        15_000,
        100,
      );
    } catch (err) {
      await stop();
      throw err;
    }
    return {
      sentinels: [{ host: '127.0.0.1', port: sentinel }],
      name,
      masterPort,
      async subscribers() {
        const out = await redisCli(sentinel, ['client', 'list']);
        return out.split('\n').filter((l) => / sub=[1-9]/.test(l)).length;
      },
      async failover() {
        const before = await masterPort();
        await redisCli(sentinel, ['sentinel', 'failover', name]);
        await waitFor(async () => (await masterPort()) !== before, 15_000, 100);
        return masterPort();
      },
      stop,
    };
  });
}

/** SIGKILLs the servers a helper started and removes their directory, once all have exited. */
async function killAll(children: readonly ChildProcess[], dir: string): Promise<void> {
  await Promise.all(
    children.map(
      (c) =>
        new Promise<void>((resolve) => {
          if (c.exitCode !== null || c.signalCode !== null) return resolve();
          c.once('exit', () => resolve());
          c.kill('SIGKILL');
        }),
    ),
  );
  rmSync(dir, { recursive: true, force: true });
}

/**
 * Resolves once at least `count` connections subscribe to `channel`, summed over `urls` (PUBSUB
 * NUMSUB is per server, so a Cluster passes every node). The readiness signal for pub/sub — a
 * message published before a subscriber attached is lost — in place of a sleep.
 */
export async function waitForSubscribers(
  urls: string | readonly string[],
  channel: string,
  count: number,
  timeoutMs = 10_000,
): Promise<void> {
  const clients = (typeof urls === 'string' ? [urls] : urls).map(
    (url) => new Redis(url, { maxRetriesPerRequest: 1, lazyConnect: true }),
  );
  try {
    await waitFor(
      async () => {
        let subscribed = 0;
        for (const c of clients) {
          const reply = (await c.pubsub('NUMSUB', channel)) as Array<string | number>;
          subscribed += Number(reply[1] ?? 0);
        }
        return subscribed >= count;
      },
      timeoutMs,
      20,
    );
  } finally {
    for (const c of clients) c.disconnect();
  }
}

/** The channel on which Redis key stores under `keyPrefix` publish revocations (src/keys/redis-store.ts). */
export function keyInvalidationChannel(keyPrefix: string): string {
  return `${keyPrefix}keys:invalidate`;
}
