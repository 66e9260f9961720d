import type { Context, Next } from 'koa';
import { AppError } from '../errors';
import type { Principal } from '../oidc/bearer';
import { issuedBeforeDisabling } from '../oidc/not-before';
import type { Tenant, TenantRepository } from '../tenants/repository';

export interface AdminCaller {
  clientId: string;
  /** A platform admin acts on every tenant; a tenant-bound one on its own only. */
  platform: boolean;
  tenants: string[];
}

/**
 * Admin routes: a client-credentials token of an admin client, with scope `admin`. A tenant-bound
 * admin asking about another tenant gets the same 404 as for a tenant that does not exist.
 *
 * A tenant-bound admin acts only on its tenants that are active, read on every request (from the
 * cached lookups, which every process drops on a change): a token issued before its tenant was
 * disabled loses the tenant at once, as the tenant's other tokens do, and for good: enabled again,
 * the tenant is not the token's again (src/oidc/not-before.ts). With none active, 403.
 */
export function requireAdmin(tenants: Pick<TenantRepository, 'find'>) {
  return async function requireAdminClient(ctx: Context, next: Next): Promise<void> {
    const p = ctx.state.principal as Principal;
    if (p.tokenKind !== 'client' || p.client.admin !== true || !p.scope.includes('admin')) {
      throw AppError.insufficientScope('FORBIDDEN', 'This operation needs an admin client token with scope admin', 'admin');
    }
    const own = p.client.tenants ?? [];
    const usable = async (id: string) => {
      const t = await tenants.find(id);
      return t?.status === 'active' && !issuedBeforeDisabling(p.issuedAt, t.tokensNotBefore) ? id : undefined;
    };
    const active = own.length === 0 ? [] : (await Promise.all(own.map(usable))).filter((id): id is string => id !== undefined);
    if (own.length > 0 && active.length === 0) throw AppError.insufficientScope('FORBIDDEN', 'The tenant of this admin client is disabled');
    const admin: AdminCaller = { clientId: p.clientId, platform: own.length === 0, tenants: active };
    ctx.state.admin = admin;
    await next();
  };
}

export function requirePlatform(ctx: Context): AdminCaller {
  const admin = ctx.state.admin as AdminCaller;
  if (!admin.platform) throw AppError.insufficientScope('FORBIDDEN', 'Only a platform admin may do this');
  return admin;
}

export function canSee(admin: AdminCaller, tenantId: string): boolean {
  return admin.platform || admin.tenants.includes(tenantId);
}

export async function tenantFor(ctx: Context, tenants: TenantRepository, tenantId: string): Promise<Tenant> {
  const admin = ctx.state.admin as AdminCaller;
  const tenant = canSee(admin, tenantId) ? await tenants.find(tenantId) : undefined;
  if (!tenant) throw new AppError('NOT_FOUND', 404, 'Tenant not found');
  return tenant;
}

/** ETag of a versioned resource, and the If-Match check of a PATCH (RFC 9110 §13.1.1). */
export const etag = (version: number) => `W/"${version}"`;

/**
 * The version a PATCH changes. `If-Match: *` (RFC 9110 §13.1.1: any current representation) is the
 * version this request read, so a change made meanwhile still answers 412. Otherwise the header is
 * a list of entity tags, and one naming the current version will do. The tags are weak (a version
 * names the resource's state, not the bytes of every representation of it: a policy's defaults,
 * a shared client's tenants as each admin sees them), and they are compared weakly, where RFC 9110
 * would compare strongly and never match a weak tag.
 */
export function ifMatch(ctx: Context, current: number): number {
  const header = ctx.get('if-match');
  if (!header) throw new AppError('PRECONDITION_REQUIRED', 428, 'If-Match with the resource ETag is required');
  if (header.trim() === '*') return current;
  // An entity tag is compared as it is written: "01", or a number past the version column's
  // range, names no version (the database would refuse the latter: a 500, not a 412). A list
  // that is not one of entity tags matches nothing.
  // Empty elements of the list are allowed (RFC 9110 §5.6.1).
  const tag = '(?:W\\/)?"[^"]*"';
  // Each run of spaces has one place to go (after a comma or after a tag): no backtracking blow-up.
  const wellFormed = new RegExp(`^\\s*(?:${tag}\\s*)?(?:,\\s*(?:${tag}\\s*)?)*$`).test(header);
  const list = wellFormed ? [...header.matchAll(/(?:W\/)?"([^"]*)"/g)].map((m) => m[1]) : [];
  if (!list.includes(String(current))) throw preconditionFailed();
  return current;
}

export const preconditionFailed = () => new AppError('PRECONDITION_FAILED', 412, 'The resource has changed; fetch it again');
