import type { Knex } from 'knex';
import type { DbSource } from '../db/tx';
import { changeAndAnnounce } from '../cache/lookups';
import { affected } from '../db/affected';
import { notBeforeChange } from '../oidc/not-before-sql';
import { epochSecond, untilNextSecond } from '../oidc/not-before';

export type TokenFormat = 'opaque' | 'jwt';
export interface ClientRecord {
  id: string;
  name: string;
  secretHash: string;
  previousSecretHash: string | null;
  previousSecretExpiresAt: Date | null;
  apiKeyHash: string;
  /** A rotated API key's predecessor works until then (null: none, or no longer). */
  previousApiKeyExpiresAt: Date | null;
  grantTypes: string[];
  scope: string;
  tokenEndpointAuthMethod: string;
  tokenFormat: TokenFormat;
  introspection: boolean;
  admin: boolean;
  disabled: boolean;
  /** Tokens issued in or before this second (epoch) stay inactive: set by disabling and enabling (src/oidc/not-before.ts; 0: never disabled). */
  tokensNotBefore: number;
  metadata: Record<string, unknown>;
  tenants: string[];
  version: number;
  createdAt: Date;
  updatedAt: Date;
}

interface ClientRow {
  id: string;
  name: string;
  secret_hash: string;
  previous_secret_hash: string | null;
  previous_secret_expires_at: Date | null;
  api_key_hash: string;
  previous_api_key_expires_at: Date | null;
  grant_types: string[] | string;
  scope: string;
  token_endpoint_auth_method: string;
  token_format: TokenFormat;
  introspection: boolean;
  admin: boolean;
  disabled: boolean;
  tokens_not_before: number | string;
  metadata: Record<string, unknown> | string;
  version: number;
  created_at: Date;
  updated_at: Date;
  tenants?: string[] | string | null;
}

const json = <T>(v: T | string): T => (typeof v === 'string' ? (JSON.parse(v) as T) : v);

function toRecord(row: ClientRow): ClientRecord {
  return {
    id: row.id,
    name: row.name,
    secretHash: row.secret_hash,
    previousSecretHash: row.previous_secret_hash,
    previousSecretExpiresAt: row.previous_secret_expires_at ? new Date(row.previous_secret_expires_at) : null,
    apiKeyHash: row.api_key_hash,
    previousApiKeyExpiresAt: row.previous_api_key_expires_at ? new Date(row.previous_api_key_expires_at) : null,
    grantTypes: json(row.grant_types),
    scope: row.scope,
    tokenEndpointAuthMethod: row.token_endpoint_auth_method,
    tokenFormat: row.token_format,
    introspection: row.introspection,
    admin: row.admin,
    disabled: row.disabled,
    tokensNotBefore: Number(row.tokens_not_before ?? 0),
    metadata: json(row.metadata),
    tenants: (json(row.tenants ?? []) ?? []).filter(Boolean).sort(),
    version: row.version,
    createdAt: new Date(row.created_at),
    updatedAt: new Date(row.updated_at),
  };
}

export interface NewClient {
  id: string;
  name: string;
  secretHash: string;
  apiKeyHash: string;
  grantTypes: string[];
  scope: string;
  tokenEndpointAuthMethod: string;
  tokenFormat: TokenFormat;
  introspection: boolean;
  admin: boolean;
  tenants: string[];
}

export interface ClientChanges {
  name?: string;
  grantTypes?: string[];
  scope?: string;
  tokenFormat?: TokenFormat;
  introspection?: boolean;
  disabled?: boolean;
}

export interface ClientRepository {
  create(input: NewClient): Promise<ClientRecord>;
  find(clientId: string): Promise<ClientRecord | undefined>;
  findByApiKeyHash(apiKeyHash: string): Promise<ClientRecord | undefined>;
  listByTenant(tenantId: string, opts: { limit: number; after?: string }): Promise<ClientRecord[]>;
  /**
   * Optimistic concurrency: only if still at `version`. Disabling or enabling stamps
   * `tokens_not_before`; a caller enabling a disabled client first waits for a second to begin
   * (untilNextSecond, outside any transaction: src/oidc/not-before.ts).
   */
  update(clientId: string, version: number, changes: ClientChanges): Promise<ClientRecord | undefined>;
  /** New secret; the current one keeps working until `previousExpiresAt`. */
  rotateSecret(clientId: string, newHash: string, previousExpiresAt: Date): Promise<ClientRecord | undefined>;
  /** A new API key; the one it replaces keeps working until `previousExpiresAt` (without one, not at all). */
  rotateApiKey(clientId: string, newHash: string, previousExpiresAt: Date | undefined): Promise<ClientRecord | undefined>;
  /**
   * The platform admin of a known id (PORTCULLIS_ADMIN_CLIENT_*): creates it, or gives it this secret (`rekeyed`), or makes it an enabled admin
   * again with the secret it had (`restored`); `unchanged` when it already was all that.
   */
  ensureAdmin(input: NewClient): Promise<'created' | 'rekeyed' | 'restored' | 'unchanged'>;
}

/**
 * `changed` evicts a client from this process's cache; changeAndAnnounce tells the other
 * processes, at the commit of the change.
 */
export function createClientRepository(source: DbSource, changed: (id: string) => void = () => undefined): ClientRepository {
  const knex = () => source.db();
  /** `write` returns how many rows it changed; anything but one is no change. */
  const changing = async (id: string, write: (trx: Knex.Transaction) => Promise<number>): Promise<boolean> =>
    (await changeAndAnnounce(knex(), 'client', id, async (trx) => ((await write(trx)) === 1 ? true : undefined), changed, source.whenDone?.bind(source))) ?? false;
  // One round trip: the client row with its tenant ids aggregated.
  const base = () =>
    knex()('clients as c')
      .select('c.*', knex().raw(`coalesce(json_agg(ct.tenant_id) filter (where ct.tenant_id is not null), '[]') as tenants`))
      .leftJoin('client_tenants as ct', 'ct.client_id', 'c.id')
      .groupBy('c.id');

  /** A credential replaced (its predecessor kept, or not, by `columns`), as one change of the client. */
  const rotate = async (clientId: string, columns: Record<string, unknown>): Promise<ClientRecord | undefined> => {
    const k = knex();
    const done = await changing(clientId, async (trx) =>
      affected(await trx('clients').where({ id: clientId }).update({ ...columns, version: k.raw('version + 1'), updated_at: k.fn.now() })),
    );
    if (!done) return undefined;
    const row = (await base().where('c.id', clientId).first()) as ClientRow | undefined;
    return row ? toRecord(row) : undefined;
  };

  return {
    async create(input) {
      return knex().transaction(async (trx) => {
        await trx('clients').insert({
          id: input.id,
          name: input.name,
          secret_hash: input.secretHash,
          api_key_hash: input.apiKeyHash,
          grant_types: JSON.stringify(input.grantTypes),
          scope: input.scope,
          token_endpoint_auth_method: input.tokenEndpointAuthMethod,
          token_format: input.tokenFormat,
          introspection: input.introspection,
          admin: input.admin,
        });
        if (input.tenants.length) {
          await trx('client_tenants').insert(input.tenants.map((t) => ({ client_id: input.id, tenant_id: t })));
        }
        const row = (await base().transacting(trx).where('c.id', input.id).first()) as ClientRow;
        return toRecord(row);
      });
    },
    async find(clientId) {
      const row = (await base().where('c.id', clientId).first()) as ClientRow | undefined;
      return row ? toRecord(row) : undefined;
    },
    async listByTenant(tenantId, { limit, after }) {
      const q = base()
        .whereIn('c.id', knex()('client_tenants').select('client_id').where({ tenant_id: tenantId }))
        .orderBy('c.id')
        .limit(limit);
      if (after) q.where('c.id', '>', after);
      return ((await q) as ClientRow[]).map(toRecord);
    },
    async update(clientId, version, changes) {
      const k = knex();
      const done = await changing(clientId, async (trx) =>
        affected(
          await trx('clients')
            .where({ id: clientId, version })
            .update({
              ...(changes.name !== undefined ? { name: changes.name } : {}),
              ...(changes.grantTypes !== undefined ? { grant_types: JSON.stringify(changes.grantTypes) } : {}),
              ...(changes.scope !== undefined ? { scope: changes.scope } : {}),
              ...(changes.tokenFormat !== undefined ? { token_format: changes.tokenFormat } : {}),
              ...(changes.introspection !== undefined ? { introspection: changes.introspection } : {}),
              ...(changes.disabled !== undefined ? { disabled: changes.disabled } : {}),
              ...(changes.disabled !== undefined ? { tokens_not_before: notBeforeChange(k, changes.disabled, 'disabled') } : {}),
              version: k.raw('version + 1'),
              updated_at: k.fn.now(),
            }),
        ),
      );
      return done ? this.find(clientId) : undefined;
    },
    async rotateSecret(clientId, newHash, previousExpiresAt) {
      const k = knex();
      return rotate(clientId, { previous_secret_hash: k.ref('secret_hash'), previous_secret_expires_at: previousExpiresAt, secret_hash: newHash });
    },
    async rotateApiKey(clientId, newHash, previousExpiresAt) {
      const k = knex();
      return rotate(clientId, {
        previous_api_key_hash: previousExpiresAt ? k.ref('api_key_hash') : null,
        previous_api_key_expires_at: previousExpiresAt ?? null,
        api_key_hash: newHash,
      });
    },
    async ensureAdmin(input) {
      let outcome: 'created' | 'rekeyed' | 'restored' | 'unchanged' = 'unchanged';
      // Enabled again, it is stamped as an enabling by the admin API is, as a second begins
      // (src/oidc/not-before.ts): else its tokens of the rest of the second would be born ended.
      const current = (await knex()('clients').where({ id: input.id }).first('disabled')) as { disabled?: boolean } | undefined;
      if (current?.disabled) await untilNextSecond();
      await changing(input.id, async (trx) => {
        // Written only when something changes (every process runs this at every start), and in
        // one statement, so processes starting together cannot collide; (xmax = 0) tells an
        // inserted row from an updated one, and `before` (the statement's snapshot) whether the
        // secret changed. The API key derives from the secret: it changes with it.
        const { rows } = (await trx.raw(
          `with before as (select secret_hash from clients where id = ?)
           insert into clients (id, name, secret_hash, api_key_hash, grant_types, scope, token_endpoint_auth_method, token_format, introspection, admin)
           values (?, ?, ?, ?, ?, ?, ?, ?, ?, true)
           on conflict (id) do update set secret_hash = excluded.secret_hash, api_key_hash = excluded.api_key_hash, admin = true, disabled = false,
             tokens_not_before = case when clients.disabled then greatest(clients.tokens_not_before, ?::bigint) else clients.tokens_not_before end
             where clients.secret_hash is distinct from excluded.secret_hash or clients.api_key_hash is distinct from excluded.api_key_hash
               or not clients.admin or clients.disabled
           returning (xmax = 0) as inserted, (select secret_hash from before) is distinct from clients.secret_hash as rekeyed`,
          [input.id, input.id, input.name, input.secretHash, input.apiKeyHash, JSON.stringify(input.grantTypes), input.scope, input.tokenEndpointAuthMethod, input.tokenFormat, input.introspection, epochSecond() - 1],
        )) as { rows: Array<{ inserted: boolean; rekeyed: boolean }> };
        const row = rows[0];
        if (row) outcome = row.inserted ? 'created' : row.rekeyed ? 'rekeyed' : 'restored';
        return rows.length;
      });
      return outcome;
    },
    async findByApiKeyHash(apiKeyHash) {
      // The current key, or a rotated one within its overlap (the database's clock, as for every
      // expiry compared in SQL).
      const row = (await base()
        .where('c.api_key_hash', apiKeyHash)
        .orWhere((q) => q.where('c.previous_api_key_hash', apiKeyHash).andWhere('c.previous_api_key_expires_at', '>', knex().fn.now()))
        .first()) as ClientRow | undefined;
      return row ? toRecord(row) : undefined;
    },
  };
}
