import type Provider from 'oidc-provider';
import { SIGNING_ALGS } from '../keys/service';
import { createLocalJWKSet, jwtVerify, type JSONWebKeySet } from 'jose';
import type { PortcullisClientExtras } from './client-model';
import { opaqueTokenId } from './token-id';
import { issuedBeforeDisabling } from './not-before';
import type { Tenant, TenantRepository } from '../tenants/repository';
import { sessionOverByPolicy } from '../sessions/duration';

/** Who calls one of our routes, as its bearer token says. */
export interface Principal {
  tokenKind: 'user' | 'client';
  clientId: string;
  tenantId: string | undefined;
  userId?: string;
  scope: string[];
  acr?: string;
  amr?: string[];
  authTime?: number;
  /** The session (oidc-provider Grant) of a user token. */
  sessionId?: string;
  expiresAt: number;
  client: Partial<PortcullisClientExtras> & { clientId: string };
  /** Not secret: a hash of an opaque token, or a JWT's jti. */
  tokenId: string;
  /** A password login waiting for its login-time MFA challenge. */
  pending: boolean;
  /** Step-up token of one transaction (it carries authorization_details): good for that only. */
  transactionBound: boolean;
  /** RFC 8693 `act`: the admin client that logged the user in, when the user did not. */
  actor?: string;
  /** `iat`, epoch seconds. */
  issuedAt: number;
}

const JWT_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;
type Extra = Record<string, unknown>;

/** The admin client an RFC 8693 `act` claim names; undefined when there is none it can be read as. */
export function actSubject(act: unknown): string | undefined {
  const sub = (act as { sub?: unknown } | null | undefined)?.sub;
  return typeof sub === 'string' ? sub : undefined;
}

function actorOf(act: unknown): string | undefined {
  if (act === undefined) return undefined;
  return actSubject(act) ?? 'unknown'; // an act we cannot read still marks the token
}

/**
 * Verifies a bearer token for our own routes with the same rules as introspection: stored and
 * valid (opaque), or signed by one of our published keys (JWT); its session still alive; its
 * client still enabled; neither its client nor its tenant disabled since it was issued. Anything
 * else is undefined — the caller answers 401.
 */
export function createBearerVerifier(provider: Provider, publicJwks: JSONWebKeySet, tenants: Pick<TenantRepository, 'find'>) {
  const keys = createLocalJWKSet(publicJwks);

  /** The session is there, not expired, and not older than its tenant's policy allows now. */
  async function sessionAlive(grantId: string | undefined, tenant: Tenant | undefined): Promise<boolean> {
    if (!grantId) return true;
    const grant = await provider.Grant.find(grantId);
    return !!grant && !grant.isExpired && !sessionOverByPolicy(grant.iat, tenant);
  }

  /**
   * The token's client, and the admin client named by its `act` (an admin's login on the user's
   * behalf), are enabled and were not disabled since the token was issued.
   */
  async function standsForClients(iat: unknown, client: Partial<PortcullisClientExtras>, act: unknown): Promise<boolean> {
    if (issuedBeforeDisabling(iat, client.tokens_not_before)) return false;
    if (act === undefined) return true;
    const actor = actSubject(act);
    const admin = actor ? ((await provider.Client.find(actor)) as Partial<PortcullisClientExtras> | undefined) : undefined;
    return admin !== undefined && !issuedBeforeDisabling(iat, admin.tokens_not_before);
  }

  async function principal(p: {
    clientId: string;
    accountId?: string;
    scope?: string;
    extra: Extra;
    grantId?: string;
    exp: number;
    iat: unknown;
    tokenId: string;
    transactionBound: boolean;
  }): Promise<Principal | undefined> {
    const client = (await provider.Client.find(p.clientId)) as (Partial<PortcullisClientExtras> & { clientId: string }) | undefined;
    if (!client) return undefined;
    // A user token without a session to check is not accepted (a JWT always names its sid).
    if (p.accountId && !p.grantId) return undefined;
    const tenantId = typeof p.extra.tenant === 'string' ? p.extra.tenant : undefined;
    // Issued before its client, its tenant or the admin client that logged its user in (`act`)
    // was last disabled: never again (src/oidc/not-before.ts).
    if (!(await standsForClients(p.iat, client, p.extra.act))) return undefined;
    const tenant = tenantId === undefined ? undefined : await tenants.find(tenantId);
    if (issuedBeforeDisabling(p.iat, tenant?.tokensNotBefore)) return undefined;
    if (!(await sessionAlive(p.grantId, tenant))) return undefined;
    return {
      tokenKind: p.accountId ? 'user' : 'client',
      clientId: p.clientId,
      tenantId,
      userId: p.accountId,
      scope: (p.scope ?? '').split(' ').filter(Boolean),
      acr: typeof p.extra.acr === 'string' ? p.extra.acr : undefined,
      amr: Array.isArray(p.extra.amr) ? (p.extra.amr as string[]) : undefined,
      authTime: typeof p.extra.auth_time === 'number' ? p.extra.auth_time : undefined,
      sessionId: p.grantId,
      expiresAt: p.exp,
      client,
      tokenId: p.tokenId,
      pending: p.extra.pending !== undefined,
      transactionBound: p.transactionBound,
      actor: actorOf(p.extra.act),
      issuedAt: typeof p.iat === 'number' ? p.iat : 0,
    };
  }

  return async function verifyBearer(token: string): Promise<Principal | undefined> {
    if (!token || token.length > 4096) return undefined;
    if (JWT_SHAPE.test(token)) {
      try {
        const { payload } = await jwtVerify(token, keys, { issuer: provider.issuer, typ: 'at+jwt', algorithms: [...SIGNING_ALGS] });
        if (typeof payload.client_id !== 'string' || typeof payload.exp !== 'number') return undefined;
        if (payload.cnf !== undefined) return undefined; // sender-constrained: see below
        const isUser = typeof payload.member_id === 'string';
        return principal({
          clientId: payload.client_id,
          accountId: isUser ? (payload.sub as string) : undefined,
          scope: typeof payload.scope === 'string' ? payload.scope : undefined,
          extra: payload as Extra,
          grantId: isUser && typeof payload.sid === 'string' ? payload.sid : undefined,
          exp: payload.exp,
          iat: payload.iat,
          tokenId: typeof payload.jti === 'string' ? payload.jti : opaqueTokenId(token),
          transactionBound: payload.authorization_details !== undefined,
        });
      } catch {
        return undefined;
      }
    }
    const found = (await provider.AccessToken.find(token)) ?? (await provider.ClientCredentials.find(token));
    if (!found || !found.isValid || !found.clientId || !found.exp) return undefined;
    const f = found as unknown as { accountId?: string; grantId?: string; extra?: Extra; scope?: string; rar?: unknown; jkt?: string; 'x5t#S256'?: string };
    // A token bound to a key (DPoP, mTLS) is good only with proof of that key, which these routes
    // do not take: never as a bearer token (RFC 9449 §7.2). None is issued; one stored is refused.
    if (f.jkt !== undefined || f['x5t#S256'] !== undefined) return undefined;
    return principal({
      clientId: found.clientId,
      accountId: f.accountId,
      scope: f.scope,
      extra: f.extra ?? {},
      grantId: f.grantId,
      exp: found.exp,
      iat: found.iat,
      tokenId: opaqueTokenId(token),
      transactionBound: f.rar !== undefined,
    });
  };
}
export type BearerVerifier = ReturnType<typeof createBearerVerifier>;
