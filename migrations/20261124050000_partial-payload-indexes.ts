import type { Knex } from 'knex';

/**
 * Most rows of oidc_payloads are access and client-credentials tokens, which have no grant, uid,
 * user code or (for applications) account: the full indexes on those columns were maintained on
 * every token insert for NULLs nobody looks up. Partial indexes (IS NOT NULL) serve the same
 * lookups — every one of them is an equality, which implies NOT NULL — at a fraction of the
 * insert cost.
 *
 * On PostgreSQL the indexes are built CONCURRENTLY (outside a transaction), so a deployment with
 * a large token table keeps issuing and revoking tokens while it migrates. A build that failed
 * half-way leaves an invalid index behind; it is dropped and built again.
 */
export const config = { transaction: false };

const PARTIAL: Array<[name: string, columns: string, old: string]> = [
  ['oidc_payloads_grant_id_partial', 'grant_id', 'oidc_payloads_grant_id_index'],
  ['oidc_payloads_uid_partial', 'uid', 'oidc_payloads_uid_index'],
  ['oidc_payloads_user_code_partial', 'user_code', 'oidc_payloads_user_code_index'],
  ['oidc_payloads_account_id_type_partial', 'account_id, type', 'oidc_payloads_account_id_type_index'],
];

const concurrently = (knex: Knex) => (knex.client.config.client === 'pg' ? 'CONCURRENTLY' : '');

async function dropIfInvalid(knex: Knex, name: string): Promise<void> {
  const r = (await knex.raw('select i.indisvalid from pg_index i join pg_class c on c.oid = i.indexrelid where c.relname = ?', [name])) as {
    rows: Array<{ indisvalid: boolean }>;
  };
  if (r.rows[0] && !r.rows[0].indisvalid) await knex.raw(`DROP INDEX ${concurrently(knex)} IF EXISTS ${name}`);
}

export async function up(knex: Knex): Promise<void> {
  for (const [name, columns, old] of PARTIAL) {
    const first = columns.split(',')[0]!.trim();
    await dropIfInvalid(knex, name);
    await knex.raw(`CREATE INDEX ${concurrently(knex)} IF NOT EXISTS ${name} ON oidc_payloads (${columns}) WHERE ${first} IS NOT NULL`);
    await knex.raw(`DROP INDEX ${concurrently(knex)} IF EXISTS ${old}`);
  }
}

export async function down(knex: Knex): Promise<void> {
  for (const [name, columns, old] of PARTIAL) {
    await dropIfInvalid(knex, old);
    await knex.raw(`CREATE INDEX ${concurrently(knex)} IF NOT EXISTS ${old} ON oidc_payloads (${columns})`);
    await knex.raw(`DROP INDEX ${concurrently(knex)} IF EXISTS ${name}`);
  }
}
