import { startTestServer, type TestServer } from '../helpers/server';
import { basic, bearer, createClient, createTenant, createUser, form, introspect, json, lastCode, login, outbox, refresh, type ClientCreds } from '../helpers/flows';
import { dbLabel } from '../helpers/env';

const PASSWORD = 'a perfectly decent passphrase';
const ROUNDS = 3;

describe(`races, each repeated (${dbLabel})`, () => {
  let srv: TestServer;
  let app: ClientCreds;
  let rs: ClientCreds;
  let n = 0;

  beforeAll(async () => {
    srv = await startTestServer();
    await createTenant(srv, 'live-bank', 'live');
    app = await createClient(srv, { tenants: ['live-bank'], grant_types: ['password'] });
    rs = await createClient(srv, { tenants: ['live-bank'], introspection: true });
  });
  afterAll(async () => srv?.close());

  async function user() {
    n += 1;
    const username = `race${n}`;
    const mobile = `+4479111${String(60000 + n)}`;
    await createUser(srv, 'live-bank', { username, mobile, password: PASSWORD });
    return { username, mobile, t: await login(srv, app, username, PASSWORD) };
  }

  test.each(Array.from({ length: ROUNDS }, (_, i) => i + 1))('one OTP verified 50× in parallel → one success (round %i)', async () => {
    const u = await user();
    await json(srv, 'POST', '/authentication_factors/otp/SMS', undefined, bearer(u.t.access_token));
    const code = await lastCode(srv, u.mobile);
    const r = await Promise.all(Array.from({ length: 50 }, () => json(srv, 'POST', '/authentication_factors/otp/SMS/verify', { verificationCode: code }, bearer(u.t.access_token))));
    expect(r.filter((x) => x.status === 204)).toHaveLength(1);
    expect(r.filter((x) => x.status >= 500)).toHaveLength(0);
  });

  test.each(Array.from({ length: 8 }, (_, i) => i + 1))('one OTP verified 4× at once, two with an idempotency-ref → one success, no deadlock (round %i)', async () => {
    const u = await user();
    await json(srv, 'POST', '/authentication_factors/otp/SMS', undefined, bearer(u.t.access_token));
    const code = await lastCode(srv, u.mobile);
    const r = await Promise.all(
      Array.from({ length: 4 }, (_, i) =>
        json(srv, 'POST', '/authentication_factors/otp/SMS/verify', { verificationCode: code }, bearer(u.t.access_token, i % 2 ? { 'idempotency-ref': `dl-${u.username}-${i}` } : {})),
      ),
    );
    expect(r.map((x) => x.status).sort()).toEqual([204, 403, 403, 403]);
  });

  test.each(Array.from({ length: ROUNDS }, (_, i) => i + 1))('one refresh token 20× → one pair, zero 5xx (round %i)', async () => {
    const u = await user();
    const r = await Promise.all(Array.from({ length: 20 }, () => refresh(srv, app, u.t.refresh_token)));
    expect(r.filter((x) => x.status === 200)).toHaveLength(1);
    expect(r.filter((x) => x.status >= 500)).toHaveLength(0);
  });

  test.each(Array.from({ length: ROUNDS }, (_, i) => i + 1))('one idempotency-ref 20× → one effect (round %i)', async () => {
    const u = await user();
    const r = await Promise.all(
      Array.from({ length: 20 }, () => json(srv, 'POST', '/authentication_factors/otp/SMS', undefined, bearer(u.t.access_token, { 'idempotency-ref': 'same' }))),
    );
    expect(r.filter((x) => x.status >= 500)).toHaveLength(0);
    expect(r.every((x) => x.status === 204 || x.status === 409)).toBe(true);
    expect(await outbox(srv, 'sms', u.mobile)).toHaveLength(1);
    const challenges = await srv.running.app.database.knex('challenges').where({ purpose: 'enrolment' }).whereIn('user_id', srv.running.app.database.knex('users').select('id').where({ username: u.username }));
    expect(challenges).toHaveLength(1);
  });

  test.each(Array.from({ length: ROUNDS }, (_, i) => i + 1))('refresh racing revocation → nothing survives the revocation (round %i)', async () => {
    const u = await user();
    const [refreshed, revoked] = await Promise.all([
      refresh(srv, app, u.t.refresh_token),
      form(srv, '/token/revocation', { token: u.t.refresh_token, token_type_hint: 'refresh_token' }, { authorization: basic(app) }),
    ]);
    expect(revoked.status).toBe(200);
    expect(refreshed.status).toBeLessThan(500);
    expect((await introspect(srv, rs, u.t.access_token)).json.active).toBe(false);
    if (refreshed.status === 200) {
      const pair = refreshed.json as { access_token: string; refresh_token: string };
      expect((await introspect(srv, rs, pair.access_token)).json.active).toBe(false);
      expect((await refresh(srv, app, pair.refresh_token)).status).toBe(400);
    }
  });

  test.each(Array.from({ length: ROUNDS }, (_, i) => i + 1))("one user logs in 8× at once from one address → 8 sessions, zero 5xx, the user's count back to zero (round %i)", async () => {
    // Each login's first statement locks the address's counter, then the user; its last one must
    // lock in that order too, or two of them deadlock (and PostgreSQL aborts one). The embedded
    // database runs one statement at a time, so there this only checks the outcome.
    const u = await user();
    const r = await Promise.all(Array.from({ length: 8 }, () => form(srv, '/token', { grant_type: 'password', username: u.username, password: PASSWORD }, { authorization: basic(app) })));
    expect(r.map((x) => x.status)).toEqual(Array(8).fill(200));
    const row = (await srv.running.app.database.knex('users').where({ username: u.username }).first()) as { failed_login_count: number };
    expect(row.failed_login_count).toBe(0);
  });
});
