/**
 * Writes of one user's factors and challenges interleaved at the worst moment: an admin's edit of
 * the mobile or factor reset against a code's send or its undo, enrolments against resets, device
 * answers and each other. No deadlock (a 500 on PostgreSQL), and no code left working for a number
 * or factor that is gone. The rule they share: the user's row first (src/factors/repository.ts,
 * lockUser), so they run one at a time per user.
 */
import { startTestServer, type TestServer } from '../helpers/server';
import { basic, bearer, form, json, lastCode, login, outbox, type ClientCreds } from '../helpers/flows';
import { newDevice } from '../helpers/device';
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
  /** Until `k` statements wait for a lock (the requests started meanwhile have reached theirs). */
  const untilWaiting = async (k = 1) => {
    const { knex } = srv.running.app.database;
    const waiting = async () => Number((await knex.raw('SELECT count(*) AS n FROM pg_locks WHERE NOT granted')).rows[0].n);
    for (let i = 0; i < 1000 && (await waiting()) < k; i += 1) await new Promise((r) => setImmediate(r));
  };
  /** The next SMS to `mobile` cannot be delivered (the development outbox refuses it); then they can. */
  async function failNextSmsTo(mobile: string): Promise<() => Promise<void>> {
    const { knex } = srv.running.app.database;
    await knex.raw('CREATE SEQUENCE IF NOT EXISTS races_fail_seq');
    await knex.raw(`CREATE OR REPLACE FUNCTION races_fail_once() RETURNS trigger AS $$ BEGIN IF NEW.recipient = '${mobile}' AND nextval('races_fail_seq') = 1 THEN RAISE EXCEPTION 'undeliverable'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql`);
    await knex.raw('CREATE TRIGGER races_fail_once BEFORE INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION races_fail_once()');
    return async () => {
      await knex.raw('DROP TRIGGER IF EXISTS races_fail_once ON outbox');
      await knex.raw('DROP SEQUENCE IF EXISTS races_fail_seq');
    };
  }
  const enrolPush = (tok: string, publicKey: unknown, deviceName: string) => json(srv, 'POST', '/authentication_factors/push/AUTHY', { publicKey, deviceName }, bearer(tok));
  /** Runs `request` with `method` of the factor repository calling `meanwhile` first, once. */
  async function withMeanwhile<T>(method: 'cancelPending' | 'lockSlot' | 'remove' | 'activate' | 'reopen', meanwhile: () => Promise<void>, request: () => Promise<T>): Promise<T> {
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

  pgTest('a push re-enrolment held mid-way while an admin resets the factors: no deadlock', async () => {
    const { knex } = srv.running.app.database;
    const u = await user('+447911200041', false);
    expect((await enrolPush(u.tok, (await newDevice()).publicJwk, 'first')).status).toBe(204); // its factor and challenge pending
    // The re-enrolment's update of the factor waits, in a trigger, for an advisory lock held here.
    await knex.raw(`CREATE OR REPLACE FUNCTION races_pause() RETURNS trigger AS $$ BEGIN IF NEW.device_name = 'paused' THEN PERFORM pg_advisory_lock(4242); PERFORM pg_advisory_unlock(4242); END IF; RETURN NEW; END $$ LANGUAGE plpgsql`);
    await knex.raw('CREATE TRIGGER races_pause BEFORE UPDATE ON factors FOR EACH ROW EXECUTE FUNCTION races_pause()');
    let release!: () => void;
    let held!: () => void;
    const isHeld = new Promise<void>((r) => (held = r));
    const holder = knex.transaction(async (trx) => {
      await trx.raw('select pg_advisory_xact_lock(4242)');
      held();
      await new Promise<void>((r) => (release = r));
    });
    await isHeld;
    try {
      const enrol = enrolPush(u.tok, (await newDevice()).publicJwk, 'paused');
      await untilWaiting(1);
      const reset = api('DELETE', `/tenants/races/users/${u.id}/factors`);
      await untilWaiting(2);
      release();
      await holder;
      expect([(await enrol).status, (await reset).status]).toEqual([204, 204]);
    } finally {
      await knex.raw('DROP TRIGGER IF EXISTS races_pause ON factors');
    }
  });

  pgTest("a device approving its enrolment while the user enrols another device: no deadlock", async () => {
    const u = await user('+447911200051', false);
    const device = await newDevice();
    expect((await enrolPush(u.tok, device.publicJwk, 'first')).status).toBe(204);
    const msgs = await outbox(srv, 'push', u.id);
    const msg = msgs[msgs.length - 1] as { challengeId: string; nonce: string };
    let enrol: Promise<Reply> | undefined;
    const answer = await withMeanwhile('activate', async () => {
      enrol = enrolPush(u.tok, (await newDevice()).publicJwk, 'second');
      await untilWaiting();
    }, async () => json(srv, 'POST', `/device/challenges/${msg.challengeId}`, { jws: await device.answer(msg) }));
    expect([answer.status, (await enrol!).status]).toEqual([200, 204]);
  });

  pgTest('a failed step-up send taken back while another is sent: no deadlock', async () => {
    const u = await user('+447911200061');
    expect((await stepUp(u.tok)).status).toBe(204); // a code open: the next send cancels it, its undo reopens it
    const cleanup = await failNextSmsTo('+447911200061');
    let second: Promise<Reply> | undefined;
    try {
      const first = await withMeanwhile('reopen', async () => {
        second = stepUp(u.tok);
        await untilWaiting();
      }, () => stepUp(u.tok));
      // The first fails as the outbox refused it (a 500: not a delivery refusal); the second is sent.
      expect([first.status, (await second!).status]).toEqual([500, 204]);
    } finally {
      await cleanup();
    }
    expect((await verifyStepUp(u.tok, await lastCode(srv, '+447911200061'))).status).toBe(200);
  });

  pgTest('a failed SMS enrolment taken back while another starts: no deadlock', async () => {
    const u = await user('+447911200071', false);
    const enrol = () => json(srv, 'POST', '/authentication_factors/otp/SMS', undefined, bearer(u.tok));
    expect((await enrol()).status).toBe(204);
    const cleanup = await failNextSmsTo('+447911200071');
    let second: Promise<Reply> | undefined;
    try {
      const first = await withMeanwhile('reopen', async () => {
        second = enrol();
        await untilWaiting();
      }, enrol);
      expect([first.status, (await second!).status]).toEqual([500, 204]);
    } finally {
      await cleanup();
    }
  });
});
