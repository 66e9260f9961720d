import { errors, type KoaContextWithOIDC } from 'oidc-provider';
import type { Tenant, TenantRepository } from '../tenants/repository';

/**
 * Where a request keeps its resolved tenant: on the request's context itself, not in a WeakMap keyed
 * by it. V8's young-generation collections keep a WeakMap entry whose value reaches its key (this
 * promise does, through the async context it was created in) and so the request's whole context,
 * until the next full collection: client_credentials promoted 7.3 % of its allocation to the old
 * generation with the WeakMap, 2.9 % without (`--trace-gc-nvp`, one process, 1,500 req/s), and
 * full-collection pauses were the p99 at 70 % load (bench/NOTES.md).
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
  return requestedTenantIdOf((name) => ctx.get(name), ctx.oidc.body as Record<string, unknown> | undefined);
}

/** requestedTenantId from a request's headers (`header(name)`: its value or '') and its parsed form. */
export function requestedTenantIdOf(header: (name: string) => string, body: Record<string, unknown> | undefined): string | undefined {
  const sources = [single(header('di_fiid'), 'di_fiid'), single(header('institutionid'), 'institutionId'), single(body?.tenant, 'tenant')].filter(
    (v): v is string => v !== undefined,
  );
  const distinct = new Set(sources);
  if (distinct.size > 1) throw new errors.InvalidRequest('the request names more than one tenant');
  return sources[0];
}

/**
 * The tenant of a token request that names `requested` (or none) for a client serving
 * `clientTenants`; throws the library's invalid_request, the same for every refusal.
 */
export async function resolveTenant(
  tenants: Pick<TenantRepository, 'find'>,
  requested: string | undefined,
  clientTenants: readonly string[],
): Promise<Tenant | undefined> {
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

export function createTenantResolver(tenants: Pick<TenantRepository, 'find'>) {
  // async: a refusal is the memoised promise's rejection, for every hook of the request alike.
  const resolve = async (ctx: KoaContextWithOIDC, clientTenants: readonly string[]): Promise<Tenant | undefined> =>
    resolveTenant(tenants, requestedTenantId(ctx), clientTenants);

  return {
    /** Resolved once per request; later hooks of the same request get the same answer. */
    forRequest(ctx: KoaContextWithOIDC, clientTenants: readonly string[]): Promise<Tenant | undefined> {
      const memo = ctx as unknown as Memo;
      return (memo[RESOLVED] ??= resolve(ctx, clientTenants));
    },
  };
}
export type TenantResolver = ReturnType<typeof createTenantResolver>;
