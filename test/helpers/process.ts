import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { PROCESS_START_MS, spawnCli, type RunningCli } from './cli.js';
import { roomInConfigWindows } from './ratelimit.js';

export interface GatewayProc {
  cli: RunningCli;
  url: string;
  adminUrl: string | undefined;
  port: number;
  pid: number;
  file: string;
  /** Rewrites the config file (the gateway reloads it). */
  write(yaml: string): void;
  /** Resident memory of the process, MB. */
  rssMb(): number;
  stop(): Promise<void>;
}

/**
 * The real CLI (`node bin/tollgate.js --config <file>`) on ephemeral loopback ports, for tests
 * where a fault must hit a whole gateway process. `yaml` should use `port: 0` for both listeners.
 */
export async function startGatewayProcess(
  yaml: string,
  env: Record<string, string> = {},
): Promise<GatewayProc> {
  await roomInConfigWindows(yaml);
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-proc-'));
  const file = join(dir, 'gateway.yaml');
  writeFileSync(file, yaml);
  const cli = spawnCli(['--config', file], env);
  let listening: Record<string, any>;
  try {
    listening = await cli.waitForLog('tollgate listening', PROCESS_START_MS);
  } catch (err) {
    await cli.stop();
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const port = Number(String(listening.listen).split(':').pop());
  const pid = cli.child.pid!;
  return {
    cli,
    url: `http://127.0.0.1:${port}`,
    adminUrl: listening.admin ? `http://${String(listening.admin)}` : undefined,
    port,
    pid,
    file,
    write: (text) => writeFileSync(file, text),
    rssMb: () => {
      const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
      return m ? Number(m[1]) / 1024 : 0;
    },
    async stop() {
      await cli.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Runs `worker` in `concurrency` loops until `stop()`; collects every outcome. Bounded: each call
 * has its own timeout (the caller's request helper), and `stop()` waits for the loops to end.
 */
export function traffic<T>(concurrency: number, worker: (i: number) => Promise<T>) {
  const outcomes: Array<{ ok: true; value: T } | { ok: false; error: string }> = [];
  let running = true;
  let n = 0;
  const loops = Array.from({ length: concurrency }, async () => {
    while (running) {
      try {
        outcomes.push({ ok: true, value: await worker(n++) });
      } catch (err) {
        outcomes.push({ ok: false, error: err instanceof Error ? err.message : String(err) });
      }
    }
  });
  return {
    outcomes,
    get count() {
      return outcomes.length;
    },
    async stop() {
      running = false;
      await Promise.all(loops);
      return outcomes;
    },
  };
}
