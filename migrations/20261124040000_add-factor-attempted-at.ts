import type { Knex } from 'knex';

/** When the user's last factor verification was attempted: a used-up count with no block ages out. */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('users', (t) => {
    t.timestamp('factor_attempted_at', { useTz: true });
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('users', (t) => t.dropColumn('factor_attempted_at'));
}
