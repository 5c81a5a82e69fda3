// Ends a CI log with what failed: `node .ci/summary.mjs <vitest JSON report> <check log> <exit status>`.
// Failed tests come from the JSON report (file, full name, error); when there is none (typecheck,
// lint or format failed, or vitest died), the end of the check's own output. The last line is a
// plain `vitest: N passed, N failed` when the tests ran.
import { existsSync, readFileSync } from 'node:fs';
import { relative } from 'node:path';

const [reportPath, logPath, statusArg] = process.argv.slice(2);
const status = Number(statusArg ?? 0);
// eslint-disable-next-line no-control-regex
const plain = (s) => s.replace(/\u001b\[[0-9;]*m/g, '');
// Stack frames inside node_modules say nothing about the failure.
const ownFrames = (l) => !/^\s+at .*(node_modules|<anonymous>|node:internal)/.test(l);
const indent = (s, max = 60) => {
  const lines = plain(s).trimEnd().split('\n').filter(ownFrames);
  const shown = lines.length > max ? [...lines.slice(0, max), `… (${lines.length - max} more lines)`] : lines;
  return shown.map((l) => `    ${l}`).join('\n');
};

let report;
if (reportPath && existsSync(reportPath)) {
  try {
    report = JSON.parse(readFileSync(reportPath, 'utf8'));
  } catch (err) {
    console.log(`(the test report ${reportPath} is unreadable: ${String(err)})`);
  }
}

const failures = [];
for (const file of report?.testResults ?? []) {
  const name = relative(process.cwd(), file.name);
  const failed = file.assertionResults.filter((a) => a.status === 'failed');
  for (const a of failed)
    failures.push({ title: `${name} > ${a.fullName}`, output: (a.failureMessages ?? []).join('\n') });
  // A file that failed without a failed test: it did not load, or a hook failed.
  if (file.status === 'failed' && failed.length === 0)
    failures.push({ title: `${name} (file)`, output: file.message || '(no message)' });
}

if (status !== 0) {
  console.log(`\n==> npm run check failed (exit ${status})`);
  if (failures.length > 0) {
    console.log(`${failures.length} failure(s):`);
    for (const f of failures) console.log(`\nFAIL ${f.title}\n${indent(f.output)}`);
    console.log('\nfailed:');
    for (const f of failures) console.log(`  ${f.title}`);
  } else if (logPath && existsSync(logPath)) {
    // Typecheck, lint, format or a vitest that ended without a report: its last words.
    const lines = plain(readFileSync(logPath, 'utf8')).trimEnd().split('\n');
    console.log(`no failed test in a report; the last ${Math.min(lines.length, 80)} lines of the check:`);
    console.log(lines.slice(-80).join('\n'));
  }
}
if (report) console.log(`\nvitest: ${report.numPassedTests} passed, ${report.numFailedTests} failed`);
