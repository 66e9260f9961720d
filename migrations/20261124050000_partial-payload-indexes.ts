import type { Knex } from 'knex';

/**
 * Most rows of oidc_payloads are access and client-credentials tokens, which have no grant, uid,
 * user code or (for applications) account: the full indexes on those columns were maintained on
 * every token insert for NULLs nobody looks up. Partial indexes (IS NOT NULL) serve the same
 * lookups — every one of them is an equality, which implies NOT NULL — at a fraction of the
 * insert cost.
 */
const PARTIAL: Array<[name: string, columns: string, old: string]> = [
  ['oidc_payloads_grant_id_partial', 'grant_id', 'oidc_payloads_grant_id_index'],
  ['oidc_payloads_uid_partial', 'uid', 'oidc_payloads_uid_index'],
  ['oidc_payloads_user_code_partial', 'user_code', 'oidc_payloads_user_code_index'],
  ['oidc_payloads_account_id_type_partial', 'account_id, type', 'oidc_payloads_account_id_type_index'],
];

export async function up(knex: Knex): Promise<void> {
  for (const [name, columns, old] of PARTIAL) {
    const first = columns.split(',')[0]!.trim();
    await knex.raw(`CREATE INDEX ${name} ON oidc_payloads (${columns}) WHERE ${first} IS NOT NULL`);
    await knex.raw(`DROP INDEX IF EXISTS ${old}`);
  }
}

export async function down(knex: Knex): Promise<void> {
  for (const [name, columns, old] of PARTIAL) {
    await knex.raw(`CREATE INDEX ${old} ON oidc_payloads (${columns})`);
    await knex.raw(`DROP INDEX IF EXISTS ${name}`);
  }
}
