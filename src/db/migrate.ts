import { readdirSync } from 'node:fs';
import path from 'node:path';
import type { Knex } from 'knex';
import { Client as PgClient, type ClientConfig as PgClientConfig } from 'pg';

/** src/db → ../../migrations; dist/src/db → ../../migrations (dist/migrations). */
const MIGRATIONS_DIR = path.resolve(__dirname, '..', '..', 'migrations');

/**
 * knex records migration names with their extension; running from .ts (tests) and later from
 * compiled .js would look like a corrupt directory. This source names migrations without it.
 */
const migrationSource: Knex.MigrationSource<string> = {
  async getMigrations() {
    return readdirSync(MIGRATIONS_DIR)
      .filter((f) => /\.(ts|js)$/.test(f) && !f.endsWith('.d.ts'))
      .map((f) => f.replace(/\.(ts|js)$/, ''))
      .sort();
  },
  getMigrationName(name) {
    return name;
  },
  async getMigration(name) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require(path.join(MIGRATIONS_DIR, name)) as Knex.Migration;
  },
};

/** The database was migrated by a newer release: this one would not know its tables. */
export class DatabaseFromNewerReleaseError extends Error {
  constructor(missing: string) {
    super(`the database was migrated by a newer release of Portcullis (migrations this release does not have: ${missing}); run that release or a later one`);
  }
}

/** The advisory lock every migrator of ours holds while it runs (PostgreSQL; any fixed number). */
const MIGRATION_LOCK = 720_265_331;

/** A lock row left set by a migrator that died: knex would refuse every later run until unlocked by hand. */
async function releaseStaleLockRow(query: (sql: string) => Promise<unknown>): Promise<void> {
  try {
    await query('UPDATE knex_migrations_lock SET is_locked = 0 WHERE is_locked = 1');
  } catch (err) {
    if ((err as { code?: string }).code !== '42P01') throw err; // no such table yet: a fresh database
  }
}

/**
 * Brings the database to the latest migration; returns those applied. knex guards a run with a row
 * of its own (knex_migrations_lock): a second migrator failed at once (MigrationLocked) instead of
 * waiting, so servers started together against a fresh database lost all but one, and a migrator
 * killed mid-run left the row set, refusing every later start until someone ran knex's unlock. On
 * PostgreSQL every migrator of ours now first takes an advisory lock, on a connection of its own
 * (the pool may have one connection), so the others wait for it, then find nothing left to apply;
 * the lock goes with its holder's session, however that ends, so a row still set under it is a dead
 * migrator's and is cleared. The embedded database admits one process (its DATA_DIR lock file): a
 * row set there is a dead process's too.
 */
export async function migrateLatest(knex: Knex): Promise<string[]> {
  const config = (knex.client as { config: Knex.Config }).config;
  const run = async () => {
    try {
      return ((await knex.migrate.latest({ migrationSource })) as [number, string[]])[1];
    } catch (err) {
      // knex's words for a migration recorded in the database that this release does not have.
      const missing = /^The migration directory is corrupt, the following files are missing: (.*)$/.exec((err as Error).message ?? '');
      if (missing) throw new DatabaseFromNewerReleaseError(missing[1]!);
      throw err;
    }
  };
  if (config.client !== 'pg') {
    await releaseStaleLockRow((sql) => knex.raw(sql));
    return run();
  }
  const lock = new PgClient({ ...(config.connection as PgClientConfig), application_name: 'portcullis-migrate' });
  lock.on('error', () => undefined); // a connection lost while held: the query in flight fails instead
  await lock.connect();
  try {
    // Tried, not waited for in a statement: a session waiting inside pg_advisory_lock holds a
    // snapshot, and a migration's CREATE INDEX CONCURRENTLY waits for every such session — which
    // waits for it (seen: three servers started together hung).
    while (!(await lock.query<{ held: boolean }>('SELECT pg_try_advisory_lock($1) AS held', [MIGRATION_LOCK])).rows[0]?.held) {
      await new Promise((r) => setTimeout(r, 200));
    }
    await releaseStaleLockRow((sql) => lock.query(sql));
    return await run();
  } finally {
    await lock.end().catch(() => undefined); // the session's end releases the lock
  }
}

export async function migrateRollbackAll(knex: Knex): Promise<void> {
  await knex.migrate.rollback({ migrationSource }, true);
}
