import bcrypt from 'bcrypt';
import { startTestServer, type TestServer } from '../helpers/server';
import { basic, bearer, form, json, passwordLogin, type ClientCreds } from '../helpers/flows';
import { dbLabel } from '../helpers/env';

// With an idempotency-ref a request runs in one transaction from the idempotency middleware on.
// A registration must hash its password before that transaction opens: hashed inside it, bcrypt
// held the transaction's connection for the whole computation, on the embedded database its only
// one, and every other request waited for it.

const PASSWORD = 'a perfectly decent passphrase';
const ADMIN = { client_id: 'platform-admin', client_secret: 'platform-admin-secret-for-tests-0123456789' };
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Reply = { status: number; headers: Headers; json: any };

describe(`registration with an idempotency-ref hashes before its transaction (${dbLabel})`, () => {
  let srv: TestServer;
  let adminToken: string;
  let app: ClientCreds;
  const call = (method: string, path: string, body: unknown, headers: Record<string, string>) => json(srv, method, path, body, headers) as Promise<Reply>;

  beforeAll(async () => {
    srv = await startTestServer({ config: { adminClientId: ADMIN.client_id, adminClientSecret: ADMIN.client_secret } });
    adminToken = (await form(srv, '/token', { grant_type: 'client_credentials', scope: 'admin' }, { authorization: basic(ADMIN) })).json.access_token as string;
    expect((await call('POST', '/admin/tenants', { id: 'ahead', name: 'Ahead Bank', mode: 'sandbox' }, bearer(adminToken))).status).toBe(201);
    const c = await call('POST', '/admin/tenants/ahead/clients', { client_name: 'Ahead app', grant_types: ['password', 'client_credentials'] }, bearer(adminToken));
    app = { client_id: c.json.client_id, client_secret: c.json.client_secret, api_key: c.json.api_key };
  });
  afterAll(async () => srv?.close());

  /** Opens or closes the tenant's registration (PATCH of its policy, with the ETag just read). */
  async function setRegistrationOpen(open: boolean): Promise<void> {
    const etag = (await call('GET', '/admin/tenants/ahead/policy', undefined, bearer(adminToken))).headers.get('etag')!;
    expect((await call('PATCH', '/admin/tenants/ahead/policy', { registrationOpen: open }, bearer(adminToken, { 'if-match': etag }))).status).toBe(200);
  }

  /**
   * Sends `request` with bcrypt's hash held until another request that needs the database (a
   * client_credentials token, stored on its insert) has been answered, or 3 s have passed. Returns
   * the request's reply, that other request's status (or 'blocked'), and whether each hash ran
   * inside a transaction.
   */
  async function whileHashing(request: () => Promise<Reply>): Promise<{ reply: Reply; other: number | 'blocked'; inTransaction: boolean[] }> {
    const real = bcrypt.hash.bind(bcrypt) as (data: string, rounds: number) => Promise<string>;
    let release = () => undefined as void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let started = () => undefined as void;
    const hashing = new Promise<void>((resolve) => (started = resolve));
    const inTransaction: boolean[] = [];
    const spy = jest.spyOn(bcrypt, 'hash').mockImplementation((async (data: string, rounds: number) => {
      inTransaction.push(srv.running.app.services.tx.inTransaction);
      started();
      await held;
      return real(data, rounds);
    }) as never);
    try {
      const reply = request();
      // A reply before any hash started is a failure of its own; the test must not wait for a hash that never comes.
      const first = await Promise.race([hashing.then(() => 'hashing' as const), reply.then((r) => r)]);
      if (first !== 'hashing') throw new Error(`answered ${first.status} ${JSON.stringify(first.json)} before hashing`);
      let timer: NodeJS.Timeout | undefined;
      const other = await Promise.race([
        form(srv, '/token', { grant_type: 'client_credentials' }, { authorization: basic(app) }).then((r) => r.status),
        new Promise<'blocked'>((resolve) => (timer = setTimeout(() => resolve('blocked'), 3000))),
      ]);
      clearTimeout(timer);
      release();
      return { reply: await reply, other, inTransaction };
    } finally {
      release();
      spy.mockRestore();
    }
  }

  test('public registration (POST /users): other requests are answered meanwhile; the reply and its replay hold', async () => {
    const body = { tenant: 'ahead', email: 'early@example.com', password: PASSWORD, acceptedTerms: true };
    const headers = { 'api-key': app.api_key!, 'idempotency-ref': 'reg-ahead-1' };
    const { reply, other, inTransaction } = await whileHashing(() => call('POST', '/users', body, headers));
    expect(inTransaction).toEqual([false]);
    expect(other).toBe(200);
    expect(reply.status).toBe(201);
    // The hash computed ahead is the one stored: the user logs in with the password.
    expect((await passwordLogin(srv, app, 'early@example.com', PASSWORD, { tenant: 'ahead' })).status).toBe(200);
    const replay = await call('POST', '/users', body, headers);
    expect(replay.status).toBe(201);
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect(replay.json.user.id).toBe(reply.json.user.id);
  });

  test('admin user creation (POST /admin/tenants/:t/users) likewise', async () => {
    const body = { username: 'early-admin-made', password: PASSWORD, mfaRequired: true };
    const { reply, other, inTransaction } = await whileHashing(() =>
      call('POST', '/admin/tenants/ahead/users', body, bearer(adminToken, { 'idempotency-ref': 'admin-ahead-1' })),
    );
    expect(inTransaction).toEqual([false]);
    expect(other).toBe(200);
    expect(reply.status).toBe(201);
    expect((await call('GET', `/admin/tenants/ahead/users/${reply.json.id}`, undefined, bearer(adminToken))).json.mfaRequired).toBe(true);
    const login = await passwordLogin(srv, app, 'early-admin-made', PASSWORD, { tenant: 'ahead' });
    expect(login.status).toBe(200);
  });

  test('a request refused by validation stores nothing and frees the ref', async () => {
    const headers = { 'api-key': app.api_key!, 'idempotency-ref': 'reg-ahead-2' };
    const bad = await call('POST', '/users', { tenant: 'ahead', email: 'not an address', password: PASSWORD, acceptedTerms: true }, headers);
    expect(bad.status).toBe(400);
    expect(bad.json.syntaxErrors.invalidFields).toEqual([{ fieldName: 'email', error: 'must be a valid email address' }]);
    expect(await srv.running.app.database.knex('users').where({ tenant_id: 'ahead', email: 'not an address' }).first()).toBeUndefined();
    const good = await call('POST', '/users', { tenant: 'ahead', email: 'second@example.com', password: PASSWORD, acceptedTerms: true }, headers);
    expect(good.status).toBe(201);
  });

  test('a replay, a conflict, a malformed ref and a refused registration cost no bcrypt work', async () => {
    const body = { tenant: 'ahead', email: 'once@example.com', password: PASSWORD, acceptedTerms: true };
    const headers = { 'api-key': app.api_key!, 'idempotency-ref': 'reg-ahead-3' };
    expect((await call('POST', '/users', body, headers)).status).toBe(201);
    const spy = jest.spyOn(bcrypt, 'hash');
    try {
      const invalid = await call('POST', '/users', { ...body, email: 'not an address' }, { ...headers, 'idempotency-ref': 'reg-ahead-5' });
      expect(invalid.status).toBe(400);
      await setRegistrationOpen(false);
      const replay = await call('POST', '/users', body, headers);
      expect([replay.status, replay.headers.get('idempotent-replayed')]).toEqual([201, 'true']);
      expect((await call('POST', '/users', { ...body, email: 'other@example.com' }, headers)).status).toBe(409);
      expect((await call('POST', '/users', body, { ...headers, 'idempotency-ref': 'bad ref with spaces' })).status).toBe(400);
      const closed = await call('POST', '/users', { ...body, email: 'closed@example.com' }, { ...headers, 'idempotency-ref': 'reg-ahead-4' });
      expect([closed.status, closed.json.code]).toEqual([403, 'REGISTRATION_CLOSED']);
      expect(spy).not.toHaveBeenCalled();
    } finally {
      spy.mockRestore();
    }
    // The refused requests' refs are free: with registration open again, the same ref registers.
    await setRegistrationOpen(true);
    expect((await call('POST', '/users', { ...body, email: 'closed@example.com' }, { ...headers, 'idempotency-ref': 'reg-ahead-4' })).status).toBe(201);
  });
});
