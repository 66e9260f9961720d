import type Provider from 'oidc-provider';
import { CLIENT_AUTH_PATHS, providerPath } from './paths';

/**
 * oidc-provider answers a token request whose grant type the client is not registered for with
 * `invalid_request`; RFC 6749 §5.2 names that case `unauthorized_client` ("the authenticated client
 * is not authorized to use this authorization grant type"). Corrected after the library's error
 * handler has written the body (a post-middleware, the library's public hook), for every path to
 * it: the fast paths hand such requests to the library.
 */
const NOT_ALLOWED = 'requested grant type is not allowed for this client';

/**
 * RFC 6749 §5.1: a token endpoint's answer carries `Cache-Control: no-store` and `Pragma: no-cache`;
 * oidc-provider sends only the first (RFC 9111 retires Pragma, but HTTP/1.0 caches still read it),
 * and that not on revocation's answers.
 * Set before the library's own headers, as the fast paths do (endpointHeaders), on every answer of
 * its three client-authenticated endpoints.
 */
export function noCachePragma(provider: Provider): void {
  provider.use(async (ctx, next) => {
    if (ctx.method !== 'POST') return next();
    const path = providerPath(ctx.path);
    if (!CLIENT_AUTH_PATHS.has(path)) return next();
    ctx.set('Pragma', 'no-cache');
    // The library sends Cache-Control: no-store on the token and introspection endpoints' answers,
    // not on revocation's (its 200, its refusals): every answer of the three carries it here.
    if (path === '/token/revocation') ctx.set('Cache-Control', 'no-store');
    return next();
  });
}

export function correctTokenErrors(provider: Provider): void {
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.status !== 400 || ctx.oidc?.route !== 'token') return;
    const body = ctx.body as { error?: unknown; error_description?: unknown } | undefined;
    if (body?.error === 'invalid_request' && body.error_description === NOT_ALLOWED) body.error = 'unauthorized_client';
  });
}
