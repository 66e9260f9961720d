import type { Tenant } from './repository';

/** A tenant as the admin API shows it and the audit log records it (its policy apart). */
export const tenantView = (t: Tenant) => ({ id: t.id, name: t.name, mode: t.mode, status: t.status, createdAt: t.createdAt.toISOString(), updatedAt: t.updatedAt.toISOString() });
