/**
 * A `WWW-Authenticate` challenge (RFC 9110 §11.6.1): the scheme and its realm, then each parameter
 * given, in order. Strings are quoted-strings, numbers tokens (RFC 9110 §11.2); a parameter left
 * undefined is left out. Every challenge this server writes itself is written here.
 */
export function authChallenge(scheme: 'Basic' | 'Bearer', realm: string, params: Record<string, string | number | undefined> = {}): string {
  const parts = [`${scheme} realm=${quoted(realm)}`];
  for (const [name, value] of Object.entries(params)) {
    if (value === undefined) continue;
    parts.push(`${name}=${typeof value === 'number' ? String(value) : quoted(value)}`);
  }
  return parts.join(', ');
}

/** RFC 6750 §3: the Bearer challenge of our routes. */
export function bearerChallenge(realm: string, params: Record<string, string | number | undefined> = {}): string {
  return authChallenge('Bearer', realm, params);
}

/** The challenge oidc-provider sends with a refused Basic client authentication, in its format. */
export function basicChallenge(realm: string, description?: string): string {
  return authChallenge('Basic', realm, { error: 'invalid_client', error_description: description || undefined });
}

/** RFC 9110 §5.6.4: a quoted-string, its quote and backslash characters escaped. */
function quoted(value: string): string {
  return `"${value.replace(/["\\]/g, '\\$&')}"`;
}
