import type { z } from 'zod';
import { Problem } from './problem.js';
import { fromZodIssues } from '../config/issues.js';

export interface FieldError {
  /** RFC 6901 JSON Pointer to the offending member (`/scopes/0`), or `''` for the whole document. */
  pointer: string;
  message: string;
}

/** A JSON Pointer from a path (`['scopes', 0]` → `/scopes/0`), escaping `~` and `/` per RFC 6901. */
export function jsonPointer(path: ReadonlyArray<PropertyKey>): string {
  return path.map((p) => '/' + String(p).replace(/~/g, '~0').replace(/\//g, '~1')).join('');
}

/** zod issues as `errors: [{pointer, message}]` members (unknown keys point at the key itself). */
export function fieldErrors(
  issues: ReadonlyArray<z.core.$ZodIssue>,
  prefix: ReadonlyArray<PropertyKey> = [],
): FieldError[] {
  const out: FieldError[] = [];
  for (const issue of issues) {
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys)
        out.push({ pointer: jsonPointer([...prefix, ...issue.path, key]), message: 'is not a known field' });
      continue;
    }
    // Reuse the config's friendly wording for the message.
    const [friendly] = fromZodIssues([issue]);
    out.push({
      pointer: jsonPointer([...prefix, ...issue.path]),
      message: friendly?.message ?? issue.message,
    });
  }
  return out;
}

/**
 * Parses `input` with `schema`, or throws 400 validation-failed listing every field error.
 *
 * @example
 * const body = parseOrThrow(createKeySchema, req.body, 'The request body is invalid.');
 */
export function parseOrThrow<S extends z.ZodType>(
  schema: S,
  input: unknown,
  detail: string,
  prefix: ReadonlyArray<PropertyKey> = [],
): z.output<S> {
  const result = schema.safeParse(input, { reportInput: true });
  if (result.success) return result.data;
  throw new Problem('validation-failed', {
    detail,
    extensions: { errors: fieldErrors(result.error.issues, prefix) },
  });
}
