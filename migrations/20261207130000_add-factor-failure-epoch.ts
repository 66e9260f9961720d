import type { Knex } from 'knex';

/**
 * As users.failed_login_epoch for passwords: a count of the times a user's factor failure count
 * was started afresh (a right code, an administrator's reset, a count begun again once its block or
 * its abandoned attempts aged out). A verification reads it when it reserves its attempt, and an
 * attempt given back (a right code already used by a concurrent request) takes one off the count
 * only if it has not moved since: after a reset the count holds only later attempts.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('users', (t) => {
    t.bigInteger('factor_failure_epoch').notNullable().defaultTo(0);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('users', (t) => t.dropColumn('factor_failure_epoch'));
}
