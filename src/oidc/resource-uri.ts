/**
 * Why a value cannot be an RFC 8707 resource indicator, in oidc-provider's own words, or undefined
 * for an absolute URI without a fragment. Free of imports: the configuration checks the token
 * audience with it in a cluster's primary, which does not load the library.
 */
export function resourceSyntaxError(value: string): string | undefined {
  const href = URL.parse(value)?.href;
  if (!href) return 'resource indicator must be an absolute URI';
  if (href.includes('#')) return 'resource indicator must not contain a fragment component';
  return undefined;
}
