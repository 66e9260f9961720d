import Provider, { errors, type Configuration, type KoaContextWithOIDC } from 'oidc-provider';
import type { DbSource } from '../db/tx';
import { tokenAudience, type Config } from '../config';
import type { KeySet } from '../keys/service';
import type { ClientRepository } from '../clients/repository';
import type { Tenant, TenantRepository } from '../tenants/repository';
import type { UserService } from '../users/service';
import type { User } from '../users/repository';
import { KnexAdapter } from './adapter';
import { ClientAdapter, EXTRA_CLIENT_METADATA, hashedSecretComparison } from './client-model';
import { createTenantResolver, requestedTenantId } from './tenant';
import { revocationAllowed, type IntrospectionPolicy } from './introspection';
import { checkSingleResource, grantedScopes, resourceInfo } from './resource';
import { passwordGrantHandler, PASSWORD_GRANT_DUPES, PASSWORD_GRANT_PARAMS } from './password-grant';
import { userClaims, type OidcClient, type UserTokenContext } from './user-tokens';
import { trimDiscovery } from './discovery';
import { issuedBeforeDisabling } from './not-before';
import { sessionEnd, sessionOverByPolicy } from '../sessions/duration';
import { correctTokenErrors, noCachePragma } from './token-errors';

export interface ProviderDeps {
  config: Config;
  db: DbSource;
  keys: KeySet;
  /** Read on every token request: the cached lookups (src/cache/lookups.ts). */
  clients: Pick<ClientRepository, 'find'>;
  tenants: Pick<TenantRepository, 'find'>;
  users: UserService;
  clock: () => Date;
  introspectionPolicy: IntrospectionPolicy;
  mfaPending: (tenant: Tenant, user: User) => Promise<boolean>;
}

/** What findAccount returns: oidc-provider's Account plus the user's tenant. */
interface PortcullisAccount {
  [key: string]: unknown;
  accountId: string;
  tenantId: string;
  claims(): { sub: string };
}

const now = () => Math.floor(Date.now() / 1000);

/** A refresh's session end, with its tenant's policy (async to find), for the synchronous ttl hooks. */
const refreshingSessionEnds = new WeakMap<object, number>();

/** Builds the oidc-provider instance: every OAuth endpoint, configured only through public hooks. */
export function createProvider(deps: ProviderDeps): Provider {
  const { config, keys } = deps;
  const audience = tokenAudience(config);
  const tenantResolver = createTenantResolver(deps.tenants);
  const clientAdapter = new ClientAdapter(deps.clients);

  /** The tenant a token is for: the user's when a user is involved, else the one the request names. */
  async function tenantFor(ctx: KoaContextWithOIDC, client: OidcClient): Promise<Tenant | undefined> {
    const account = ctx.oidc.entities.Account as PortcullisAccount | undefined;
    if (account) {
      const tenant = await deps.tenants.find(account.tenantId);
      if (tenant?.status !== 'active') throw new errors.CustomOIDCProviderError('invalid_grant', 'grant request is invalid');
      return tenant;
    }
    return tenantResolver.forRequest(ctx, client.tenants ?? []);
  }

  const configuration: Configuration = {
    adapter: (name: string) => (name === 'Client' ? clientAdapter : new KnexAdapter(deps.db, name)),
    jwks: keys.jwks as Configuration['jwks'],
    clientAuthMethods: ['client_secret_basic', 'client_secret_post'],
    clientDefaults: {
      grant_types: ['client_credentials'],
      response_types: [],
      id_token_signed_response_alg: keys.signingAlg,
      token_endpoint_auth_method: 'client_secret_basic',
    },
    extraClientMetadata: { properties: [...EXTRA_CLIENT_METADATA] },
    responseTypes: ['none'],
    scopes: [],
    claims: {},
    routes: {
      jwks: '/jwks',
      token: '/token',
      introspection: '/token/introspection',
      revocation: '/token/revocation',
    },
    /**
     * Always rotate; but the library consumes the old token before it resolves the request's
     * `resource` and tenant, so a refusal there would use the token up and the client's retry would
     * end the session as a replay. Both are checked here, before that.
     */
    rotateRefreshToken: async (ctx) => {
      const rt = ctx.oidc.entities.RefreshToken as { resource?: unknown; iat?: number } | undefined;
      checkSingleResource((ctx.oidc.params as { resource?: unknown } | undefined)?.resource || rt?.resource, audience);
      // A refresh naming a tenant (di_fiid, institutionId, tenant) must name its session's, as the
      // other grants must name one the client serves: the same refusal, before consumption too.
      const account = ctx.oidc.entities.Account as PortcullisAccount | undefined;
      const requested = requestedTenantId(ctx);
      if (account && requested !== undefined && requested !== account.tenantId) throw new errors.InvalidRequest('the client is not allowed for this tenant');
      // A disabled tenant: tenantFor's refusal, but before the token is consumed (after consumption,
      // the retry would be a reuse that ends the session). A session begun before its client or
      // tenant was last disabled does not come back when it is enabled again (src/oidc/not-before.ts).
      const client = ctx.oidc.client as OidcClient;
      const tenant = account ? await tenantFor(ctx, client) : undefined;
      const session = ctx.oidc.entities.Grant as { iat?: number; exp?: number } | undefined;
      const end = session ? sessionEnd(session, tenant) : undefined;
      if (end !== undefined) refreshingSessionEnds.set(ctx, end);
      if (
        issuedBeforeDisabling(rt?.iat, client.tokens_not_before) ||
        issuedBeforeDisabling(rt?.iat, tenant?.tokensNotBefore) ||
        // Older than the tenant's session duration allows now (src/sessions/duration.ts).
        sessionOverByPolicy(session?.iat, tenant)
      ) {
        throw new errors.CustomOIDCProviderError('invalid_grant', 'grant request is invalid');
      }
      // A scope asked for must still be the client's, as on the other grants (the library checks
      // only that the session holds it, and the token came out with an empty scope).
      const { denied } = grantedScopes(client, (ctx.oidc.params as { scope?: string } | undefined)?.scope);
      if (denied) throw new errors.InvalidScope('requested scope is not allowed', denied);
      return true;
    },
    // Setting this hook is also what makes oidc-provider offer the refresh_token grant.
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    /**
     * Refresh grants look the user up again: a deleted or locked user, or one whose tenant the
     * client no longer serves, cannot refresh.
     */
    async findAccount(ctx, sub) {
      const user = await deps.users.findActiveForToken(sub);
      const client = ctx.oidc.client as OidcClient | undefined;
      if (!user || (client && !(client.tenants ?? []).includes(user.tenantId))) return undefined;
      const account: PortcullisAccount = { accountId: user.id, tenantId: user.tenantId, claims: () => ({ sub: user.id }) };
      return account;
    },
    features: {
      devInteractions: { enabled: false },
      // On by default in the library, and not offered here: our own routes verify no DPoP proof
      // (a bound token must never pass as a bearer one, RFC 9449 §7.2), and there are no browser
      // sessions to end nor authorization requests to push.
      dPoP: { enabled: false },
      rpInitiatedLogout: { enabled: false },
      pushedAuthorizationRequests: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: {
        enabled: true,
        // The library has found the token's session (if any) by now.
        allowedPolicy: (ctx, client, token) =>
          deps.introspectionPolicy(client as OidcClient, token, { sessionStart: (ctx.oidc.entities.Grant as { iat?: number } | undefined)?.iat }),
      },
      revocation: { enabled: true, allowedPolicy: (_ctx, client, token) => revocationAllowed(client, token) },
      userinfo: { enabled: false },
      // Token requests cannot ask for authorization_details; step-up tokens carry the ones the
      // user approved (dynamic linking), and introspection returns them as they are.
      richAuthorizationRequests: {
        enabled: false,
        authorizationDetailsForIntrospection: (_ctx, token) => (token as unknown as { rar?: [] }).rar ?? [],
      },
      resourceIndicators: {
        enabled: true,
        // Several requested (`oneOf`) stay several, for the library to refuse, as its default does.
        defaultResource: (_ctx, _client, oneOf) => oneOf ?? audience,
        useGrantedResource: () => true,
        getResourceServerInfo: async (ctx, resourceIndicator, client) => {
          if (resourceIndicator !== audience) throw new errors.InvalidTarget();
          const c = client as OidcClient;
          const params = ctx.oidc.params as { scope?: string; grant_type?: string } | undefined;
          if (params && ctx.oidc.route === 'token' && params.grant_type === 'client_credentials') {
            // RFC 8707 lets `resource` repeat; the library takes one value named twice as one. Our
            // tokens have one audience, and more than one resource is invalid_target on every grant,
            // the same value twice included (as the password grant and a refresh answer it).
            checkSingleResource((params as { resource?: unknown }).resource, audience);
            const { scope, denied } = grantedScopes(c, params.scope);
            if (denied) throw new errors.InvalidScope('requested scope is not allowed', denied);
            params.scope = scope.join(' ') || undefined;
          }
          const tenant = await tenantFor(ctx, c);
          return resourceInfo({ audience, client: c, tenant, defaultTtl: config.tokens.accessTokenTtlSeconds, signingKid: keys.signingKid, signingAlg: keys.signingAlg });
        },
      },
    },
    ttl: {
      ClientCredentials: (_ctx, token) => token.resourceServer?.accessTokenTTL ?? config.tokens.accessTokenTtlSeconds,
      // Never beyond the session's end: its own expiry, or sooner as its tenant's policy stands
      // (found before the refresh token is rotated: refreshingSessionEnds).
      AccessToken: (ctx, token) => {
        const ttl = token.resourceServer?.accessTokenTTL ?? config.tokens.accessTokenTtlSeconds;
        const end = ctx ? (refreshingSessionEnds.get(ctx) ?? ctx.oidc.entities.Grant?.exp) : undefined;
        return end ? Math.max(1, Math.min(ttl, end - now())) : ttl;
      },
      RefreshToken: (ctx) => {
        const end = ctx ? (refreshingSessionEnds.get(ctx) ?? ctx.oidc.entities.Grant?.exp) : undefined;
        return end ? Math.max(1, end - now()) : 60;
      },
      Grant: () => 36000,
    },
    async extraTokenClaims(ctx, token) {
      const t = token as unknown as { extra?: Record<string, unknown>; kind: string };
      if (t.extra && Object.keys(t.extra).length > 0) return t.extra; // set by our own issuance
      const client = ctx?.oidc.client as OidcClient | undefined;
      if (!client) return undefined;
      const rt = ctx.oidc.entities.RefreshToken;
      const account = ctx.oidc.entities.Account as PortcullisAccount | undefined;
      if (token.kind === 'AccessToken' && rt && account) {
        // A refreshed access token keeps the authentication of the session's login.
        return userClaims(
          { id: account.accountId, tenantId: account.tenantId },
          { acr: rt.acr ?? '', amr: rt.amr ?? [], authTime: rt.authTime ?? 0, sessionId: rt.grantId ?? '' },
        );
      }
      const tenant = await tenantFor(ctx, client);
      if (token.kind === 'ClientCredentials') return { tenant: tenant?.id, sub: client.clientId };
      return { tenant: tenant?.id };
    },
    // DESIGN's claims are the same in introspection and in a JWT access token: the JWT says its
    // token_type too (introspection takes it from the token; a JWT is never anything but Bearer here).
    formats: {
      customizers: {
        jwt: (_ctx, _token, jwt) => {
          jwt.payload.token_type = 'Bearer';
        },
      },
    },
    pkce: { required: () => false },
    renderError: async (ctx, out) => {
      ctx.type = 'json';
      ctx.body = out;
    },
  };

  const provider = new Provider(config.publicUrl, configuration);
  noCachePragma(provider);
  trimDiscovery(provider);
  correctTokenErrors(provider);
  provider.proxy = config.trustProxy;
  provider.maxIpsCount = 1;
  provider.Client.prototype.compareClientSecret = hashedSecretComparison();
  const context = (): UserTokenContext => ({ provider, audience, defaultTtl: config.tokens.accessTokenTtlSeconds, signingKid: keys.signingKid, signingAlg: keys.signingAlg, clock: deps.clock });
  provider.registerGrantType(
    'password',
    passwordGrantHandler({ context, users: deps.users, tenantFor, mfaPending: deps.mfaPending }),
    PASSWORD_GRANT_PARAMS,
    PASSWORD_GRANT_DUPES,
  );
  return provider;
}
