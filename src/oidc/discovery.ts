import type Provider from 'oidc-provider';

/**
 * Metadata (RFC 8414) that oidc-provider writes for endpoints and features this server does not
 * offer: there is no authorization endpoint (no grant here uses one, so RFC 8414 §2 lets it go),
 * and so no response modes, PKCE or `iss` response parameter; scopes are each client's, and the
 * library's `openid` is refused to every client; there are no ID tokens' claims. Left out, so a
 * client library reading the document never tries them.
 */
const NOT_OFFERED = [
  'authorization_endpoint',
  'response_modes_supported',
  'code_challenge_methods_supported',
  'authorization_response_iss_parameter_supported',
  'claims_parameter_supported',
  'request_uri_parameter_supported',
  'scopes_supported',
  'claims_supported',
  'claim_types_supported',
] as const;

/**
 * The library writes endpoint URLs from the request's own origin (its Host header). Every one is
 * put under the issuer (PUBLIC_URL) instead: a request naming another host must not be told to send
 * its client credentials, or fetch keys, there — nor leave such a document in a shared cache.
 */
function underIssuer(issuer: string, value: unknown): unknown {
  if (typeof value !== 'string') return value;
  const url = new URL(value);
  return `${issuer}${url.pathname}${url.search}`;
}

/**
 * Trims the discovery document to what this server serves, its endpoints under the issuer (a
 * post-middleware, the library's public hook).
 */
export function trimDiscovery(provider: Provider): void {
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.oidc?.route !== 'discovery' || !ctx.body || typeof ctx.body !== 'object') return;
    const body = ctx.body as Record<string, unknown>;
    for (const key of NOT_OFFERED) delete body[key];
    body.response_types_supported = []; // REQUIRED by RFC 8414; none, without an authorization endpoint
    for (const [key, value] of Object.entries(body)) {
      if (key === 'jwks_uri' || key.endsWith('_endpoint')) body[key] = underIssuer(provider.issuer, value);
    }
    const aliases = body.mtls_endpoint_aliases;
    if (aliases && typeof aliases === 'object') {
      for (const [key, value] of Object.entries(aliases)) (aliases as Record<string, unknown>)[key] = underIssuer(provider.issuer, value);
    }
  });
}
