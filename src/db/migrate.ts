import { readdirSync } from 'node:fs';
import path from 'node:path';
import type { Knex } from 'knex';

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

export async function migrateLatest(knex: Knex): Promise<string[]> {
  const [, applied] = (await knex.migrate.latest({ migrationSource })) as [number, string[]];
  return applied;
}

export async function migrateRollbackAll(knex: Knex): Promise<void> {
  await knex.migrate.rollback({ migrationSource }, true);
}
