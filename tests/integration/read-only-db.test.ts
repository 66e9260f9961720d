import { Client as PgClient } from 'pg';
import { startTestServer, type TestServer } from '../helpers/server';
import { basic, createClient, createTenant, form, type ClientCreds } from '../helpers/flows';
import { usingPostgres } from '../helpers/env';

// What a failover can leave a server on: a database that answers, but refuses every write.
(usingPostgres ? describe : describe.skip)('a read-only database (postgresql)', () => {
  let srv: TestServer;
  let app: ClientCreds;
  let pg: PgClient;

  beforeAll(async () => {
    srv = await startTestServer();
    await createTenant(srv, 'bank-a');
    app = await createClient(srv, { tenants: ['bank-a'] });
    pg = new PgClient({ connectionString: srv.store.databaseUrl });
    await pg.connect();
  });
  afterAll(async () => {
    await pg?.end();
    await srv?.close();
  });

  /** Every session of the server starts again, with the database's setting as it is now. */
  const reconnect = () => pg.query('select pg_terminate_backend(pid) from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()');
  const ready = async () => {
    const r = await fetch(`${srv.base}/readyz`);
    return { status: r.status, body: (await r.json()) as { database: string }, retryAfter: r.headers.get('retry-after') };
  };
  /** The first request after the sessions ended may meet a closed one (a 503 of its own): wait for a settled answer. */
  const settled = async <T>(probe: () => Promise<T>, done: (v: T) => boolean): Promise<T> => {
    let last = await probe();
    for (let i = 0; i < 20 && !done(last); i += 1) last = await probe();
    return last;
  };
  const token = () => form(srv, '/token', { grant_type: 'client_credentials' }, { authorization: basic(app) });

  test('not ready, and every write is a 503 with Retry-After, not a 500; ready again once writable', async () => {
    const name = new URL(srv.store.databaseUrl!).pathname.slice(1);
    await pg.query(`ALTER DATABASE ${name} SET default_transaction_read_only = on`);
    try {
      await reconnect();
      expect(await settled(ready, (r) => r.body.database === 'read-only')).toEqual({ status: 503, body: { status: 'unavailable', database: 'read-only' }, retryAfter: '5' });
      const refused = await settled(token, (r) => r.status !== 503 || r.json.error === 'temporarily_unavailable');
      expect([refused.status, refused.json.error, refused.headers.get('retry-after')]).toEqual([503, 'temporarily_unavailable', '5']);
      const again = await token();
      expect(again.status).toBe(503);
    } finally {
      await pg.query(`ALTER DATABASE ${name} RESET default_transaction_read_only`);
    }
    await reconnect();
    expect((await settled(ready, (r) => r.status === 200)).status).toBe(200);
    expect((await settled(token, (r) => r.status === 200)).status).toBe(200);
  });
});
