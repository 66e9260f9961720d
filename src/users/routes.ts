import Router from '@koa/router';
import type { Context } from 'koa';
import { AppError } from '../errors';
import type { ClientRecord } from '../clients/repository';
import type { TenantRepository } from '../tenants/repository';
import type { ProviderHolder } from '../oidc/holder';
import type { Caller } from '../factors/service';
import { ACR_CA, startUserSession } from '../oidc/user-tokens';
import { grantedScopes } from '../oidc/resource';
import { publicUser, REGISTRATION_PASSWORD_MAX, type HashedAhead, type UserService } from './service';

type Middleware = (ctx: Context, next: () => Promise<void>) => Promise<void>;

/**
 * Goes before the idempotency middleware of a route that registers users. With an idempotency-ref,
 * the rest of the request runs in one transaction (src/http/idempotency.ts), and bcrypt inside it
 * would hold that transaction's connection for the whole computation (about 250 ms at cost 12):
 * on the embedded database, its only connection, so every other request waited. The password is
 * hashed here instead, before the transaction opens, and the route hands the hash to `register`,
 * which still validates everything first and hashes itself if the password is not the same.
 * Without a ref there is no such transaction, and `register` hashes after validating, as always.
 */
export function passwordHashedAhead(users: Pick<UserService, 'hashPassword'>): Middleware {
  return async (ctx, next) => {
    const password = ((ctx.request as { body?: unknown }).body as { password?: unknown } | undefined)?.password;
    if (ctx.get('idempotency-ref') && typeof password === 'string' && password.length <= REGISTRATION_PASSWORD_MAX) {
      ctx.state.hashedAhead = await users.hashPassword(password);
    }
    await next();
  };
}

/** Seed 003: registration (client-authenticated) and the signed-in user's own record. */
export function userRoutes(deps: {
  tenants: TenantRepository;
  users: UserService;
  holder: ProviderHolder;
  requireClient: Middleware;
  requireBearer: Middleware;
  requireUser: Middleware;
  idempotent: Middleware;
}): Router {
  const router = new Router();

  router.post('/users', deps.requireClient, passwordHashedAhead(deps.users), deps.idempotent, async (ctx) => {
    const client = ctx.state.client as ClientRecord;
    const body = (ctx.request as { body?: Record<string, unknown> }).body ?? {};
    const { tenant: requestedTenant, ...registration } = body;
    if (requestedTenant !== undefined && typeof requestedTenant !== 'string') {
      throw AppError.validation([{ fieldName: 'tenant', error: 'must be a string' }]);
    }
    const tokenTenant = ctx.state.clientTenant as string | undefined;
    const tenantId = requestedTenant ?? tokenTenant ?? (client.tenants.length === 1 ? client.tenants[0] : undefined);
    if (!tenantId) throw AppError.validation([{ fieldName: 'tenant', error: 'is required' }]);
    const tenant = client.tenants.includes(tenantId) && (!tokenTenant || tokenTenant === tenantId) ? await deps.tenants.find(tenantId) : undefined;
    if (!tenant || tenant.status !== 'active') throw new AppError('TENANT_NOT_ALLOWED', 403, 'This client may not register users for this tenant');
    if (!tenant.policy.registrationOpen) throw new AppError('REGISTRATION_CLOSED', 403, 'Registration is closed for this tenant');
    if (!client.grantTypes.includes('password')) throw new AppError('CLIENT_NOT_ALLOWED', 403, 'This client may not start user sessions');
    const oidcClient = await deps.holder.findClient(client.id);
    if (!oidcClient) throw new AppError('UNAUTHORIZED', 401, 'Client is not available');

    const user = await deps.users.register(tenant, registration, { hashedAhead: ctx.state.hashedAhead as HashedAhead | undefined });
    try {
      const token = await startUserSession(deps.holder.userTokenContext(), {
        client: oidcClient,
        tenant,
        user,
        scope: grantedScopes(oidcClient, undefined).scope,
        amr: ['pwd'],
        acr: ACR_CA,
      });
      ctx.status = 201;
      ctx.set('Cache-Control', 'no-store');
      ctx.body = { user: publicUser(user), token };
    } catch (err) {
      await deps.users.undoRegistration(tenant.id, user.id); // nothing half-written
      throw err;
    }
  });

  router.get('/users/me', deps.requireBearer, deps.requireUser, async (ctx) => {
    const { user } = ctx.state.caller as Caller;
    ctx.set('Cache-Control', 'no-store');
    ctx.body = publicUser(user);
  });

  return router;
}
