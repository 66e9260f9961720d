import { Client as PgClient } from 'pg';
import { startServer } from '../../src/server';
import { createTestStore, dbLabel, testConfig, usingPostgres, type TestStore } from '../helpers/env';
import { startTestServer, type TestServer } from '../helpers/server';

// A server whose port is taken fails to start, and closes what it had opened: its database
// pools and the change listener (checked on PostgreSQL, where they are connections to count).
describe(`a port already taken (${dbLabel})`, () => {
  let srv: TestServer;
  let store: TestStore;

  beforeAll(async () => {
    srv = await startTestServer();
    store = await createTestStore();
  });
  afterAll(async () => {
    await srv?.close();
    await store?.cleanup();
  });

  test('the start fails with EADDRINUSE and leaves no connection to its database open', async () => {
    const config = testConfig(store, {}, srv.running.port);
    await expect(startServer(config, { seedDemo: false })).rejects.toMatchObject({ code: 'EADDRINUSE' });
    if (!usingPostgres) return;
    const pg = new PgClient({ connectionString: store.databaseUrl });
    await pg.connect();
    try {
      const { rows } = await pg.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()');
      expect(rows[0]!.n).toBe(0);
    } finally {
      await pg.end();
    }
  });
});
