/**
 * Rows changed by an update or delete. knex's pg client returns a number; knex-pglite returns
 * the raw result ({rowCount}). Code that decides on "exactly one row changed" (atomic consumption)
 * must read both the same way.
 */
export function affected(result: unknown): number {
  if (typeof result === 'number') return result;
  if (result && typeof result === 'object') {
    const r = result as { rowCount?: unknown; affectedRows?: unknown };
    if (typeof r.rowCount === 'number') return r.rowCount;
    if (typeof r.affectedRows === 'number') return r.affectedRows;
  }
  if (Array.isArray(result)) return result.length;
  return 0;
}
