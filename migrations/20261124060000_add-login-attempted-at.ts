import type { Knex } from 'knex';

/**
 * When the user's last login attempt was reserved (src/users/repository.ts, beginLogin): a count
 * at the lockout threshold without a lock — an attempt reserved and never closed, when a process
 * died mid-login or the database went away for both its session and its closing — ages out one
 * lockout period (at least 15 minutes) after that attempt, as a used-up factor count does
 * (factor_attempted_at). Counts that processes without this column bring to a threshold while
 * new ones roll out (their attempts are not dated) keep the old behaviour.
 * Without it such a count kept its user out until an administrator reactivated them.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('users', (t) => {
    t.timestamp('login_attempted_at', { useTz: true });
  });
  // Counts left before this column existed (some may be stuck at a threshold) age out from now.
  await knex('users').where('failed_login_count', '>', 0).update({ login_attempted_at: knex.fn.now() });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('users', (t) => t.dropColumn('login_attempted_at'));
}
