import type { DbSource } from '../db/tx';

export interface AuditEvent {
  tenantId?: string;
  actor: string;
  type: string;
  target?: string;
  /** Never secrets: no passwords, codes, tokens or keys. */
  details?: Record<string, unknown>;
}

export interface AuditEntry {
  id: number;
  at: string;
  tenant: string | null;
  actor: string;
  type: string;
  target: string | null;
  details: Record<string, unknown>;
}

export interface AuditQuery {
  /** Restrict to these tenants (a tenant-bound admin); undefined = all. */
  tenants?: string[];
  tenant?: string;
  actor?: string;
  type?: string;
  since?: Date;
  /** Newest first; `before` pages back through older entries. */
  before?: number;
  limit: number;
}

export interface AuditLog {
  record(event: AuditEvent): Promise<void>;
  list(q: AuditQuery): Promise<AuditEntry[]>;
}

/** Security events and admin changes, appended in the caller's transaction when there is one. */
export function createAuditLog(source: DbSource): AuditLog {
  return {
    async record(e) {
      await source.db()('audit_log').insert({
        tenant_id: e.tenantId ?? null,
        actor: e.actor,
        type: e.type,
        target: e.target ?? null,
        details: JSON.stringify(e.details ?? {}),
      });
    },
    async list(q) {
      const query = source.db()('audit_log').orderBy('id', 'desc').limit(q.limit);
      if (q.tenants) query.whereIn('tenant_id', q.tenants);
      if (q.tenant) query.where({ tenant_id: q.tenant });
      if (q.actor) query.where({ actor: q.actor });
      if (q.type) query.where({ type: q.type });
      if (q.since) query.where('at', '>=', q.since);
      if (q.before) query.where('id', '<', q.before);
      const rows = (await query) as Array<Record<string, unknown>>;
      return rows.map((r) => ({
        id: Number(r.id),
        at: new Date(r.at as string).toISOString(),
        tenant: (r.tenant_id as string) ?? null,
        actor: r.actor as string,
        type: r.type as string,
        target: (r.target as string) ?? null,
        details: (typeof r.details === 'string' ? JSON.parse(r.details) : r.details) as Record<string, unknown>,
      }));
    },
  };
}
