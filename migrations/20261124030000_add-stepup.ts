import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('challenges', (t) => {
    t.text('client_id'); // step-up: the client the new token is issued to
    t.text('scope'); // step-up: the scope of the token that asked
    t.text('opener'); // step-up: id of the access token that opened it (only it may collect the result)
    t.boolean('completes_login').notNullable().defaultTo(false); // login-time MFA
  });
  // Login-time MFA for this user, whatever the tenant's policy.
  await knex.schema.alterTable('users', (t) => {
    t.boolean('mfa_required').notNullable().defaultTo(false);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('users', (t) => t.dropColumn('mfa_required'));
  await knex.schema.alterTable('challenges', (t) => {
    t.dropColumn('client_id');
    t.dropColumn('scope');
    t.dropColumn('opener');
    t.dropColumn('completes_login');
  });
}
