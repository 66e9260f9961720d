import type Koa from 'koa';
import type Provider from 'oidc-provider';
import type { TenantRepository } from '../tenants/repository';
import type { Logger } from '../log';
import { isDatabaseUnavailable } from '../db/unavailable';
import { grantedScopes, resourceInfo } from './resource';
import { requestedTenantIdOf, resolveTenant } from './tenant';
import type { OidcClient, UserTokenContext } from './user-tokens';
import { answerFailure, endpointHeaders } from './fast-form';
import type { FastGrant, TokenRequest } from './fast-token';

/**
 * The client_credentials grant of a client authenticating with client_secret_basic — the token
 * request a deployment sees most — answered without oidc-provider's request pipeline (parameter
 * assembly, its client authentication, two nested routers), which costs about as much CPU as the
 * rest of the request (README, Benchmark).
 *
 * Only the HTTP handling is ours. The token is the library's own ClientCredentials model, given
 * what the library's grant handler gives it through our hooks in provider.ts — the same resource
 * server (audience, lifetime and format from resourceInfo), scope (grantedScopes) and extra claims
 * (tenant, sub) — and saved by it, so storage, lifetime and the model's events are the library's.
 * Only a success is answered here (and, as the library answers them, a database outage or a body
 * cut short): every refusal goes to the library unchanged, its body replayed, and so does anything
 * else — another authentication method, a wrong secret, an unknown or disabled client, a grant the
 * client may not use, a scope it may not have, a tenant it does not serve, a JWT access token,
 * DPoP, CORS, a resource or any other parameter. Nobody listens to the library's `grant.success`,
 * which is not emitted here. tests/integration/fast-client-credentials.test.ts sends every request
 * to both paths and compares the answers and the tokens stored.
 */
export type FastClientCredentials = FastGrant;

interface Deps {
  provider: () => Provider;
  /** Audience, default lifetime and signing key, as the provider's hooks use them. */
  context: () => Pick<UserTokenContext, 'audience' | 'defaultTtl' | 'signingKid' | 'signingAlg'>;
  /** Cached lookups (src/cache/lookups.ts), as the provider's hooks read them. */
  tenants: Pick<TenantRepository, 'find'>;
  logger: Logger;
}

/** The only form members a plain request has; anything else (even one the library would drop) is the library's. */
const PLAIN_PARAMS = new Set(['grant_type', 'scope', 'tenant']);

interface PlainParams {
  scope?: string;
  form: Record<string, string>;
}

/** The parameters of a plain request (no others), or undefined. */
function plainParams(form: Record<string, string>): PlainParams | undefined {
  for (const key of Object.keys(form)) if (!PLAIN_PARAMS.has(key)) return undefined;
  // The library reads an empty parameter as absent.
  return { scope: form.scope || undefined, form };
}

/**
 * The library takes the default resource (our audience) only if it is an absolute URI without a
 * fragment (shared/check_resource.js), and refuses every token request otherwise.
 */
function usableResource(audience: string): boolean {
  const href = URL.parse(audience)?.href;
  return !!href && !href.includes('#');
}

export function createFastClientCredentials(deps: Deps & { enabled: boolean }): FastClientCredentials {
  let audienceChecked: { audience: string; usable: boolean } | undefined;
  const resourceUsable = (audience: string) => {
    if (audienceChecked?.audience !== audience) audienceChecked = { audience, usable: usableResource(audience) };
    return audienceChecked.usable;
  };

  /**
   * The library's token for a request it would judge plain and valid, not yet saved; undefined:
   * leave the request to the library. Everything is decided on the one Client instance the
   * library's own authentication would find now, after the body has arrived (a request whose
   * body comes slowly is judged on the client as it is then, not as it was at its headers).
   */
  async function prepare(ctx: Koa.Context, credentials: { id: string; secret: string }, params: PlainParams) {
    const provider = deps.provider();
    const { audience, defaultTtl, signingKid, signingAlg } = deps.context();
    if (!resourceUsable(audience)) return undefined;
    // Through our cached Client adapter: disabled clients do not exist for it.
    const client = (await provider.Client.find(credentials.id)) as OidcClient | undefined;
    if (!client || client.tokenEndpointAuthMethod !== 'client_secret_basic' || client.token_format !== 'opaque') return undefined;
    if (!client.grantTypeAllowed('client_credentials') || !(await client.compareClientSecret(credentials.secret))) return undefined;
    // Our getResourceServerInfo hook (provider.ts): the granted scopes, then the tenant.
    const granted = grantedScopes(client, params.scope);
    if (granted.denied) return undefined;
    // A tenant the client does not serve throws the library's invalid_request: the caller hands it over.
    const tenant = await resolveTenant(deps.tenants, requestedTenantIdOf((name) => ctx.get(name), params.form), client.tenants ?? []);
    const info = resourceInfo({ audience, client, tenant, defaultTtl, signingKid, signingAlg });
    // The library's grant handler: the granted scopes (a set: a client's stored scope may repeat
    // one), then those of the resource server.
    const scopes = [...new Set(granted.scope)];
    const token = new provider.ClientCredentials({ client, scope: scopes.join(' ') || undefined });
    token.resourceServer = new provider.ResourceServer(audience, info);
    const served = new Set(info.scope.split(' '));
    token.scope = scopes.filter((s) => served.has(s)).join(' ') || undefined;
    // What extraTokenClaims (provider.ts) returns for a client's own token, which it returns as set.
    token.extra = { tenant: tenant?.id, sub: client.clientId };
    return token;
  }

  const fast: FastClientCredentials = {
    enabled: deps.enabled,
    served: 0,
    async answer(ctx, request: TokenRequest) {
      const params = plainParams(request.form);
      if (!params) return false;

      let token: Awaited<ReturnType<typeof prepare>>;
      try {
        token = await prepare(ctx, request.credentials, params);
      } catch (err) {
        // Nothing is written yet: any refusal, or a failure that is not the database's, is the library's to answer.
        if (!isDatabaseUnavailable(err)) return false;
        // The database is away: say so now, not after the library has waited for it again.
        answerFailure(ctx, err, deps.logger, 'token', 'client_credentials grant failed');
        return true;
      }
      if (!token) return false;

      try {
        const value = await token.save();
        // oidc-provider's buildTokenResponse: members in its order, undefined ones left out.
        const answer: Record<string, unknown> = { access_token: value, expires_in: token.expiration };
        if (token.scope) answer.scope = token.scope;
        answer.token_type = token.tokenType;
        ctx.status = 200;
        endpointHeaders(ctx);
        ctx.body = answer;
        fast.served += 1;
      } catch (err) {
        answerFailure(ctx, err, deps.logger, 'token', 'client_credentials grant failed');
      }
      return true;
    },
  };
  return fast;
}
