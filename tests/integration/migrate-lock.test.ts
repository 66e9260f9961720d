import { readdirSync } from 'node:fs';
import path from 'node:path';
import { openDatabase, type Database } from '../../src/db/knex';
import { DatabaseFromNewerReleaseError, migrateLatest } from '../../src/db/migrate';
import { startupFailure } from '../../src/cli/main';
import { createTestStore, dbLabel, testConfig, usingPostgres, type TestStore } from '../helpers/env';

const MIGRATIONS = readdirSync(path.resolve(__dirname, '../../migrations')).filter((f) => f.endsWith('.ts')).map((f) => f.replace(/\.ts$/, '')).sort();

describe(`migrations started together or after a migrator died (${dbLabel})`, () => {
  let store: TestStore;
  const opened: Database[] = [];
  const open = async () => {
    const db = await openDatabase(testConfig(store), { poolMax: 1 });
    opened.push(db);
    return db;
  };
  beforeEach(async () => {
    store = await createTestStore();
  });
  afterEach(async () => {
    for (const db of opened.splice(0)) await db.close();
    await store.cleanup();
  });

  (usingPostgres ? test : test.skip)('servers migrating one fresh database at once wait for each other: each migration applied once, none fails', async () => {
    const dbs = [await open(), await open(), await open()];
    const applied = await Promise.all(dbs.map((db) => migrateLatest(db.knex)));
    expect(applied.flat().sort()).toEqual(MIGRATIONS);
    expect(applied.filter((a) => a.length > 0)).toHaveLength(1);
    const rows = (await dbs[0]!.knex('knex_migrations').select('name')) as Array<{ name: string }>;
    expect(rows.map((r) => r.name).sort()).toEqual(MIGRATIONS);
  });

  test("a lock row left set by a migrator that died does not stop the next one", async () => {
    const db = await open();
    expect(await migrateLatest(db.knex)).toEqual(MIGRATIONS);
    // As a migrator killed mid-run leaves it (knex's own guard): every later run used to fail (MigrationLocked).
    await db.knex('knex_migrations_lock').update({ is_locked: 1 });
    expect(await migrateLatest(db.knex)).toEqual([]);
    expect(await db.knex('knex_migrations_lock').select('is_locked')).toEqual([{ is_locked: 0 }]);
  });

  test('a database a newer release migrated is refused in one line that says so', async () => {
    const db = await open();
    await migrateLatest(db.knex);
    await db.knex('knex_migrations').insert({ name: '20991231000000_from-the-future', batch: 99, migration_time: new Date() });
    const err = await migrateLatest(db.knex).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DatabaseFromNewerReleaseError);
    expect(startupFailure(err)).toBe('the database was migrated by a newer release of Portcullis (migrations this release does not have: 20991231000000_from-the-future); run that release or a later one');
  });
});
