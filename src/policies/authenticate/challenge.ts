/**
 * The `WWW-Authenticate` header of a 401 (RFC 6750 §3): the Bearer scheme, and for a rejected
 * token `error="invalid_token"` with a description.
 */
export function challenge(
  error?: 'invalid_token' | 'invalid_request',
  description?: string,
): Record<string, string> {
  if (error === undefined) return { 'www-authenticate': 'Bearer realm="tollgate"' };
  const desc = description === undefined ? '' : `, error_description="${description.replace(/["\\]/g, "'")}"`;
  return { 'www-authenticate': `Bearer realm="tollgate", error="${error}"${desc}` };
}
