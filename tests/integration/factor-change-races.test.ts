/**
 * What removes a factor or changes a user's mobile (an admin's edit, a factor reset) against what
 * sends or revives an SMS code, interleaved at the worst moment: no deadlock (a 500 on
 * PostgreSQL), and no code left working for a number or factor that is gone. The lock order they
 * share: the user's row first (src/factors/repository.ts, lockUserForChange and lockUserForSend).
 */
import { startTestServer, type TestServer } from '../helpers/server';
import { basic, bearer, form, json, lastCode, login, type ClientCreds } from '../helpers/flows';
import { dbLabel, usingPostgres } from '../helpers/env';

const PASSWORD = 'a perfectly decent passphrase';
// Admin replies are read loosely here.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Reply = { status: number; headers: Headers; json: any };
const ADMIN = { client_id: 'platform-admin', client_secret: 'platform-admin-secret-for-tests-0123456789' };
// The waits below watch PostgreSQL's lock table; the embedded database's one connection
// serialises these requests whole, so there is nothing to interleave.
const pgTest = usingPostgres ? test : test.skip;

describe(`factor changes racing SMS codes (${dbLabel})`, () => {
  let srv: TestServer;
  let token: string;
  let creds: ClientCreds;
  let n = 0;
  const api = (method: string, path: string, body?: unknown): Promise<Reply> => json(srv, method, `/admin${path}`, body, bearer(token));

  beforeAll(async () => {
    srv = await startTestServer({ config: { adminClientId: ADMIN.client_id, adminClientSecret: ADMIN.client_secret } });
    token = (await form(srv, '/token', { grant_type: 'client_credentials', scope: 'admin' }, { authorization: basic(ADMIN) })).json.access_token as string;
    await api('POST', '/tenants', { id: 'races', mode: 'live' });
    const app = (await api('POST', '/tenants/races/clients', { grant_types: ['password'] })).json;
    creds = { client_id: app.client_id, client_secret: app.client_secret, api_key: app.api_key };
  });
  afterAll(async () => srv?.close());

  /** A user on `mobile` and their token; with `enrol`, their SMS factor ACTIVE. */
  async function user(mobile: string, enrol = true) {
    n += 1;
    const u = (await api('POST', '/tenants/races/users', { username: `racer${n}`, mobile, password: PASSWORD })).json as { id: string };
    const tok = (await login(srv, creds, `racer${n}`, PASSWORD)).access_token;
    if (enrol) {
      expect((await json(srv, 'POST', '/authentication_factors/otp/SMS', undefined, bearer(tok))).status).toBe(204);
      const code = await lastCode(srv, mobile);
      expect((await json(srv, 'POST', '/authentication_factors/otp/SMS/verify', { verificationCode: code }, bearer(tok))).status).toBe(204);
    }
    return { id: u.id, tok };
  }
  /** Until some statement waits for a lock (the request started meanwhile has reached it). */
  const untilWaiting = async () => {
    const { knex } = srv.running.app.database;
    const waiting = async () => Number((await knex.raw('SELECT count(*) AS n FROM pg_locks WHERE NOT granted')).rows[0].n);
    for (let i = 0; i < 500 && (await waiting()) === 0; i += 1) await new Promise((r) => setImmediate(r));
  };
  /** Runs `request` with `method` of the factor repository calling `meanwhile` first, once. */
  async function withMeanwhile<T>(method: 'cancelPending' | 'lockSlot' | 'remove', meanwhile: () => Promise<void>, request: () => Promise<T>): Promise<T> {
    const { factors } = srv.running.app.services;
    const original = (factors[method] as (...a: unknown[]) => Promise<unknown>).bind(factors);
    const spy = jest.spyOn(factors, method).mockImplementationOnce((async (...args: unknown[]) => {
      await meanwhile();
      return original(...args);
    }) as never);
    try {
      return await request();
    } finally {
      spy.mockRestore();
    }
  }
  const stepUp = (tok: string) => json(srv, 'POST', '/stepup/challenges/otp/SMS', {}, bearer(tok));
  const verifyStepUp = (tok: string, code: string) => json(srv, 'POST', '/stepup/challenges/otp/SMS/verify', { verificationCode: code }, bearer(tok));
  const factorsOf = async (tok: string) => (await json(srv, 'GET', '/authentication_factors', undefined, bearer(tok))).json.factors as unknown[];

  test('a send whose delivery failed revives no code sent before when the mobile changed in between', async () => {
    const { knex } = srv.running.app.database;
    const { tx } = srv.running.app.services;
    const u = await user('+447911200001');
    expect((await stepUp(u.tok)).status).toBe(204);
    const oldCode = await lastCode(srv, '+447911200001');
    // The next message to the old number cannot be delivered (the development outbox refuses it)...
    await knex.raw(`CREATE OR REPLACE FUNCTION races_undeliverable() RETURNS trigger AS $$ BEGIN IF NEW.recipient = '+447911200001' THEN RAISE EXCEPTION 'undeliverable'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql`);
    await knex.raw('CREATE TRIGGER races_undeliverable BEFORE INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION races_undeliverable()');
    // ...and the edit commits after the send committed, before its undo (the second transaction).
    const transaction = tx.transaction.bind(tx);
    let calls = 0;
    let edit: Reply | undefined;
    const spy = jest.spyOn(tx, 'transaction').mockImplementation((async (fn: () => Promise<unknown>) => {
      calls += 1;
      if (calls === 2) edit = await api('PATCH', `/tenants/races/users/${u.id}`, { mobile: '+447911200002' });
      return transaction(fn);
    }) as typeof tx.transaction);
    try {
      expect((await stepUp(u.tok)).status).toBe(500); // the outbox's failure is not a delivery refusal
    } finally {
      spy.mockRestore();
      await knex.raw('DROP TRIGGER races_undeliverable ON outbox');
    }
    expect(edit?.status).toBe(200);
    // The first code, sent to the old number, was cancelled by the edit and stays so.
    expect((await verifyStepUp(u.tok, oldCode)).status).toBe(403);
  });

  pgTest('an admin factor reset while a step-up code is being sent: no deadlock, and the code does not work', async () => {
    const u = await user('+447911200011');
    expect((await stepUp(u.tok)).status).toBe(204);
    let reset: Promise<Reply> | undefined;
    const send = await withMeanwhile('cancelPending', async () => {
      reset = api('DELETE', `/tenants/races/users/${u.id}/factors`);
      await untilWaiting();
    }, () => stepUp(u.tok));
    expect([send.status, (await reset!).status]).toEqual([204, 204]);
    expect(await factorsOf(u.tok)).toEqual([]);
    expect((await verifyStepUp(u.tok, await lastCode(srv, '+447911200011'))).status).toBe(403);
  });

  pgTest('an admin factor reset while an SMS enrolment is under way: no deadlock', async () => {
    const u = await user('+447911200021', false);
    expect((await json(srv, 'POST', '/authentication_factors/otp/SMS', undefined, bearer(u.tok))).status).toBe(204); // pending
    let reset: Promise<Reply> | undefined;
    const enrol = await withMeanwhile('lockSlot', async () => {
      reset = api('DELETE', `/tenants/races/users/${u.id}/factors`);
      await untilWaiting();
    }, () => json(srv, 'POST', '/authentication_factors/otp/SMS', undefined, bearer(u.tok)));
    expect([enrol.status, (await reset!).status]).toEqual([204, 204]);
    expect(await factorsOf(u.tok)).toEqual([]);
  });

  pgTest("an admin's edit of the mobile and a factor reset at once: no deadlock", async () => {
    const u = await user('+447911200031');
    expect((await stepUp(u.tok)).status).toBe(204);
    let reset: Promise<Reply> | undefined;
    const edit = await withMeanwhile('remove', async () => {
      reset = api('DELETE', `/tenants/races/users/${u.id}/factors`);
      await untilWaiting();
    }, () => api('PATCH', `/tenants/races/users/${u.id}`, { mobile: '+447911200032' }));
    expect([edit.status, (await reset!).status]).toEqual([200, 204]);
    expect((await verifyStepUp(u.tok, await lastCode(srv, '+447911200031'))).status).toBe(403);
  });
});
