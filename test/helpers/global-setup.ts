import { randomBytes } from 'node:crypto';
import type { TestProject } from 'vitest/node';
import { deleteRunKeys, runKeyPattern, sharedRedisUrlFrom } from './test-run.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** This run's id: every `uniquePrefix()` of the run starts with `tollgate-test:<id>:`. */
    tollgateTestRun: string;
  }
}

let runId: string | undefined;

/**
 * vitest globalSetup: one id per `vitest run`, handed to the test workers with `provide`
 * (`uniquePrefix()` builds on it). The teardown deletes the run's keys from the shared Redis, so a
 * run leaves nothing behind there, with or without a TTL.
 */
export function setup(project: TestProject): void {
  runId = randomBytes(6).toString('hex');
  project.provide('tollgateTestRun', runId);
}

export async function teardown(): Promise<void> {
  if (runId === undefined) return;
  const url = sharedRedisUrlFrom(process.env);
  const deleted = await deleteRunKeys(url, runId);
  // No Redis answered: a run without Redis tests (they would have failed), so nothing to delete.
  if (deleted === undefined)
    console.warn(`test teardown: no Redis at ${url} to delete ${runKeyPattern(runId)}`);
}
