import type { Knex } from 'knex';
import { affected } from './affected';

/** Rows a sweep deletes per statement. */
export const SWEEP_BATCH = 5000;

/**
 * Deletes the rows of `table` that `condition` selects (SQL with `?` bindings, written in code,
 * never taken from input), `batch` at a time, each batch a statement and a commit of its own. One
 * DELETE of everything that expired since the last sweep — under load, hundreds of thousands of
 * tokens — held its locks and wrote its WAL in one go, and every process sweeps on the same
 * schedule: they waited on each other's row locks. With SKIP LOCKED concurrent sweeps take
 * different rows, and a sweep that finds the rest taken stops. Returns how many rows it deleted.
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
