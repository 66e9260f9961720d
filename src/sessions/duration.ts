import type { Tenant } from '../tenants/repository';
import { epochSecond } from '../oidc/not-before';

/**
 * A session lasts its tenant's `sessionDurationSeconds` from its start (its Grant's `iat`) as the
 * policy says now, not only as it said when the session began: lowered, it ends the sessions
 * already older than the new duration, on every process at once (a policy change reaches them as
 * it commits). Raised, it lengthens none: a session's own expiry, fixed at its start, still holds.
 */
export function sessionOverByPolicy(start: unknown, tenant: Pick<Tenant, 'policy'> | undefined, nowSeconds = epochSecond()): boolean {
  return typeof start === 'number' && tenant !== undefined && start + tenant.policy.sessionDurationSeconds <= nowSeconds;
}

/**
 * When a session ends (epoch seconds): its own expiry, or its start plus the tenant's session
 * duration as it stands, whichever comes first. Tokens issued on it live no longer.
 */
export function sessionEnd(grant: { iat?: number; exp?: number }, tenant: Pick<Tenant, 'policy'> | undefined): number | undefined {
  const byPolicy = typeof grant.iat === 'number' && tenant !== undefined ? grant.iat + tenant.policy.sessionDurationSeconds : undefined;
  if (typeof grant.exp !== 'number') return byPolicy;
  return byPolicy === undefined ? grant.exp : Math.min(grant.exp, byPolicy);
}
