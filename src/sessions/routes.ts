import Router from '@koa/router';
import type { Context } from 'koa';
import type { DbSource } from '../db/tx';
import { AppError } from '../errors';
import type { Principal } from '../oidc/bearer';
import { listGrantsOfAccount, revokeGrantOfAccount } from '../oidc/adapter';
import { issuedBeforeDisabling } from '../oidc/not-before';
import type { AdapterPayload } from 'oidc-provider';
import type { Tenant } from '../tenants/repository';
import type { ClientRepository } from '../clients/repository';
import type { Caller } from '../factors/service';

type Middleware = (ctx: Context, next: () => Promise<void>) => Promise<void>;

/**
 * The sessions that still stand, of those listed: one begun before its client or the user's
 * tenant was last disabled has no token left that works (src/oidc/not-before.ts), and is not shown.
 */
export async function standingSessions(
  grants: AdapterPayload[],
  tenant: Pick<Tenant, 'tokensNotBefore'>,
  clients: Pick<ClientRepository, 'find'>,
): Promise<AdapterPayload[]> {
  const standing = await Promise.all(
    grants.map(async (g) => {
      if (issuedBeforeDisabling(g.iat, tenant.tokensNotBefore)) return false;
      const client = typeof g.clientId === 'string' ? await clients.find(g.clientId) : undefined;
      return !issuedBeforeDisabling(g.iat, client?.tokensNotBefore);
    }),
  );
  return grants.filter((_, i) => standing[i]);
}

/** Seed 003: a user may hold many sessions (one per login); they can see and end each. */
export function sessionRoutes(deps: { db: DbSource; clients: Pick<ClientRepository, 'find'>; requireBearer: Middleware; requireUser: Middleware }): Router {
  const router = new Router();

  router.get('/sessions', deps.requireBearer, deps.requireUser, async (ctx) => {
    const p = ctx.state.principal as Principal;
    const caller = ctx.state.caller as Caller;
    const grants = await standingSessions(await listGrantsOfAccount(deps.db, p.userId!), caller.tenant, deps.clients);
    ctx.set('Cache-Control', 'no-store');
    ctx.body = {
      sessions: grants.map((g) => ({
        id: g.jti,
        clientId: g.clientId,
        createdAt: new Date(Number(g.iat) * 1000).toISOString(),
        expiresAt: new Date(Number(g.exp) * 1000).toISOString(),
        current: g.jti === p.sessionId,
      })),
    };
  });

  router.delete('/sessions/:id', deps.requireBearer, deps.requireUser, async (ctx) => {
    const p = ctx.state.principal as Principal;
    const id = ctx.params.id ?? '';
    if (!/^[A-Za-z0-9_-]{1,128}$/.test(id) || !(await revokeGrantOfAccount(deps.db, p.userId!, id))) {
      throw new AppError('NOT_FOUND', 404, 'Session not found');
    }
    ctx.status = 204;
  });

  return router;
}
