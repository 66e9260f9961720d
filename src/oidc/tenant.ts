import { errors, type KoaContextWithOIDC } from 'oidc-provider';
import type { Tenant, TenantRepository } from '../tenants/repository';

/**
 * Where a request keeps its resolved tenant: on the request's context itself, not in a WeakMap keyed
 * by it. V8's young-generation collections keep a WeakMap entry whose value reaches its key (this
 * promise does, through the async context it was created in) and so the request's whole context,
 * until the next full collection: client_credentials promoted 7.3 % of its allocation to the old
 * generation with the WeakMap, 2.9 % without (`--trace-gc-nvp`, one process, 1,500 req/s), and
 * full-collection pauses were the p99 at 70 % load (README, Benchmark).
 */
const RESOLVED = Symbol('portcullis.tenant');
type Memo = { [RESOLVED]?: Promise<Tenant | undefined> };

function single(value: unknown, name: string): string | undefined {
  if (value === undefined || value === '') return undefined;
  if (typeof value !== 'string') throw new errors.InvalidRequest(`${name} must be given once`);
  return value;
}

/**
 * A token request names its tenant by header `di_fiid` (seed V1), `institutionId` (seed V2) or form
 * field `tenant`; it may be left out when the client is allowed for exactly one tenant. Every
 * failure is the same `invalid_request`, so the reply does not reveal which tenants exist.
 */
export function requestedTenantId(ctx: KoaContextWithOIDC): string | undefined {
  const sources = [
    single(ctx.get('di_fiid'), 'di_fiid'),
    single(ctx.get('institutionid'), 'institutionId'),
    single((ctx.oidc.body as Record<string, unknown> | undefined)?.tenant, 'tenant'),
  ].filter((v): v is string => v !== undefined);
  const distinct = new Set(sources);
  if (distinct.size > 1) throw new errors.InvalidRequest('the request names more than one tenant');
  return sources[0];
}

export function createTenantResolver(tenants: Pick<TenantRepository, 'find'>) {
  async function resolve(ctx: KoaContextWithOIDC, clientTenants: readonly string[]): Promise<Tenant | undefined> {
    const requested = requestedTenantId(ctx);
    if (requested === undefined) {
      if (clientTenants.length === 0) return undefined;
      if (clientTenants.length > 1) {
        throw new errors.InvalidRequest('tenant is required: send di_fiid, institutionId or the tenant parameter');
      }
    }
    const id = requested ?? clientTenants[0]!;
    if (!clientTenants.includes(id)) throw new errors.InvalidRequest('the client is not allowed for this tenant');
    const tenant = await tenants.find(id);
    if (!tenant || tenant.status !== 'active') throw new errors.InvalidRequest('the client is not allowed for this tenant');
    return tenant;
  }

  return {
    /** Resolved once per request; later hooks of the same request get the same answer. */
    forRequest(ctx: KoaContextWithOIDC, clientTenants: readonly string[]): Promise<Tenant | undefined> {
      const memo = ctx as unknown as Memo;
      return (memo[RESOLVED] ??= resolve(ctx, clientTenants));
    },
  };
}
export type TenantResolver = ReturnType<typeof createTenantResolver>;
