import { parseArgs, type ParseArgsConfig } from 'node:util';
import type { Env } from '../config/interpolate.js';

export interface CliIo {
  out: (line: string) => void;
  err: (line: string) => void;
  env: Env;
}

export const defaultIo: CliIo = {
  out: (line) => process.stdout.write(line + '\n'),
  err: (line) => process.stderr.write(line + '\n'),
  env: process.env,
};

export class UsageError extends Error {}

export function configPathFrom(values: { config?: string | undefined }, env: Env): string {
  return values.config ?? env.TOLLGATE_CONFIG ?? 'config/gateway.yaml';
}

export function parse(args: string[], options: ParseArgsConfig['options']) {
  try {
    return parseArgs({ args, options, allowPositionals: false, strict: true });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}
