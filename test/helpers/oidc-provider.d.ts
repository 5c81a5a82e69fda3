// The slice of panva's `oidc-provider` (which ships no types) the test helpers use.
declare module 'oidc-provider' {
  import type { IncomingMessage, ServerResponse } from 'node:http';

  // eslint-disable-next-line no-restricted-syntax -- describes the package's own default export
  export default class Provider {
    constructor(issuer: string, configuration?: Record<string, unknown>);
    callback(): (req: IncomingMessage, res: ServerResponse) => void;
  }
}
