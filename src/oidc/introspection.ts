import { errors } from 'oidc-provider';
import type { PortcullisClientExtras } from './client-model';
import type { TenantRepository } from '../tenants/repository';
import type { ClientRepository } from '../clients/repository';
import type { UserService } from '../users/service';
import { issuedBeforeDisabling } from './not-before';
import { actSubject } from './bearer';
import { sessionOverByPolicy } from '../sessions/duration';

export interface IntrospectedToken {
  clientId?: string;
  accountId?: string;
  /** Epoch seconds. */
  iat?: number;
  extra?: Record<string, unknown>;
}

export function mayIntrospect(client: Partial<PortcullisClientExtras> | undefined): boolean {
  return client?.introspection === true;
}

type Caller = { clientId: string } & Partial<PortcullisClientExtras>;

/**
 * RFC 7662 §4: a resource server learns about a token only when it is allowed to. Ours: the caller
 * has the introspection permission and serves the token's tenant (a platform admin client serves
 * all); and the token still stands for something — its tenant active, its client enabled (and
 * neither disabled since the token was issued; nor the admin client of an `act`), its user (if
 * any) neither locked nor deleted.
 */
export function createIntrospectionPolicy(deps: {
  /** Cached (src/cache/lookups.ts). */
  tenants: Pick<TenantRepository, 'find'>;
  clients: Pick<ClientRepository, 'find'>;
  /** Straight from the database. */
  fresh: { tenants: Pick<TenantRepository, 'find'>; clients: Pick<ClientRepository, 'find'> };
  users: UserService;
}) {
  /**
   * `fresh`: a JWT is introspected without reading any token row, so its checks read the
   * database (not the cache): with the database unreachable the answer is 503, never `active`
   * from memory alone. `sessionStart`: the `iat` of the token's session (Grant), when it has one;
   * a session older than its tenant's policy allows now is over (src/sessions/duration.ts).
   */
  return async function introspectionAllowed(client: Caller, token: IntrospectedToken, opts: { fresh?: boolean; sessionStart?: number } = {}): Promise<boolean> {
    if (!mayIntrospect(client)) return false;
    if (token.extra?.pending) return false; // a login still waiting for its MFA challenge
    const tokenTenant = token.extra?.tenant;
    const callerTenants = client.tenants ?? [];
    const platform = callerTenants.length === 0 && client.admin === true;
    if (!platform && (typeof tokenTenant !== 'string' || !callerTenants.includes(tokenTenant))) return false;
    const tenants = opts.fresh ? deps.fresh.tenants : deps.tenants;
    if (typeof tokenTenant === 'string') {
      const tenant = await tenants.find(tokenTenant);
      if (tenant?.status !== 'active' || issuedBeforeDisabling(token.iat, tenant.tokensNotBefore)) return false;
      if (sessionOverByPolicy(opts.sessionStart, tenant)) return false;
    }
    let clientNotBefore = client.tokens_not_before;
    if (opts.fresh || (token.clientId && token.clientId !== client.clientId)) {
      // The client the token was issued to must still exist and be enabled.
      const issuedTo = await (opts.fresh ? deps.fresh.clients : deps.clients).find(token.clientId ?? client.clientId);
      if (!issuedTo || issuedTo.disabled) return false;
      clientNotBefore = issuedTo.tokensNotBefore;
    }
    // Issued before its client or tenant was last disabled: inactive for good.
    if (issuedBeforeDisabling(token.iat, clientNotBefore)) return false;
    // An admin's login on the user's behalf stands only while that admin client does.
    const act = token.extra?.act;
    if (act !== undefined) {
      const actor = actSubject(act);
      const admin = actor ? await (opts.fresh ? deps.fresh.clients : deps.clients).find(actor) : undefined;
      if (!admin || admin.disabled || issuedBeforeDisabling(token.iat, admin.tokensNotBefore)) return false;
    }
    if (token.accountId) {
      const user = await deps.users.findActiveForToken(token.accountId);
      if (!user || user.tenantId !== tokenTenant) return false;
    }
    return true;
  };
}
export type IntrospectionPolicy = ReturnType<typeof createIntrospectionPolicy>;

/**
 * RFC 7009 §2.1: a client may revoke only the tokens issued to it. True: the library destroys the
 * token, and for a refresh token its whole session (the family, and every access token of it).
 * An access token of a session is destroyed here, alone, and false keeps the library from ending
 * its session too, which §2.1 leaves to the server ("MAY"): a client revoking a step-up token once
 * its payment is done, or an access token it no longer needs, does not sign the user out. Ending
 * the session is the refresh token's revocation, or DELETE /sessions/{id}.
 */
export async function revocationAllowed(client: { clientId: string }, token: IntrospectedToken & { kind?: string; grantId?: string; destroy?: () => Promise<void> }): Promise<boolean> {
  if (token.clientId !== client.clientId) {
    throw new errors.InvalidRequest('client is not authorized to revoke the presented token');
  }
  if (token.kind === 'AccessToken' && token.grantId && token.destroy) {
    await token.destroy();
    return false;
  }
  return true;
}
