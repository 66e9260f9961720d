import type { Knex } from 'knex';

/**
 * A count of the times a user's failure count was started afresh: a successful login, an
 * administrator's unlock, or a count begun again once its lock or its abandoned attempts aged out.
 * A login reads it when it reserves its attempt, and an attempt given back unevaluated takes one
 * off the count only if it has not moved since (src/users/repository.ts, releaseLogin): after a
 * reset, the count holds only later attempts, and taking one off would erase a real failure.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('users', (t) => {
    // bigint: a success moves it, and a busy account's logins could pass 2^31 in a few years.
    t.bigInteger('failed_login_epoch').notNullable().defaultTo(0);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('users', (t) => t.dropColumn('failed_login_epoch'));
}
