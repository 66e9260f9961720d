import { randomBytes } from 'node:crypto';
import { sessionEnd } from '../sessions/duration';
import type { SigningAlg } from '../keys/service';
import type Provider from 'oidc-provider';
import type { Tenant } from '../tenants/repository';
import type { LoginClosing } from '../users/login-end';
import type { User } from '../users/repository';
import { closeLoginWithSession } from './adapter';
import { resourceInfo, type ResourceInfo } from './resource';
import type { PortcullisClientExtras } from './client-model';

export const ACR_CA = 'urn:openbanking:psd2:ca';
export const ACR_SCA = 'urn:openbanking:psd2:sca';

type ProviderClient = NonNullable<Awaited<ReturnType<Provider['Client']['find']>>>;
export type OidcClient = ProviderClient & Partial<PortcullisClientExtras>;

export interface UserTokenResponse {
  access_token: string;
  token_type: 'Bearer';
  expires_in: number;
  refresh_token?: string;
  scope?: string;
  member_id: string;
}

export interface UserTokenContext {
  provider: Provider;
  audience: string;
  defaultTtl: number;
  signingKid: string;
  signingAlg: SigningAlg;
  /** The clock of auth_time (the same clock that judges freshness). */
  clock: () => Date;
}

/** A session (Grant) id as oidc-provider makes one: 256 random bits, base64url. */
function newGrantId(): string {
  return randomBytes(32).toString('base64url');
}

/** oidc-provider honours a preset `expiresIn` instead of calling the ttl hook; its types omit it. */
function setLifetime(token: object, seconds: number): void {
  (token as { expiresIn?: number }).expiresIn = seconds;
}

/**
 * A token's lifetime, its `iat` and `exp` from one reading of the clock: left to the library, exp
 * is read as now + lifetime and iat a moment later, so a token made across a second's boundary
 * lived a second less than its `expires_in` said.
 */
function setTokenLifetime(token: object, seconds: number): void {
  const now = Math.floor(Date.now() / 1000);
  setLifetime(token, seconds);
  Object.assign(token, { iat: now, exp: now + seconds });
}

/** The session's refresh token (when the client may refresh): rotating, ending with the session. */
async function saveRefreshToken(
  c: UserTokenContext,
  r: { client: OidcClient; userId: string; sessionId: string; scope?: string; acr: string; amr: string[]; authTime: number; lifetime: number },
): Promise<string | undefined> {
  if (!r.client.grantTypeAllowed('refresh_token')) return undefined;
  const rt = new c.provider.RefreshToken({
    accountId: r.userId,
    client: r.client,
    grantId: r.sessionId,
    gty: 'password',
    scope: r.scope as string,
    resource: c.audience,
    acr: r.acr,
    amr: r.amr,
    authTime: r.authTime,
    sid: r.sessionId,
    rotations: 0,
  });
  setTokenLifetime(rt, r.lifetime);
  return rt.save();
}

/** What a user access token says about its user, carried in `extra` (see STACK-NOTES). */
/** `sid` names the session, so a JWT access token, too, dies with it. */
export function userClaims(user: { id: string; tenantId: string }, auth: { acr: string; amr: string[]; authTime: number; sessionId: string }) {
  return { tenant: user.tenantId, member_id: user.id, acr: auth.acr, amr: auth.amr, auth_time: auth.authTime, sid: auth.sessionId };
}

/** The `admin` scope belongs to admin clients' own tokens, never to a user's. */
export function userScopes(scopes: string[]): string[] {
  return scopes.filter((s) => s !== 'admin');
}

/**
 * Starts a session (an oidc-provider Grant) for a user who has just authenticated, and issues its
 * access token and rotating refresh token. Used by the password grant and by registration.
 * The session's end is fixed now: refresh tokens and access tokens never outlive it.
 */
export async function startUserSession(
  c: UserTokenContext,
  input: {
    client: OidcClient;
    tenant: Tenant;
    user: User;
    scope: string[];
    amr: string[];
    acr: string;
    pending?: boolean;
    /** RFC 8693 actor: an admin logged the user in, so the token is never taken for the user's own login. */
    act?: { sub: string };
    /**
     * The password login this session ends: closed by the session's own INSERT, which marks it
     * `written` (src/users/login-end.ts). If it is not, the caller closes it apart.
     */
    login?: LoginClosing;
  },
): Promise<UserTokenResponse & { mfa_required?: true }> {
  const { provider } = c;
  const { client, tenant, user } = input;
  const scope = userScopes(input.scope);
  const authTime = Math.floor(c.clock().getTime() / 1000);
  const resource = resourceInfo({ audience: c.audience, client, tenant, defaultTtl: c.defaultTtl, signingKid: c.signingKid, signingAlg: c.signingAlg });
  // A pending login's token is always opaque: a JWT would be accepted by resource servers that
  // verify offline, whatever its claims say.
  const info: ResourceInfo = input.pending ? { ...resource, accessTokenFormat: 'opaque', jwt: undefined } : resource;
  const sessionSeconds = tenant.policy.sessionDurationSeconds;
  const scopeString = scope.join(' ') || undefined;

  const grant = new provider.Grant({ accountId: user.id, clientId: client.clientId });
  if (scopeString) grant.addResourceScope(c.audience, scopeString);
  setLifetime(grant, sessionSeconds);
  // The session's id is chosen here, so the session and its tokens are stored together: one
  // INSERT of the Grant, the access token and the refresh token while the Grant waits in the
  // insert batch (src/oidc/adapter.ts). Nothing is handed out unless all are stored; a token
  // stored without its session is never accepted (introspection and refresh need the Grant).
  const grantId = newGrantId();
  grant.jti = grantId;

  const at = new provider.AccessToken({ accountId: user.id, client, grantId, gty: 'password', scope: scopeString, sid: grantId });
  at.resourceServer = new provider.ResourceServer(c.audience, info);
  at.extra = {
    ...userClaims(user, { acr: input.acr, amr: input.amr, authTime, sessionId: grantId }),
    // Login-time MFA: usable only on the step-up routes, inactive everywhere else.
    ...(input.pending ? { pending: 'mfa' } : {}),
    ...(input.act ? { act: input.act } : {}),
  };
  const accessTtl = Math.min(info.accessTokenTTL, sessionSeconds);
  setTokenLifetime(at, accessTtl);

  const forget = input.login ? closeLoginWithSession(grantId, input.login) : undefined;
  let saved;
  try {
    saved = await Promise.all([
      grant.save(),
      at.save(),
      // A pending login gets its refresh token only when the challenge succeeds. An admin's login
      // gets none: the library's refresh would not carry `act` on, and the operator logs in again
      // (audited) rather than holding the user's session open.
      input.pending || input.act
        ? undefined
        : saveRefreshToken(c, { client, userId: user.id, sessionId: grantId, scope: scopeString, acr: input.acr, amr: input.amr, authTime, lifetime: sessionSeconds }),
    ]);
  } finally {
    forget?.();
  }
  const [, accessToken, refreshToken] = saved;

  return {
    access_token: accessToken,
    token_type: 'Bearer',
    expires_in: accessTtl,
    ...(refreshToken ? { refresh_token: refreshToken } : {}),
    ...(scopeString ? { scope: scopeString } : {}),
    member_id: user.id,
    ...(input.pending ? { mfa_required: true as const } : {}),
  };
}

export interface StepUpInput {
  clientId: string;
  tenant: Tenant;
  user: User;
  sessionId: string;
  scope: string[];
  amr: string[];
  authorizationDetails?: unknown;
  /** Login-time MFA: the session's first usable token, with the session's refresh token. */
  completesLogin: boolean;
}

export class SessionGoneError extends Error {}

/**
 * After a successful SCA challenge: a new access token of the same user, client, tenant and
 * session (so revoking the session revokes it), with acr SCA, the factor's amr, a fresh auth_time
 * and, for a transaction, its authorization_details. Step-up tokens are short-lived (tenant
 * policy); the one that completes a login-time MFA is an ordinary session token and comes with the
 * session's refresh token.
 */
export async function issueStepUpToken(c: UserTokenContext, input: StepUpInput): Promise<UserTokenResponse & { authorization_details?: unknown }> {
  const { provider } = c;
  const { tenant, user } = input;
  const client = (await provider.Client.find(input.clientId)) as OidcClient | undefined;
  const grant = await provider.Grant.find(input.sessionId);
  if (!client || !grant || grant.isExpired || grant.accountId !== user.id || grant.clientId !== client.clientId) throw new SessionGoneError();
  const now = Math.floor(c.clock().getTime() / 1000);
  // Its end as the tenant's policy stands now (src/sessions/duration.ts), not only as it began.
  const sessionLeft = Math.max(1, (sessionEnd(grant, tenant) ?? now + 1) - Math.floor(Date.now() / 1000));
  const scope = userScopes(input.scope);
  const scopeString = scope.join(' ') || undefined;
  const info = resourceInfo({ audience: c.audience, client, tenant, defaultTtl: c.defaultTtl, signingKid: c.signingKid, signingAlg: c.signingAlg });
  const ttl = Math.min(input.completesLogin ? tenant.policy.accessTokenTtlSeconds : tenant.policy.stepUpTtlSeconds, sessionLeft);

  const at = new provider.AccessToken({ accountId: user.id, client, grantId: input.sessionId, gty: 'stepup', scope: scopeString, sid: input.sessionId });
  at.resourceServer = new provider.ResourceServer(c.audience, { ...info, accessTokenTTL: ttl });
  at.extra = userClaims(user, { acr: ACR_SCA, amr: input.amr, authTime: now, sessionId: input.sessionId });
  // RFC 9396: oidc-provider carries `rar` into JWT access tokens and introspection replies.
  if (input.authorizationDetails) (at as unknown as { rar: unknown }).rar = input.authorizationDetails;
  setTokenLifetime(at, ttl);
  const accessToken = await at.save();

  const refreshToken = input.completesLogin
    ? await saveRefreshToken(c, { client, userId: user.id, sessionId: input.sessionId, scope: scopeString, acr: ACR_SCA, amr: input.amr, authTime: now, lifetime: sessionLeft })
    : undefined;
  return {
    access_token: accessToken,
    token_type: 'Bearer',
    expires_in: ttl,
    ...(refreshToken ? { refresh_token: refreshToken } : {}),
    ...(scopeString ? { scope: scopeString } : {}),
    member_id: user.id,
    ...(input.authorizationDetails ? { authorization_details: input.authorizationDetails } : {}),
  };
}
