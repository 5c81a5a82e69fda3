import { z } from 'zod';
import { configSchema } from './schema.js';

/** Where `tollgate schema` says the schema lives (its `$id`). */
export const CONFIG_SCHEMA_ID = 'https://tollgate.dev/schema/config.json';

const REFERENCE = { type: 'string', pattern: '\\$\\{' };
const STRING_SPELLING = { type: 'string', pattern: '^\\s*-?\\d+\\s*$|^(true|false)$|\\$\\{' };
const CONSTRAINTS = ['pattern', 'format', 'enum', 'minLength', 'maxLength'];

/** Whether a zod schema is one of primitives.ts' "also accept the string spelling" fields. */
function readsStrings(schema: z.core.$ZodType): boolean {
  const def = schema._zod.def as { type: string; in?: z.core.$ZodType };
  return def.type === 'pipe' && def.in?._zod.def.type === 'transform';
}

/**
 * The JSON Schema (draft 2020-12) of the config file, from the zod schema that validates it, as
 * the file is written: before defaults are applied, and before `${VAR}` references are replaced
 * — so a number or boolean field also accepts a string holding a reference (`port: ${PORT}`),
 * as the gateway does. Descriptions become editor hints.
 */
export function configJsonSchema(): Record<string, unknown> {
  const schema = z.toJSONSchema(configSchema, {
    io: 'input',
    unrepresentable: 'any',
    target: 'draft-2020-12',
    override: (ctx) => {
      const js = ctx.jsonSchema;
      // A number or boolean written as a string (a quoted value, a `${VAR}`); a constrained
      // string (a URL, an enum) written as a `${VAR}` that interpolation will replace.
      const alternative = readsStrings(ctx.zodSchema)
        ? STRING_SPELLING
        : js.type === 'string' && CONSTRAINTS.some((k) => k in js)
          ? REFERENCE
          : undefined;
      if (alternative === undefined) return;
      const { description, default: def, ...rest } = js;
      for (const key of Object.keys(js)) delete js[key];
      Object.assign(js, {
        ...(description === undefined ? {} : { description }),
        ...(def === undefined ? {} : { default: def }),
        anyOf: [rest, alternative],
      });
    },
  }) as Record<string, unknown>;
  return { ...schema, $id: CONFIG_SCHEMA_ID, title: 'Tollgate config' };
}
