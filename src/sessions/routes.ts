import Router from '@koa/router';
import type { Context } from 'koa';
import type { DbSource } from '../db/tx';
import { AppError } from '../errors';
import type { Principal } from '../oidc/bearer';
import { listGrantsOfAccount, revokeGrantOfAccount } from '../oidc/adapter';

type Middleware = (ctx: Context, next: () => Promise<void>) => Promise<void>;

/** Seed 003: a user may hold many sessions (one per login); they can see and end each. */
export function sessionRoutes(deps: { db: DbSource; requireBearer: Middleware; requireUser: Middleware }): Router {
  const router = new Router();

  router.get('/sessions', deps.requireBearer, deps.requireUser, async (ctx) => {
    const p = ctx.state.principal as Principal;
    const grants = await listGrantsOfAccount(deps.db, p.userId!);
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
