import { z } from 'zod';

/** A policy's name in `policies:` and in a route's `policies: [...]`. */
export const policyName = z
  .string()
  .regex(/^[A-Za-z0-9_-]{1,64}$/, 'must be 1-64 letters, digits, "_" or "-"');

/** `policies.<name>`: one custom policy and its options (SPEC §12). */
export const policyEntrySchema = z
  .strictObject({
    module: z
      .string()
      .min(1)
      .optional()
      .describe(
        'A path relative to the config file (`./policies/geo.js`) or a package name. Its default export is a `definePolicy(...)` policy or an Express middleware factory `(options) => (req, res, next)`. It runs inside the gateway with its privileges: load only code you trust.',
      ),
    options: z.unknown().optional().describe("The policy's options, validated by its own schema at load."),
  })
  .describe('A custom policy.');

/** Top-level `policies`. */
export const policiesSchema = z
  .record(policyName, policyEntrySchema)
  .default({})
  .describe('Custom policies (SPEC §12), by name; routes list the ones they run in `policies`.');

/** A route's `policies`: the custom policies it runs, in order. */
export const routePoliciesSchema = z
  .array(policyName)
  .default([])
  .describe('Custom policies this route runs, in this order (each at its own phase).');

export type PoliciesConfig = z.output<typeof policiesSchema>;
