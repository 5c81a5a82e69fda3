import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import { expect } from 'vitest';
import type { Reply } from './http.js';

/**
 * Validates responses against the OpenAPI document the gateway serves: the schema of
 * `paths[template][method].responses[status].content[type]`, compiled with Ajv (JSON Schema
 * 2020-12, as OpenAPI 3.1 uses). Fails the test on a response the document does not describe.
 */
export class OpenApiValidator {
  readonly #doc: any;
  readonly #ajv: Ajv2020;
  readonly #compiled = new Map<string, (data: unknown) => boolean>();
  checked = 0;

  constructor(doc: any) {
    this.#doc = doc;
    this.#ajv = new Ajv2020({ strict: false, allErrors: true });
    (addFormats as unknown as (a: Ajv2020) => void)(this.#ajv);
    this.#ajv.addSchema({ $id: 'openapi.json', components: doc.components }, 'openapi.json');
  }

  /** The path template of the document that `path` (no query) matches. */
  template(path: string): string {
    const paths = Object.keys(this.#doc.paths);
    const exact = paths.find((p) => p === path);
    if (exact) return exact;
    const found = paths.find((p) => new RegExp(`^${p.replace(/\{[^}]+\}/g, '[^/]+')}$`).test(path));
    if (!found) throw new Error(`no path in the OpenAPI document matches ${path}`);
    return found;
  }

  check(method: string, path: string, res: Reply): void {
    const template = this.template(path.split('?')[0]!);
    const op = this.#doc.paths[template]?.[method.toLowerCase()];
    expect(op, `${method} ${template} is documented`).toBeDefined();
    const response = op.responses[String(res.status)];
    expect(response, `${method} ${template} documents status ${res.status}`).toBeDefined();
    this.checked++;
    if (!response.content) {
      expect(res.body.length).toBe(0);
      return;
    }
    const type = String(res.headers['content-type'] ?? '').split(';')[0]!;
    const media = response.content[type];
    expect(media, `${method} ${template} ${res.status} documents ${type}`).toBeDefined();
    const key = `${template} ${method} ${res.status} ${type}`;
    let validate = this.#compiled.get(key);
    if (!validate) {
      const schema = JSON.parse(
        JSON.stringify(media.schema).replace(/"#\/components\//g, '"openapi.json#/components/'),
      );
      validate = this.#ajv.compile(schema);
      this.#compiled.set(key, validate);
    }
    const ok = validate(res.json());
    expect(ok, `${key}: ${JSON.stringify((validate as unknown as { errors: unknown }).errors)}`).toBe(true);
  }
}
