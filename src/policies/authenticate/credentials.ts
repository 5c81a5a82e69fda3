import type { IncomingMessage } from 'node:http';

export interface Presented {
  /** The API key from the configured header. */
  header: string | undefined;
  /** The token of `Authorization: Bearer <token>`. */
  bearer: string | undefined;
  /** An `Authorization` header that is not `Bearer <token>`. */
  malformed: boolean;
  /** A credential header sent more than once (Node joins or drops repeats silently). */
  repeated: boolean;
}

const BEARER = /^Bearer +([A-Za-z0-9._~+/=-]+) *$/i;

/** The token of `Authorization: Bearer <token>` (any number of spaces, RFC 6750 §2.1), else undefined. */
export function bearerToken(authorization: string): string | undefined {
  return BEARER.exec(authorization)?.[1];
}

/**
 * The credentials a request presents. Repeats are found in `rawHeaders`, because Node keeps only
 * the first `Authorization` and joins repeated custom headers with ", " — either would hide a
 * second credential.
 */
export function presentedCredentials(req: IncomingMessage, apiKeyHeader: string): Presented {
  const raw = req.rawHeaders;
  let auths = 0;
  let keys = 0;
  const keyLength = apiKeyHeader.length;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length === 13 && name.toLowerCase() === 'authorization') auths++;
    else if (name.length === keyLength && name.toLowerCase() === apiKeyHeader) keys++;
  }
  const headerValue = req.headers[apiKeyHeader];
  const header = typeof headerValue === 'string' ? headerValue.trim() : undefined;
  const authorization = req.headers.authorization;
  let bearer: string | undefined;
  let malformed = false;
  if (authorization !== undefined) {
    bearer = bearerToken(authorization);
    malformed = bearer === undefined;
  }
  return { header: header === '' ? undefined : header, bearer, malformed, repeated: auths > 1 || keys > 1 };
}
