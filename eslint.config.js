// @ts-check
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import globals from 'globals';

const nodeGlobals = {
  process: 'readonly',
  console: 'readonly',
  URL: 'readonly',
  Buffer: 'readonly',
  setTimeout: 'readonly',
  clearTimeout: 'readonly',
  setInterval: 'readonly',
  clearInterval: 'readonly',
  TextEncoder: 'readonly',
  fetch: 'readonly',
};

export default tseslint.config(
  {
    ignores: [
      'dist/**',
      'node_modules/**',
      'coverage/**',
      'test-output/**',
      'bench/results/**',
      'bench/baselines/**',
      'bench/servers/express-gateway/models/**',
      'console/dist/**',
    ],
  },
  js.configs.recommended,
  {
    files: ['**/*.ts'],
    extends: [...tseslint.configs.recommendedTypeChecked],
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: { arguments: false } }],
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-restricted-syntax': [
        'error',
        { selector: 'ExportDefaultDeclaration', message: 'Named exports only.' },
      ],
    },
  },
  {
    files: ['test/**/*.ts', 'src/**/*.test.ts'],
    rules: {
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
      '@typescript-eslint/no-non-null-assertion': 'off',
      '@typescript-eslint/no-explicit-any': 'off',
    },
  },
  {
    // Tool config files must default-export.
    files: ['vitest.config.ts'],
    rules: { 'no-restricted-syntax': 'off' },
  },
  {
    // The floors (DESIGN.md): a folder imports only from folders below it. Bottom up: core ·
    // problems · shared · config · keys · observability · policies · key-management · admin ·
    // gateway · cli/main. core/ may use only the problem leaf modules beside npm packages.
    files: ['src/core/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: [
                '../*',
                '!../problems',
                '../problems/*',
                '!../problems/problem.js',
                '!../problems/catalog.js',
              ],
              message: 'core/ imports nothing above it (only problems/problem.js and problems/catalog.js).',
            },
          ],
        },
      ],
    },
  },
  {
    files: ['src/problems/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: [
                '**/gateway/*',
                '**/policies/*',
                '**/admin/*',
                '**/keys/*',
                '**/observability/*',
                '**/cli/*',
              ],
              message: 'problems/ sits below gateway/, policies/ and everything that uses it.',
            },
          ],
        },
      ],
    },
  },
  {
    files: ['src/shared/**/*.ts', 'src/keys/**/*.ts', 'src/observability/**/*.ts', 'src/events/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: [
                '**/gateway/*',
                '**/policies/*',
                '**/admin/*',
                '**/key-management/*',
                '**/cli/*',
                '**/main.js',
                '**/cluster.js',
              ],
              message: 'shared/, keys/, observability/ and events/ sit below the policies and the gateway.',
            },
          ],
        },
      ],
    },
  },
  {
    files: ['src/policies/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: [
                '**/gateway/*',
                '**/admin/*',
                '**/key-management/*',
                '**/cli/*',
                '**/main.js',
                '**/cluster.js',
              ],
              message:
                'A policy never imports the gateway, the admin API or the CLI: what it needs is in core/ (or passed to its factory).',
            },
          ],
        },
      ],
    },
  },
  {
    files: ['**/*.js', '**/*.mjs'],
    languageOptions: { sourceType: 'module', globals: nodeGlobals },
    rules: { 'no-unused-vars': ['error', { argsIgnorePattern: '^_' }] },
  },
  {
    files: ['console/**/*.js'],
    languageOptions: { sourceType: 'module', globals: globals.browser },
  },
  {
    files: ['**/*.cjs'],
    languageOptions: {
      sourceType: 'commonjs',
      globals: { ...nodeGlobals, require: 'readonly', module: 'writable', __dirname: 'readonly' },
    },
  },
);
