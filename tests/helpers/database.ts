import { openDatabase, type Database } from '../../src/db/knex';
import { migrateLatest } from '../../src/db/migrate';
import { createTestStore, testConfig, type TestStore } from './env';

/**
 * A fresh store for the tests of the describe block (or file) this is called in: created and
 * opened before them, migrated unless `migrate: false`, then closed and dropped after them.
 * `opened` hands the database and its store to the caller's own variables before any test or later
 * beforeAll runs, so a test reads them as it would have set them up itself.
 */
export function useTestDatabase(
  options: { migrate?: boolean; config?: Record<string, unknown> },
  opened: (db: Database, store: TestStore) => void,
): void {
  let store: TestStore | undefined;
  let db: Database | undefined;
  beforeAll(async () => {
    store = await createTestStore();
    db = await openDatabase(testConfig(store, options.config));
    if (options.migrate !== false) await migrateLatest(db.knex);
    opened(db, store);
  });
  afterAll(async () => {
    await db?.close();
    await store?.cleanup();
  });
}
