import { z } from 'zod';
import { isoDateTime } from '../../config/primitives.js';

export const goneSchema = z
  .strictObject({
    redirectEndpoint: z
      .string()
      .min(1)
      .describe('Where clients should go instead; sent as `redirect_endpoint`.'),
    sunset: isoDateTime().describe('When the route was (or will be) retired; sent as the `Sunset` header.'),
    deprecation: isoDateTime()
      .optional()
      .describe('When it was deprecated; sent as the `Deprecation` header (defaults to `sunset`).'),
    detail: z.string().optional().describe('A sentence for clients; a default names the new endpoint.'),
  })
  .describe('A retired route: answers 410 gone.');

export type GoneConfig = z.output<typeof goneSchema>;
