import type { Knex } from 'knex';
import type { DbSource } from '../db/tx';
import { changeAndAnnounce } from '../cache/lookups';
import { notBeforeChange } from '../oidc/not-before-sql';
import { resolvePolicy, type TenantPolicy, type TenantPolicyInput } from './policy';

export type TenantMode = 'sandbox' | 'live';
export interface Tenant {
  id: string;
  name: string;
  mode: TenantMode;
  status: 'active' | 'disabled';
  /** Tokens issued in or before this second (epoch) stay inactive: set by disabling and enabling (src/oidc/not-before.ts; 0: never disabled). */
  tokensNotBefore: number;
  policy: TenantPolicy;
  storedPolicy: TenantPolicyInput;
  version: number;
  createdAt: Date;
  updatedAt: Date;
}

interface TenantRow {
  id: string;
  name: string;
  mode: TenantMode;
  status: 'active' | 'disabled';
  tokens_not_before: number | string;
  policy: TenantPolicyInput | string;
  version: number;
  created_at: Date;
  updated_at: Date;
}

export const TENANT_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/**
 * The policy column as stored: JSON text on some drivers, parsed on others. Whatever it holds —
 * a JSON string, an array, text that is not JSON — is handed on as it is, for resolvePolicy to set
 * aside (GET …/policy names it), never a 500 on every lookup of the tenant.
 */
function storedPolicy(raw: unknown): unknown {
  if (typeof raw !== 'string') return raw;
  try {
    return JSON.parse(raw) as unknown;
  } catch {
    return raw;
  }
}

function toTenant(row: TenantRow): Tenant {
  const stored = storedPolicy(row.policy) as TenantPolicyInput;
  return {
    id: row.id,
    name: row.name,
    mode: row.mode,
    status: row.status,
    tokensNotBefore: Number(row.tokens_not_before ?? 0),
    policy: resolvePolicy(stored),
    storedPolicy: stored,
    version: row.version,
    createdAt: new Date(row.created_at),
    updatedAt: new Date(row.updated_at),
  };
}

export interface TenantRepository {
  create(input: { id: string; name: string; mode: TenantMode }): Promise<Tenant>;
  find(tenantId: string): Promise<Tenant | undefined>;
  list(opts?: { limit?: number; after?: string }): Promise<Tenant[]>;
  count(): Promise<number>;
  /** Replaces the stored policy (validated by the caller); bumps the version. */
  setPolicy(tenantId: string, policy: TenantPolicyInput): Promise<Tenant | undefined>;
  /**
   * Optimistic concurrency: changes the tenant only if it is still at `version` (one atomic
   * UPDATE). undefined when it is not (or does not exist). Disabling or enabling stamps
   * `tokens_not_before`; a caller enabling a disabled tenant first waits for a second to begin
   * (untilNextSecond, outside any transaction: src/oidc/not-before.ts).
   */
  update(tenantId: string, version: number, changes: { name?: string; mode?: TenantMode; status?: 'active' | 'disabled'; policy?: TenantPolicyInput }): Promise<Tenant | undefined>;
}

/** `changed` evicts a tenant from this process's cache; changeAndAnnounce tells the others at commit. */
export function createTenantRepository(source: DbSource, changed: (id: string) => void = () => undefined): TenantRepository {
  const knex = () => source.db();
  const changing = (id: string, write: (trx: Knex.Transaction) => Promise<TenantRow | undefined>) =>
    changeAndAnnounce(knex(), 'tenant', id, write, changed, source.whenDone?.bind(source));
  return {
    async create({ id, name, mode }) {
      const [row] = await knex()<TenantRow>('tenants').insert({ id, name, mode }).returning('*');
      return toTenant(row as TenantRow);
    },
    async find(tenantId) {
      const row = await knex()<TenantRow>('tenants').where({ id: tenantId }).first();
      return row ? toTenant(row) : undefined;
    },
    async list({ limit = 50, after } = {}) {
      const q = knex()<TenantRow>('tenants').orderBy('id').limit(limit);
      if (after) q.where('id', '>', after);
      return (await q).map(toTenant);
    },
    async setPolicy(tenantId, policy) {
      const row = await changing(tenantId, async (trx) => {
        const [updated] = await trx<TenantRow>('tenants')
          .where({ id: tenantId })
          .update({ policy: JSON.stringify(policy) as unknown as TenantPolicyInput, version: trx.raw('version + 1') as unknown as number, updated_at: trx.fn.now() as unknown as Date })
          .returning('*');
        return updated as TenantRow | undefined;
      });
      return row ? toTenant(row) : undefined;
    },
    async update(tenantId, version, changes) {
      const row = await changing(tenantId, async (k) => {
        const [updated] = await k<TenantRow>('tenants')
          .where({ id: tenantId, version })
          .update({
            ...(changes.name !== undefined ? { name: changes.name } : {}),
            ...(changes.mode !== undefined ? { mode: changes.mode } : {}),
            ...(changes.status !== undefined ? { status: changes.status } : {}),
            ...(changes.status !== undefined ? { tokens_not_before: notBeforeChange(k, changes.status === 'disabled', "status = 'disabled'") as unknown as number } : {}),
            ...(changes.policy !== undefined ? { policy: JSON.stringify(changes.policy) as unknown as TenantPolicyInput } : {}),
            version: k.raw('version + 1') as unknown as number,
            updated_at: k.fn.now() as unknown as Date,
          })
          .returning('*');
        return updated as TenantRow | undefined;
      });
      return row ? toTenant(row) : undefined;
    },
    async count() {
      const row = await knex()('tenants').count<{ count: string | number }[]>({ count: '*' }).first();
      return Number(row?.count ?? 0);
    },
  };
}
