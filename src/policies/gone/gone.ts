import { Problem } from '../../problems/problem.js';
import { httpDate } from '../../shared/http.js';
import type { Stage } from '../../core/stage.js';
import type { GoneConfig } from './schema.js';

/**
 * A retired route: 410 with `redirect_endpoint`, `Sunset` (RFC 8594, an HTTP-date) and
 * `Deprecation` (RFC 9745, a structured-field date `@<unix seconds>`).
 */
export function createGoneStage(gone: GoneConfig): Stage {
  const sunset = Date.parse(gone.sunset);
  const deprecation = Date.parse(gone.deprecation ?? gone.sunset);
  const headers = Object.freeze({
    sunset: httpDate(sunset),
    deprecation: `@${Math.floor(deprecation / 1000)}`,
    link: `<${gone.redirectEndpoint}>; rel="successor-version"`,
  });
  const detail = gone.detail ?? `This endpoint was retired; use ${gone.redirectEndpoint} instead.`;
  const extensions = Object.freeze({ redirect_endpoint: gone.redirectEndpoint });
  return {
    name: 'gone',
    run() {
      throw new Problem('gone', { detail, extensions, headers });
    },
  };
}
