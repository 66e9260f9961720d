import type { Knex } from 'knex';

/**
 * An API key can be rotated (POST /admin/tenants/:t/clients/:id/api-key): the one it replaces keeps
 * working until `previous_api_key_expires_at` (an overlap of zero cuts it off at once, after a
 * leak), as a rotated client secret does. Looked up by its hash, as the current key is.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('clients', (t) => {
    t.text('previous_api_key_hash');
    t.timestamp('previous_api_key_expires_at', { useTz: true });
    t.index(['previous_api_key_hash'], 'clients_previous_api_key_hash_idx');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('clients', (t) => {
    t.dropIndex(['previous_api_key_hash'], 'clients_previous_api_key_hash_idx');
    t.dropColumn('previous_api_key_hash');
    t.dropColumn('previous_api_key_expires_at');
  });
}
