import type { Knex } from 'knex';
import { openDatabase, type Database } from '../../src/db/knex';
import { batchGatherOf } from '../../src/db/batch';
import { createTestStore, testConfig, usingPostgres, type TestStore } from '../helpers/env';
import { startTestServer } from '../helpers/server';
import { basic, bearer, createClient, form, introspect, json } from '../helpers/flows';

// DB_POOL_MAX (src/db/knex.ts): the connections a process opens to PostgreSQL at most, whatever
// the load; its counters, access-token and login pools get half as many each.
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
    expect(await backendsUnderLoad(db.logins!)).toBe(side);
  });

  test('a server with one connection per pool serves tokens, logins, admin changes and factor enrolment with idempotency-refs', async () => {
    // A request that held a connection and waited for a second of the same pool would wait out the
    // pool's 10 s acquire timeout and answer 503.
    const ADMIN = { client_id: 'pool-admin', client_secret: 'pool-admin-secret-for-tests-0123456789abcdef' };
    const srv = await startTestServer({ store, config: { dbPoolMax: 1, adminClientId: ADMIN.client_id, adminClientSecret: ADMIN.client_secret } });
    try {
      const admin = (await form(srv, '/token', { grant_type: 'client_credentials', scope: 'admin' }, { authorization: basic(ADMIN) })).json.access_token as string;
      const call = (method: string, path: string, body: unknown, headers: Record<string, string> = {}) => json(srv, method, path, body, { ...bearer(admin), ...headers });
      expect((await call('POST', '/admin/tenants', { id: 'one-conn', name: 'One Connection', mode: 'sandbox' }, { 'idempotency-ref': 'pool-tenant' })).status).toBe(201);
      const created = await call('POST', '/admin/tenants/one-conn/clients', { client_name: 'app', grant_types: ['password', 'client_credentials'] }, { 'idempotency-ref': 'pool-client' });
      expect(created.status).toBe(201);
      const app = { client_id: created.json.client_id as string, client_secret: created.json.client_secret as string };
      expect((await call('POST', '/admin/tenants/one-conn/users', { username: 'erin', mobile: '+447911200123', password: 'one connection is plenty' })).status).toBe(201);
      const rs = await createClient(srv, { tenants: ['one-conn'], introspection: true });
      const cc = await form(srv, '/token', { grant_type: 'client_credentials' }, { authorization: basic(app) });
      expect(cc.status).toBe(200);
      expect((await introspect(srv, rs, cc.json.access_token as string)).json.active).toBe(true);
      const login = await form(srv, '/token', { grant_type: 'password', username: 'erin', password: 'one connection is plenty' }, { authorization: basic(app) });
      expect(login.status).toBe(200);
      const user = bearer(login.json.access_token as string, { 'idempotency-ref': 'pool-enrol' });
      expect((await json(srv, 'POST', '/authentication_factors/otp/SMS', undefined, user)).status).toBe(204);
      expect((await json(srv, 'POST', '/authentication_factors/otp/SMS/verify', { verificationCode: '123456' }, { ...user, 'idempotency-ref': 'pool-verify' })).status).toBe(204);
    } finally {
      await srv.stop();
    }
  });

  test('BATCH_WAIT_MS reaches the batches of the main pool and of access-token inserts', async () => {
    db = await openDatabase(testConfig(store, { batchWaitMs: 7 }));
    expect([batchGatherOf(db.knex), batchGatherOf(db.asyncCommit!)]).toEqual([7, 7]);
  });

  test('the default is 4 (2 each for counters and access-token inserts)', async () => {
    db = await openDatabase(testConfig(store));
    expect(await backendsUnderLoad(db.knex)).toBe(4);
    expect(await backendsUnderLoad(db.asyncCommit!)).toBe(2);
  });
});
