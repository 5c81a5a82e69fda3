import { positiveInt } from '../../config/primitives.js';

/** `limits.bodyBytes`: the largest request body accepted. */
export const bodyBytesSchema = positiveInt().default(1_048_576).describe('Largest request body accepted.');

/** The default body limit (the schema's own), for middleware given none. */
export const DEFAULT_BODY_BYTES: number = bodyBytesSchema.parse(undefined);
