import type { Knex } from 'knex';

/**
 * Who sweeps expired rows next. Every process has a sweep timer; the one that finds the lease
 * expired takes it (src/db/sweep.ts, claimSweep) and sweeps, the others skip that round: a
 * cluster sweeps about once per SWEEP_INTERVAL instead of once per process.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('sweep_leases', (t) => {
    t.text('name').primary();
    t.timestamp('next_at', { useTz: true }).notNullable();
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('sweep_leases');
}
