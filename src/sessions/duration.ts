import type { Tenant } from '../tenants/repository';

/**
 * A session lasts its tenant's `sessionDurationSeconds` from its start (its Grant's `iat`) as the
 * policy says now, not only as it said when the session began: lowered, it ends the sessions
 * already older than the new duration, on every process at once (a policy change reaches them as
 * it commits). Raised, it lengthens none: a session's own expiry, fixed at its start, still holds.
 */
export function sessionOverByPolicy(start: unknown, tenant: Pick<Tenant, 'policy'> | undefined, nowSeconds = Math.floor(Date.now() / 1000)): boolean {
  return typeof start === 'number' && tenant !== undefined && start + tenant.policy.sessionDurationSeconds <= nowSeconds;
}
