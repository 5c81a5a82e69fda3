import { spawn, type ChildProcess } from 'node:child_process';
import { resolve } from 'node:path';

export const CLI = resolve('bin/tollgate.js');

/**
 * How long a spawned gateway may take to say it is listening. A hang detector, not a speed
 * expectation: a node process spends about a second of CPU loading the gateway, and on a busy
 * 2-core machine (two test files at once, other builds) that stretches to many seconds per process.
 */
export const PROCESS_START_MS = 30_000;

/**
 * The time budget of a test that spawns gateway processes (`describe(name, { timeout }, …)`): its
 * bounded waits (a start-up of up to PROCESS_START_MS, then its own) must fit inside it, or a slow
 * start-up fails as a bare "test timed out" instead of the wait that did not end.
 */
export const PROCESS_TEST_MS = 90_000;

export interface RunningCli {
  child: ChildProcess;
  lines: string[];
  /** Resolves with the first log line (parsed JSON) whose `msg` is `msg`. */
  waitForLog(msg: string, timeoutMs?: number): Promise<Record<string, any>>;
  exited: Promise<number | null>;
  /** The process's log without its per-request lines, for failure messages. */
  log: () => string;
  stop(): Promise<void>;
}

/** Spawns the real CLI (the built `dist/`), capturing its JSON log lines. */
export function spawnCli(args: string[], env: Record<string, string> = {}): RunningCli {
  // The SPEC's environment overrides (PORT, REDIS_URL, LOG_LEVEL) must come from the test, never
  // from the environment the tests run in: CI exports REDIS_URL, which would otherwise point a
  // gateway meant to use a private (killable) Redis, or none, at the shared one.
  const { PORT: _port, REDIS_URL: _redis, LOG_LEVEL: _level, ...inherited } = process.env;
  const child = spawn(process.execPath, [CLI, ...args], {
    env: { ...inherited, NODE_ENV: 'production', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  const waiters: Array<() => void> = [];
  let buffer = '';
  const onData = (chunk: Buffer) => {
    buffer += chunk.toString();
    let nl: number;
    while ((nl = buffer.indexOf('\n')) !== -1) {
      lines.push(buffer.slice(0, nl));
      buffer = buffer.slice(nl + 1);
    }
    for (const w of waiters) w();
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  const exited = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
  const find = (msg: string) => {
    for (const l of lines) {
      try {
        const parsed = JSON.parse(l) as Record<string, any>;
        if (typeof parsed.msg === 'string' && parsed.msg.startsWith(msg)) return parsed;
      } catch {
        /* not JSON */
      }
    }
    return undefined;
  };
  return {
    child,
    lines,
    exited,
    log: () => lines.filter((l) => !l.includes('"msg":"request"')).join('\n'),
    waitForLog(msg, timeoutMs = PROCESS_START_MS) {
      return new Promise((res, rej) => {
        const timer = setTimeout(
          () => rej(new Error(`no "${msg}" log line within ${timeoutMs} ms:\n${lines.join('\n')}`)),
          timeoutMs,
        );
        const check = () => {
          const found = find(msg);
          if (found) {
            clearTimeout(timer);
            res(found);
          }
        };
        waiters.push(check);
        check();
        void exited.then(() => {
          check();
        });
      });
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await exited;
      }
    },
  };
}
