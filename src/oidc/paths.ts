/** oidc-provider's client-authenticated endpoints: token, introspection, revocation. */
export const CLIENT_AUTH_PATHS: ReadonlySet<string> = new Set(['/token', '/token/introspection', '/token/revocation']);

/** A path as oidc-provider's router matches it: any case, one trailing slash ignored. */
export const providerPath = (p: string) => (p.length > 1 && p.endsWith('/') ? p.slice(0, -1) : p).toLowerCase();
