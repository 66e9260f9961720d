import type { Context, Next } from 'koa';
import { AppError } from '../errors';
import { hashSecret } from '../crypto/secrets';
import type { ClientRecord, ClientRepository } from '../clients/repository';
import type { Principal } from '../oidc/bearer';
import type { TenantRepository } from '../tenants/repository';
import type { UserService } from '../users/service';
import type { Caller } from '../factors/service';
import { bearerChallenge } from './challenge';

export interface AuthState {
  principal: Principal;
}

/** Account authentication failed: the API key is missing, unknown, or not the token client's. */
function badApiKey(message: string): AppError {
  return new AppError('UNAUTHORIZED', 401, message, undefined, { 'WWW-Authenticate': 'ApiKey header="api-key"' });
}

/** A tenant requires account authentication by API key and the request showed none. */
export function apiKeyRequired(): AppError {
  return badApiKey('An api-key header is required');
}

/** RFC 6750 §3.1: no token, or one that is not (or no longer) valid. */
export function unauthorized(publicUrl: string, error?: string): AppError {
  return new AppError('UNAUTHORIZED', 401, 'Missing or invalid access token', undefined, { 'WWW-Authenticate': bearerChallenge(publicUrl, { error }) });
}

/**
 * The bearer token of `Authorization: Bearer <b64token>` (RFC 6750 §2.1; the scheme in any case,
 * one or more spaces after it), or undefined for no Authorization or another scheme. A Bearer
 * header whose credentials are not one b64token is a malformed request: 400 invalid_request (§3.1).
 */
export function bearerToken(ctx: Context, realm: string): string | undefined {
  const header = ctx.get('authorization');
  const m = /^Bearer(?:$| +(.*)$)/is.exec(header);
  if (!m) return undefined;
  const token = /^[A-Za-z0-9\-._~+/]+=*$/.exec(m[1] ?? '')?.[0];
  if (!token) {
    throw malformedAuthorization(realm, 'must be Bearer and one token');
  }
  return token;
}

/** RFC 6750 §3.1: a malformed request, answered in the validation shape with its challenge. */
export function malformedAuthorization(realm: string, error: string): AppError {
  return new AppError('VALIDATION_ERROR', 400, 'Request is invalid', [{ fieldName: 'Authorization', error }], {
    'WWW-Authenticate': bearerChallenge(realm, { error: 'invalid_request' }),
  });
}

/**
 * RFC 9470: the token is valid but its authentication is not strong or fresh enough. The client
 * should step the user up (SCA) or have them log in again within `maxAge` seconds.
 */
export function insufficientUserAuthentication(publicUrl: string, maxAge?: number): AppError {
  const challenge = bearerChallenge(publicUrl, {
    error: 'insufficient_user_authentication',
    error_description: 'A stronger or more recent authentication is required',
    acr_values: 'urn:openbanking:psd2:sca',
    max_age: maxAge || undefined,
  });
  return new AppError('INSUFFICIENT_USER_AUTHENTICATION', 401, 'Strong customer authentication is required for this operation', undefined, {
    'WWW-Authenticate': challenge,
  });
}

/** RFC 6750: a valid bearer token is required; `ctx.state.principal` says whose it is. */
export function requireBearer(deps: { verify: (token: string) => Promise<Principal | undefined>; publicUrl: string }) {
  return async function authenticate(ctx: Context, next: Next): Promise<void> {
    const token = bearerToken(ctx, deps.publicUrl);
    if (!token) throw unauthorized(deps.publicUrl);
    const principal = await deps.verify(token);
    if (!principal) throw unauthorized(deps.publicUrl, 'invalid_token');
    ctx.state.principal = principal;
    await next();
  };
}

/**
 * End-user routes: the bearer token must be a user's (a client-credentials token has no user:
 * 403); its tenant and user must still be active; and account authentication holds — an
 * `api-key` header, when sent (or when the tenant requires it), must be the API key of the very
 * client the token was issued to. Sets `ctx.state.caller`.
 */
export function requireUser(
  deps: { tenants: Pick<TenantRepository, 'find'>; users: UserService; clients: ClientRepository; publicUrl: string },
  opts: {
    allowPending?: boolean;
    /**
     * The user's own authentication is at stake (their factors, a step-up): a token from an
     * admin's login on their behalf (`act`) is refused, so an operator can neither enrol a factor
     * nor produce the user's SCA.
     */
    ownAuthentication?: boolean;
  } = {},
) {
  return async function authenticateUser(ctx: Context, next: Next): Promise<void> {
    const p = ctx.state.principal as Principal | undefined;
    if (p?.tokenKind !== 'user' || !p.userId || !p.tenantId) {
      throw AppError.insufficientScope('USER_TOKEN_REQUIRED', 'This operation needs an end-user access token');
    }
    // A login waiting for its MFA challenge is good for the step-up routes only.
    if (p.pending && !opts.allowPending) throw insufficientUserAuthentication(deps.publicUrl);
    if (p.actor !== undefined && opts.ownAuthentication) {
      throw AppError.insufficientScope('ACTOR_TOKEN', "A token from an administrator's login on the user's behalf cannot use or change the user's authentication factors");
    }
    const tenant = await deps.tenants.find(p.tenantId);
    const user = tenant?.status === 'active' ? await deps.users.findActive(p.tenantId, p.userId) : undefined;
    if (!tenant || !user) throw unauthorized(deps.publicUrl, 'invalid_token');
    const apiKey = ctx.get('api-key');
    if (apiKey) {
      const client = apiKey.length <= 256 ? await deps.clients.findByApiKeyHash(hashSecret(apiKey)) : undefined;
      if (!client || client.disabled || client.id !== p.clientId) throw badApiKey('Invalid API key');
    } else if (tenant.policy.requireApiKey) {
      throw apiKeyRequired();
    }
    const caller: Caller = {
      tenant,
      user,
      clientId: p.clientId,
      tokenId: p.tokenId,
      transactionBound: p.transactionBound,
      sessionId: p.sessionId,
      acr: p.acr,
      amr: p.amr,
      authTime: p.authTime,
    };
    ctx.state.caller = caller;
    await next();
  };
}

/**
 * Account authentication (seed 000 layer 1): the calling application, shown by a client token
 * (Bearer), by its API key (`api-key` header), or by both, which must then be the same client.
 * Sets `ctx.state.client`, `ctx.state.clientTenant` (the token's tenant, if a token was shown) and
 * `ctx.state.apiKeyShown` (for a tenant that requires the API key: see the registration route).
 */
export function requireClient(deps: {
  verify: (token: string) => Promise<Principal | undefined>;
  clients: ClientRepository;
  publicUrl: string;
}) {
  return async function authenticateClient(ctx: Context, next: Next): Promise<void> {
    const apiKey = ctx.get('api-key');
    let keyClient: ClientRecord | undefined;
    if (apiKey) {
      keyClient = apiKey.length <= 256 ? await deps.clients.findByApiKeyHash(hashSecret(apiKey)) : undefined;
      if (!keyClient || keyClient.disabled) throw badApiKey('Invalid API key');
    }
    const token = bearerToken(ctx, deps.publicUrl);
    if (!token && ctx.get('authorization') && keyClient) {
      // Some other credential beside the key: refused rather than ignored (no bearer token was
      // sent, so RFC 6750 §3.1's challenge names no error).
      throw unauthorized(deps.publicUrl);
    }
    if (!token && keyClient) {
      ctx.state.client = keyClient;
      ctx.state.clientTenant = undefined;
      ctx.state.apiKeyShown = true;
      await next();
      return;
    }
    if (!token) throw unauthorized(deps.publicUrl);
    const principal = await deps.verify(token);
    if (!principal) throw unauthorized(deps.publicUrl, 'invalid_token');
    if (principal.tokenKind !== 'client') throw AppError.insufficientScope('CLIENT_TOKEN_REQUIRED', 'This operation needs a client access token or API key');
    const client = await deps.clients.find(principal.clientId);
    if (!client || client.disabled) throw unauthorized(deps.publicUrl, 'invalid_token');
    // Both shown: they must name one application, as on the end-user routes.
    if (keyClient && keyClient.id !== client.id) throw badApiKey('Invalid API key');
    ctx.state.client = client;
    ctx.state.clientTenant = principal.tenantId;
    ctx.state.apiKeyShown = keyClient !== undefined;
    await next();
  };
}

export type { ClientRecord };
