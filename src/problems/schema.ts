import { z } from 'zod';

/** `problems.typeBase`: a problem's `type` is this plus its slug (SPEC §3). */
export const typeBaseSchema = z
  .string()
  .default('https://tollgate.dev/problems/')
  .describe('Problem `type` is this plus the slug.');

/** The default `typeBase`, for writers made without a config (the schema's own default). */
export const DEFAULT_TYPE_BASE: string = typeBaseSchema.parse(undefined);
