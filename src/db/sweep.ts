import type { Knex } from 'knex';
import { affected } from './affected';

/** Rows a sweep deletes per statement. */
export const SWEEP_BATCH = 5000;

/**
 * Deletes the rows of `table` that `condition` selects (SQL with `?` bindings, written in code,
 * never taken from input), `batch` at a time, each batch a statement and a commit of its own. One
 * DELETE of everything that expired since the last sweep — under load, hundreds of thousands of
 * tokens — held its locks and wrote its WAL in one go, and concurrent sweeps (then every process's;
 * now one that outlasts its lease, see claimSweep, and the next) waited on each other's row locks.
 * With SKIP LOCKED concurrent sweeps take different rows, and a sweep that finds the rest taken
 * stops. Returns how many rows it deleted.
 */
export async function deleteInBatches(knex: Knex, table: string, condition: string, bindings: readonly Knex.Value[], batch = SWEEP_BATCH): Promise<number> {
  let total = 0;
  for (;;) {
    const deleted = affected(
      await knex.raw(`DELETE FROM ?? WHERE ctid = ANY(ARRAY(SELECT ctid FROM ?? WHERE ${condition} LIMIT ? FOR UPDATE SKIP LOCKED))`, [table, table, ...bindings, batch]),
    );
    total += deleted;
    if (deleted < batch) return total;
  }
}

/**
 * Whether this process takes the sweep called `name` now: true for the first caller once the
 * previous lease ended, which holds it for `seconds`; false for everyone else meanwhile. Every
 * process of a cluster runs the sweep timer, and without it each swept the same tables: the same
 * scans repeated once per process. A process that dies after taking the lease leaves the sweep to
 * whichever process finds the lease over. Times are the database's, so the processes' clocks do
 * not matter.
 */
export async function claimSweep(knex: Knex, name: string, seconds: number): Promise<boolean> {
  const { rows } = (await knex.raw(
    `INSERT INTO sweep_leases (name, next_at) VALUES (?, now() + make_interval(secs => ?))
     ON CONFLICT (name) DO UPDATE SET next_at = EXCLUDED.next_at WHERE sweep_leases.next_at <= now()
     RETURNING name`,
    [name, seconds],
  )) as { rows: unknown[] };
  return rows.length === 1;
}
