/**
 * A `WWW-Authenticate` challenge of the Bearer scheme (RFC 6750 §3): the realm, then each parameter
 * given, in order. Strings are quoted-strings, numbers tokens (RFC 9110 §11.2); a parameter left
 * undefined is left out. Every Bearer challenge of our routes is written here.
 */
export function bearerChallenge(realm: string, params: Record<string, string | number | undefined> = {}): string {
  const parts = [`Bearer realm=${quoted(realm)}`];
  for (const [name, value] of Object.entries(params)) {
    if (value === undefined) continue;
    parts.push(`${name}=${typeof value === 'number' ? String(value) : quoted(value)}`);
  }
  return parts.join(', ');
}

/** RFC 9110 §5.6.4: a quoted-string, its quote and backslash characters escaped. */
function quoted(value: string): string {
  return `"${value.replace(/["\\]/g, '\\$&')}"`;
}
