import { defineConfig } from 'vitest/config';

// .ci/run sets this: a JSON report beside the usual output, from which it prints what failed last.
const report = process.env.TOLLGATE_TEST_REPORT;

export default defineConfig({
  test: {
    ...(report ? { reporters: ['default', 'json'], outputFile: { json: report } } : {}),
    include: ['test/**/*.test.ts', 'src/**/*.test.ts'],
    // One id per run for the keys tests write to the shared Redis; deletes them when the run ends.
    globalSetup: ['test/helpers/global-setup.ts'],
    testTimeout: 20_000,
    hookTimeout: 30_000,
    // Tests start real servers and Redis connections; a couple of workers keeps a 2-core machine responsive.
    pool: 'forks',
    maxWorkers: 2,
  },
});
