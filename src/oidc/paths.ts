/** A path as oidc-provider's router matches it: any case, one trailing slash ignored. */
export const providerPath = (p: string) => (p.length > 1 && p.endsWith('/') ? p.slice(0, -1) : p).toLowerCase();
