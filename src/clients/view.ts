import type { ClientRecord } from './repository';

/** Who looks at a client: a tenant-bound viewer is shown only the tenants it administers. */
export interface ClientViewer {
  platform: boolean;
  tenants: string[];
}

/** A client as the admin API shows it and the audit log records it; never a secret. */
export const clientView = (c: ClientRecord, viewer?: ClientViewer) => ({
  client_id: c.id,
  client_name: c.name,
  grant_types: c.grantTypes,
  scope: c.scope,
  token_endpoint_auth_method: c.tokenEndpointAuthMethod,
  tenants: viewer && !viewer.platform ? c.tenants.filter((t) => viewer.tenants.includes(t)) : c.tenants,
  token_format: c.tokenFormat,
  introspection: c.introspection,
  admin: c.admin,
  disabled: c.disabled,
  created_at: c.createdAt.toISOString(),
  ...(c.previousSecretExpiresAt ? { previous_secret_expires_at: c.previousSecretExpiresAt.toISOString() } : {}),
  ...(c.previousApiKeyExpiresAt ? { previous_api_key_expires_at: c.previousApiKeyExpiresAt.toISOString() } : {}),
});

/**
 * The audit records of a change to a client: one in the log of every tenant it serves (each
 * one's admins see what happened to a client they depend on), each naming that tenant only; a
 * client of no tenant (a platform admin) is recorded platform-wide.
 */
export type ClientAuditDetails = (view: (x: ClientRecord) => ReturnType<typeof clientView>) => Record<string, unknown>;

export function clientAuditRecords(c: ClientRecord, details: ClientAuditDetails): Array<{ tenantId: string | undefined; details: Record<string, unknown> }> {
  if (c.tenants.length === 0) return [{ tenantId: undefined, details: details((x) => clientView(x)) }];
  return c.tenants.map((tenantId) => ({ tenantId, details: details((x) => clientView(x, { platform: false, tenants: [tenantId] })) }));
}
