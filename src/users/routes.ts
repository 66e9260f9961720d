import Router from '@koa/router';
import type { Context } from 'koa';
import { AppError } from '../errors';
import type { ClientRecord } from '../clients/repository';
import type { Tenant, TenantRepository } from '../tenants/repository';
import type { ProviderHolder } from '../oidc/holder';
import type { Caller } from '../factors/service';
import { ACR_CA, startUserSession } from '../oidc/user-tokens';
import { grantedScopes } from '../oidc/resource';
import { outsideTransaction } from '../http/idempotency';
import { apiKeyRequired } from '../http/auth';
import { publicUser, type UserService } from './service';

type Middleware = (ctx: Context, next: () => Promise<void>) => Promise<void>;

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

  // Who may register where, before the idempotency middleware: a stored reply (it holds a token
  // pair) is replayed only to a caller who may act for that tenant now, shown as the tenant asks
  // (its ref is scoped to that tenant). The registration's own conditions (open, the client's
  // grant) are prepare's below: they decide whether a registration runs, not who sees one that did.
  const registrationTenant: Middleware = async (ctx, next) => {
    const client = ctx.state.client as ClientRecord;
    const requestedTenant = ((ctx.request as { body?: Record<string, unknown> }).body ?? {}).tenant;
    if (requestedTenant !== undefined && typeof requestedTenant !== 'string') {
      throw AppError.validation([{ fieldName: 'tenant', error: 'must be a string' }]);
    }
    // The body's tenant, else the client token's, else the client's only one.
    const tokenTenant = ctx.state.clientTenant as string | undefined;
    const tenantId = requestedTenant ?? tokenTenant ?? (client.tenants.length === 1 ? client.tenants[0] : undefined);
    if (!tenantId) throw AppError.validation([{ fieldName: 'tenant', error: 'is required' }]);
    const tenant = client.tenants.includes(tenantId) && (!tokenTenant || tokenTenant === tenantId) ? await deps.tenants.find(tenantId) : undefined;
    if (!tenant || tenant.status !== 'active') throw new AppError('TENANT_NOT_ALLOWED', 403, 'This client may not register users for this tenant');
    // A tenant that requires the API key requires it here too, beside a client token.
    if (tenant.policy.requireApiKey && ctx.state.apiKeyShown !== true) throw apiKeyRequired();
    ctx.state.registrationTenant = tenant satisfies Tenant;
    await next();
  };

  // The registration's conditions and the validated registration with its password hashed, outside
  // an idempotency-ref's transaction (outsideTransaction): only for a request that will run.
  const registration = outsideTransaction(async (ctx) => {
    const client = ctx.state.client as ClientRecord;
    const tenant = ctx.state.registrationTenant as Tenant;
    if (!tenant.policy.registrationOpen) throw new AppError('REGISTRATION_CLOSED', 403, 'Registration is closed for this tenant');
    if (!client.grantTypes.includes('password')) throw new AppError('CLIENT_NOT_ALLOWED', 403, 'This client may not start user sessions');
    const oidcClient = await deps.holder.findClient(client.id);
    if (!oidcClient) throw new AppError('UNAUTHORIZED', 401, 'Client is not available');
    const { tenant: _tenant, ...input } = (ctx.request as { body?: Record<string, unknown> }).body ?? {};
    return { tenant, oidcClient, prepared: await deps.users.prepareRegistration(tenant, input) };
  });

  router.post('/users', deps.requireClient, registrationTenant, registration.middleware, deps.idempotent, async (ctx) => {
    const { tenant, oidcClient, prepared } = await registration.result(ctx);
    const user = await deps.users.storeRegistration(prepared);
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
