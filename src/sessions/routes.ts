import Router from '@koa/router';
import type { Context } from 'koa';
import type { DbSource, TxContext } from '../db/tx';
import { AppError } from '../errors';
import type { Principal } from '../oidc/bearer';
import { listGrantsOfAccount, revokeGrantOfAccount } from '../oidc/adapter';
import { issuedBeforeDisabling } from '../oidc/not-before';
import { sessionEnd, sessionOverByPolicy } from './duration';
import type { AdapterPayload } from 'oidc-provider';
import type { Tenant } from '../tenants/repository';
import type { ClientRepository } from '../clients/repository';
import type { Caller } from '../factors/service';
import type { AuditLog } from '../audit/repository';

type Middleware = (ctx: Context, next: () => Promise<void>) => Promise<void>;

/**
 * The sessions that still stand, of those listed: one begun before its client or the user's
 * tenant was last disabled (src/oidc/not-before.ts), or longer ago than the tenant's session
 * duration allows now (src/sessions/duration.ts), has no token left that works, and is not shown.
 */
async function standingSessions(
  grants: AdapterPayload[],
  tenant: Pick<Tenant, 'tokensNotBefore' | 'policy'>,
  clients: Pick<ClientRepository, 'find'>,
): Promise<AdapterPayload[]> {
  // Each client once, however many sessions name it.
  const ids = [...new Set(grants.map((g) => g.clientId).filter((id): id is string => typeof id === 'string'))];
  const notBefore = new Map(await Promise.all(ids.map(async (id) => [id, (await clients.find(id))?.tokensNotBefore] as const)));
  return grants.filter(
    (g) =>
      !issuedBeforeDisabling(g.iat, tenant.tokensNotBefore) &&
      !sessionOverByPolicy(g.iat, tenant) &&
      !issuedBeforeDisabling(g.iat, typeof g.clientId === 'string' ? notBefore.get(g.clientId) : undefined),
  );
}

/**
 * A user's sessions as the user and their admins see them: those still standing, each with the
 * end it has now (src/sessions/duration.ts).
 */
export async function sessionsOf(db: DbSource, userId: string, tenant: Pick<Tenant, 'tokensNotBefore' | 'policy'>, clients: Pick<ClientRepository, 'find'>) {
  const grants = await standingSessions(await listGrantsOfAccount(db, userId), tenant, clients);
  return grants.map((g) => ({
    id: g.jti,
    clientId: g.clientId,
    createdAt: new Date(Number(g.iat) * 1000).toISOString(),
    expiresAt: new Date(Number(sessionEnd(g, tenant) ?? g.exp) * 1000).toISOString(),
  }));
}

/** Seed 003: a user may hold many sessions (one per login); they can see and end each. */
export function sessionRoutes(deps: { db: TxContext; clients: Pick<ClientRepository, 'find'>; audit: AuditLog; requireBearer: Middleware; requireUser: Middleware }): Router {
  const router = new Router();

  router.get('/sessions', deps.requireBearer, deps.requireUser, async (ctx) => {
    const p = ctx.state.principal as Principal;
    const caller = ctx.state.caller as Caller;
    const sessions = await sessionsOf(deps.db, caller.user.id, caller.tenant, deps.clients);
    ctx.set('Cache-Control', 'no-store');
    ctx.body = { sessions: sessions.map((x) => ({ ...x, current: x.id === p.sessionId })) };
  });

  router.delete('/sessions/:id', deps.requireBearer, deps.requireUser, async (ctx) => {
    const p = ctx.state.principal as Principal;
    const caller = ctx.state.caller as Caller;
    const id = ctx.params.id ?? '';
    const notFound = () => new AppError('NOT_FOUND', 404, 'Session not found');
    if (!/^[A-Za-z0-9_-]{1,128}$/.test(id)) throw notFound();
    // Audited as an administrator's ending of a session is, with whoever did it: the user, or the
    // admin client whose login on the user's behalf (`act`) the token comes from. Both or neither.
    await deps.db.savepoint(async () => {
      if (!(await revokeGrantOfAccount(deps.db, caller.user.id, id))) throw notFound();
      await deps.audit.record({ tenantId: caller.tenant.id, actor: p.actor ?? caller.user.id, type: 'session.revoked', target: caller.user.id, details: { session: id } });
    });
    ctx.status = 204;
  });

  return router;
}
