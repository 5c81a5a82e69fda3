import { configJsonSchema } from '../config/json-schema.js';
import type { CliIo } from './args.js';

/** `tollgate schema`: prints the config file's JSON Schema (point `$schema` or an editor at it). */
export function schema(args: string[], io: CliIo): number {
  if (args.length > 0) {
    io.err('usage: tollgate schema > tollgate.schema.json');
    return 2;
  }
  io.out(JSON.stringify(configJsonSchema(), null, 2));
  return 0;
}
