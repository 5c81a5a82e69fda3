import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { parse } from 'yaml';
import { configJsonSchema } from '../../src/config/json-schema.js';
import { parseConfigText } from '../../src/config/load.js';
import { runCli } from '../../src/cli/index.js';

function validator() {
  const ajv = new Ajv2020({ strict: false, allErrors: true });
  return ajv.compile(configJsonSchema());
}

describe('tollgate schema: the JSON Schema of the config file', () => {
  it('accepts the shipped configs as written (before interpolation)', () => {
    const validate = validator();
    for (const file of ['config/gateway.yaml', 'config/spec-example.yaml']) {
      const doc: unknown = parse(readFileSync(file, 'utf8'));
      expect({ file, ok: validate(doc), errors: validate.errors ?? [] }).toEqual({
        file,
        ok: true,
        errors: [],
      });
    }
  });

  it('refuses what the gateway refuses: an unknown field, a wrong type, a bad enum value', () => {
    const validate = validator();
    expect(validate({ listen: { port: 8080 }, lisen: {} })).toBe(false);
    expect(validate({ routes: [{ id: 'a', path: '/a', mock: {}, upstreamErrors: 'sometimes' }] })).toBe(
      false,
    );
    expect(validate({ workers: 'many' })).toBe(false);
  });

  it('lets a number field hold a ${VAR} reference, as interpolation will replace it', () => {
    const validate = validator();
    expect(validate({ listen: { port: '${PORT:-8080}' } })).toBe(true);
    expect(parseConfigText('listen: { port: "${PORT:-8080}" }\n', {}).ok).toBe(true);
  });

  it('allows $schema in the file, which the gateway ignores', () => {
    const result = parseConfigText('$schema: ./tollgate.schema.json\nroutes: []\n', {});
    expect(result.ok).toBe(true);
    expect(validator()({ $schema: './tollgate.schema.json' })).toBe(true);
  });

  it('is what `tollgate schema` prints', async () => {
    const out: string[] = [];
    const code = await runCli(['schema'], { out: (l) => out.push(l), err: () => undefined, env: {} });
    expect(code).toBe(0);
    expect(JSON.parse(out.join('\n'))).toEqual(configJsonSchema());
  });
});
