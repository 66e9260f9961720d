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

/** Trims the discovery document to what this server serves (a post-middleware, the library's public hook). */
export function trimDiscovery(provider: Provider): void {
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.oidc?.route !== 'discovery' || !ctx.body || typeof ctx.body !== 'object') return;
    const body = ctx.body as Record<string, unknown>;
    for (const key of NOT_OFFERED) delete body[key];
    body.response_types_supported = []; // REQUIRED by RFC 8414; none, without an authorization endpoint
  });
}
