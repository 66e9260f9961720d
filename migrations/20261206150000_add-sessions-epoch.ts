import type { Knex } from 'knex';

/**
 * A count of the times all of a user's sessions were ended (an administrator's lock, or ending
 * them all). A login reads it when it begins and stores its session only if it has not moved
 * since (src/users/login-end.ts): a login still evaluating its password when the sessions were
 * ended must not add one after them.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('users', (t) => {
    t.integer('sessions_epoch').notNullable().defaultTo(0);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('users', (t) => t.dropColumn('sessions_epoch'));
}
