import { afterEach, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

// Issue 14.10: a CI log must end with what failed. .ci/run hands .ci/summary.mjs vitest's JSON
// report, the check's output and its exit status.

const SUMMARY = resolve('.ci/summary.mjs');
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function summary(report: unknown, log: string, status: number): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-ci-summary-'));
  dirs.push(dir);
  const reportFile = join(dir, 'report.json');
  if (report !== undefined) writeFileSync(reportFile, JSON.stringify(report));
  writeFileSync(join(dir, 'check.log'), log);
  return new Promise((res, rej) =>
    execFile(
      process.execPath,
      [SUMMARY, reportFile, join(dir, 'check.log'), String(status)],
      { timeout: 10_000 },
      (err, out) => (err ? rej(new Error(`summary.mjs failed: ${err.message}`, { cause: err })) : res(out)),
    ),
  );
}

const report = (failed: boolean) => ({
  numPassedTests: 2,
  numFailedTests: failed ? 1 : 0,
  testResults: [
    {
      name: resolve('test/integration/x.test.ts'),
      status: failed ? 'failed' : 'passed',
      message: '',
      assertionResults: [
        { fullName: 'area keeps working', status: 'passed', failureMessages: [] },
        {
          fullName: 'area does the thing',
          status: failed ? 'failed' : 'passed',
          failureMessages: failed
            ? [
                '\u001b[31mAssertionError: expected 503 to be 200\u001b[39m\n    at test/integration/x.test.ts:9:5\n    at file:///repo/node_modules/@vitest/runner/dist/index.js:1:1',
              ]
            : [],
        },
      ],
    },
    {
      name: resolve('test/integration/y.test.ts'),
      status: failed ? 'failed' : 'passed',
      message: failed ? 'Hook timed out in 30000ms' : '',
      assertionResults: [],
    },
  ],
});

describe('.ci/run ends a failed check with what failed', () => {
  it('names each failed test and file with its error, without node_modules frames, then the counts', async () => {
    const out = await summary(report(true), 'lots of output\n', 1);
    expect(out).toContain('npm run check failed (exit 1)');
    expect(out).toContain('FAIL test/integration/x.test.ts > area does the thing');
    expect(out).toContain('AssertionError: expected 503 to be 200');
    expect(out).toContain('at test/integration/x.test.ts:9:5');
    expect(out).not.toContain('node_modules');
    expect(out).not.toContain('\u001b[');
    expect(out).toContain('FAIL test/integration/y.test.ts (file)\n    Hook timed out in 30000ms');
    expect(out).not.toContain('keeps working');
    expect(out.trimEnd().split('\n').at(-1)).toBe('vitest: 2 passed, 1 failed');
  });

  it('shows the end of the check output when no test report was written (typecheck, lint, a crash)', async () => {
    const log = Array.from({ length: 200 }, (_, i) => `line ${i}`).join('\n');
    const out = await summary(undefined, `${log}\nsrc/x.ts(1,7): error TS2322\n`, 2);
    expect(out).toContain('npm run check failed (exit 2)');
    expect(out).toContain('src/x.ts(1,7): error TS2322');
    expect(out).not.toContain('line 100\n');
    expect(out).not.toContain('vitest:');
  });

  it('prints only the closing count line when the check passed', async () => {
    const out = await summary(report(false), 'ok\n', 0);
    expect(out.trim()).toBe('vitest: 2 passed, 0 failed');
  });
});
