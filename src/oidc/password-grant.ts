import { isIP } from 'node:net';
import { errors, type KoaContextWithOIDC } from 'oidc-provider';
import type { Tenant } from '../tenants/repository';
import type { User } from '../users/repository';
import { LoginSupersededError, type LoginClosing } from '../users/login-end';
import { LoginFailedError, LoginOverloadedError, LoginThrottledError, type LoginOrigin, type UserService } from '../users/service';
import { checkSingleResource, grantedScopes } from './resource';
import { ACR_CA, startUserSession, type OidcClient, type UserTokenContext, type UserTokenResponse } from './user-tokens';

export const PASSWORD_GRANT_PARAMS = ['username', 'password', 'scope', 'tenant', 'resource'];
/** RFC 8707 lets `resource` repeat: taken, so that more than one is invalid_target (checkSingleResource), not invalid_request. */
export const PASSWORD_GRANT_DUPES = ['resource'];

function invalidCredentials() {
  // One description for unknown user, wrong password, locked user: nothing to tell them apart.
  return new errors.CustomOIDCProviderError('invalid_grant', 'invalid username or password');
}

/** What a password login needs besides its request. */
export interface PasswordLoginDeps {
  context: () => UserTokenContext;
  users: UserService;
  /** Login-time MFA: must this login wait for a step-up challenge? */
  mfaPending: (tenant: Tenant, user: User) => Promise<boolean>;
}

/**
 * A password login of an authenticated client, its request already judged valid (user name,
 * password, granted scopes, tenant): the user authenticated, their session started and its
 * tokens issued. Refusals are the library's errors, as the token endpoint answers them; a
 * throttled address's wait goes to `retryAfter` (seconds) first. The library's grant handler
 * (below) and the token endpoint's fast path (fast-password.ts) both log in through here.
 */
export async function passwordLogin(
  deps: PasswordLoginDeps,
  input: { client: OidcClient; tenant: Tenant; username: string; password: string; scope: string[]; from: LoginOrigin; retryAfter: (seconds: number) => void },
): Promise<UserTokenResponse & { mfa_required?: true }> {
  const { client, tenant } = input;
  let login;
  try {
    login = await deps.users.authenticate(tenant, input.username, input.password, input.from);
  } catch (err) {
    if (err instanceof LoginFailedError) throw invalidCredentials();
    if (err instanceof LoginThrottledError) {
      input.retryAfter(err.retryAfterSeconds);
      const throttled = new errors.CustomOIDCProviderError('temporarily_unavailable', 'too many failed attempts; try again later');
      Object.assign(throttled, { status: 429, statusCode: 429 });
      throw throttled;
    }
    if (err instanceof LoginOverloadedError) {
      // Nothing was evaluated and the attempt was given back: the same answer as the database away.
      input.retryAfter(err.retryAfterSeconds);
      const overloaded = new errors.CustomOIDCProviderError('temporarily_unavailable', 'the service is temporarily unavailable; try again later');
      Object.assign(overloaded, { status: 503, statusCode: 503 });
      throw overloaded;
    }
    throw err;
  }
  const { user, end } = login;
  // The login's attempt is given back by its session's INSERT. The password was right: if the
  // session is not stored, our failure must not count against the user (an attempt counted at
  // the lockout threshold and never followed by a lock would keep the user out), so it is given
  // back apart.
  const closing: LoginClosing = { end, written: false };
  let answer;
  try {
    const pending = await deps.mfaPending(tenant, user);
    answer = await startUserSession(deps.context(), { client, tenant, user, scope: input.scope, amr: ['pwd'], acr: ACR_CA, pending, login: closing });
  } catch (err) {
    if (!closing.written) await deps.users.closeLogin(end).catch(() => undefined);
    // Locked, or all sessions ended, while the password was evaluated: refused as any failed login.
    if (err instanceof LoginSupersededError) throw invalidCredentials();
    throw err;
  }
  if (!closing.written) await deps.users.closeLogin(end);
  return answer;
}

/**
 * RFC 6749 §4.3 as an oidc-provider custom grant. The client is already authenticated; the
 * tenant comes from the request (or the client's only tenant); the user is looked up by email,
 * mobile or username within that tenant.
 */
export function passwordGrantHandler(
  deps: PasswordLoginDeps & { tenantFor: (ctx: KoaContextWithOIDC, client: OidcClient) => Promise<Tenant | undefined> },
) {
  return async function passwordGrant(ctx: KoaContextWithOIDC): Promise<void> {
    const client = ctx.oidc.client as OidcClient;
    const params = ctx.oidc.params as { username?: unknown; password?: unknown; scope?: string; resource?: unknown };
    if (typeof params.username !== 'string' || params.username === '') throw new errors.InvalidRequest("missing required parameter 'username'");
    if (typeof params.password !== 'string' || params.password === '') throw new errors.InvalidRequest("missing required parameter 'password'");
    // RFC 8707: the token's audience is the server's one resource; naming another is refused, never ignored.
    if (params.resource) checkSingleResource(params.resource, deps.context().audience);
    const { scope, denied } = grantedScopes(client, params.scope);
    if (denied) throw new errors.InvalidScope('requested scope is not allowed', denied);
    const tenant = await deps.tenantFor(ctx, client);
    if (!tenant) throw new errors.InvalidRequest('tenant is required: send di_fiid, institutionId or the tenant parameter');
    ctx.body = await passwordLogin(deps, {
      client,
      tenant,
      username: params.username,
      password: params.password,
      scope,
      from: loginOrigin(ctx),
      retryAfter: (seconds) => ctx.set('Retry-After', String(seconds)),
    });
  };
}

/**
 * A token request's origin: its address (ctx.ip: the socket's, or the one the trusted proxy
 * appended) and, when the client sends one, seed 002's `originating_ip` header, the device's
 * address, kept only if it is an IP address (it is recorded, never trusted).
 */
export function loginOrigin(ctx: { ip: string; get(field: string): string }): LoginOrigin {
  const named = ctx.get('originating_ip').trim();
  // isIP takes an IPv6 zone of any length ("fe80::1%…"): a record holds at most 64 characters.
  return named.length <= 64 && isIP(named) ? { ip: ctx.ip, originatingIp: named } : { ip: ctx.ip };
}
