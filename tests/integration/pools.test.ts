import type { Knex } from 'knex';
import { openDatabase, type Database } from '../../src/db/knex';
import { createTestStore, testConfig, usingPostgres, type TestStore } from '../helpers/env';

// DB_POOL_MAX (src/db/knex.ts): the connections a process opens to PostgreSQL at most, whatever
// the load; its counters and access-token pools get half as many each.
const describePg = usingPostgres ? describe : describe.skip;

describePg('PostgreSQL connection pools follow DB_POOL_MAX', () => {
  let store: TestStore;
  let db: Database | undefined;

  beforeAll(async () => {
    store = await createTestStore();
  });
  afterEach(async () => {
    await db?.close();
    db = undefined;
  });
  afterAll(async () => {
    await store?.cleanup();
  });

  /** Backends that served `n` statements sent at once, each holding its connection for 50 ms. */
  const backendsUnderLoad = async (knex: Knex, n = 12) => {
    const rows = await Promise.all(Array.from({ length: n }, () => knex.raw('select pg_backend_pid() as pid, pg_sleep(0.05)')));
    return new Set(rows.map((r: { rows: Array<{ pid: number }> }) => r.rows[0]!.pid)).size;
  };

  test.each([
    [5, 3],
    [4, 2],
    [1, 1],
  ])('with DB_POOL_MAX=%i, twelve concurrent statements use that many connections of the main pool and %i of each side pool', async (max, side) => {
    db = await openDatabase(testConfig(store, { dbPoolMax: max }));
    expect(await backendsUnderLoad(db.knex)).toBe(max);
    expect(await backendsUnderLoad(db.counters!)).toBe(side);
    expect(await backendsUnderLoad(db.asyncCommit!)).toBe(side);
  });

  test('the default is 4 (2 each for counters and access-token inserts)', async () => {
    db = await openDatabase(testConfig(store));
    expect(await backendsUnderLoad(db.knex)).toBe(4);
    expect(await backendsUnderLoad(db.asyncCommit!)).toBe(2);
  });
});
