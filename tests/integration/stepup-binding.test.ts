import { startTestServer, type TestServer } from '../helpers/server';
import { bearer, createClient, createTenant, createUser, json, lastCode, login, outbox, passwordLogin, refresh, testClock, type ClientCreds } from '../helpers/flows';
import { newDevice } from '../helpers/device';
import { dbLabel } from '../helpers/env';

const PASSWORD = 'a perfectly decent passphrase';
const pay = (amount: string, creditorName = 'ACME Energy Ltd') => [{ type: 'payment_initiation', instructedAmount: { amount, currency: 'EUR' }, creditorName }];

describe(`what a code, a ref and an SCA token are bound to (${dbLabel})`, () => {
  let srv: TestServer;
  let app: ClientCreds;
  let jwtApp: ClientCreds;
  const clock = testClock();
  let n = 0;

  beforeAll(async () => {
    srv = await startTestServer({ clock: clock.now });
    await createTenant(srv, 'live-bank', 'live');
    app = await createClient(srv, { tenants: ['live-bank'], grant_types: ['password'] });
    jwtApp = await createClient(srv, { tenants: ['live-bank'], grant_types: ['password'], token_format: 'jwt' });
  });
  afterAll(async () => srv?.close());

  async function enrolled(client = app) {
    n += 1;
    const username = `b${n}${Math.random().toString(36).slice(2, 6)}`;
    const mobile = `+4479111${String(50000 + n).slice(-5)}`;
    const user = await createUser(srv, 'live-bank', { username, mobile, password: PASSWORD });
    const t = await login(srv, client, username, PASSWORD);
    await json(srv, 'POST', '/authentication_factors/otp/SMS', undefined, bearer(t.access_token));
    await json(srv, 'POST', '/authentication_factors/otp/SMS/verify', { verificationCode: await lastCode(srv, mobile) }, bearer(t.access_token));
    return { user, username, mobile, t };
  }
  async function stepUp(token: string, details?: unknown, mobile?: string) {
    await json(srv, 'POST', '/stepup/challenges/otp/SMS', details ? { authorization_details: details } : {}, bearer(token));
    const code = await lastCode(srv, mobile!);
    return json(srv, 'POST', '/stepup/challenges/otp/SMS/verify', { verificationCode: code, ...(details ? { authorization_details: details } : {}) }, bearer(token));
  }

  test("a code is bound to the token that asked for it, not just its session", async () => {
    const u = await enrolled();
    await json(srv, 'POST', '/stepup/challenges/otp/SMS', {}, bearer(u.t.access_token));
    const code = await lastCode(srv, u.mobile);
    const refreshed = (await refresh(srv, app, u.t.refresh_token)).json.access_token as string; // same session, another token
    expect((await json(srv, 'POST', '/stepup/challenges/otp/SMS/verify', { verificationCode: code }, bearer(refreshed))).status).toBe(403);
  });

  test("an idempotency-ref of one session never replays into another, and stored replies are sealed", async () => {
    const u = await enrolled();
    const other = await login(srv, app, u.username, PASSWORD);
    await json(srv, 'POST', '/stepup/challenges/otp/SMS', {}, bearer(u.t.access_token));
    const code = await lastCode(srv, u.mobile);
    const ref = { 'idempotency-ref': 'verify-1' };
    const first = await json(srv, 'POST', '/stepup/challenges/otp/SMS/verify', { verificationCode: code }, bearer(u.t.access_token, ref));
    expect(first.status).toBe(200);
    const replay = await json(srv, 'POST', '/stepup/challenges/otp/SMS/verify', { verificationCode: code }, bearer(u.t.access_token, ref));
    expect(replay.json.access_token).toBe(first.json.access_token);
    expect(replay.headers.get('cache-control')).toBe('no-store');
    const stolen = await json(srv, 'POST', '/stepup/challenges/otp/SMS/verify', { verificationCode: code }, bearer(other.access_token, ref));
    expect(stolen.status).toBe(403);
    const rows = await srv.running.app.database.knex('idempotency_records').select('response_body');
    expect(JSON.stringify(rows)).not.toContain(first.json.access_token as string);
  });

  test('factor changes need a recent SCA token that is not bound to a payment', async () => {
    const u = await enrolled();
    const device = await newDevice();
    const enrolPush = (token: string) => json(srv, 'POST', '/authentication_factors/push/AUTHY', { publicKey: device.publicJwk }, bearer(token));
    const paymentSca = (await stepUp(u.t.access_token, pay('1.00'), u.mobile)).json.access_token as string;
    expect((await enrolPush(paymentSca)).status).toBe(401);
    const sca = (await stepUp(u.t.access_token, undefined, u.mobile)).json.access_token as string;
    clock.advance(301); // older than the step-up lifetime
    expect((await enrolPush(sca)).status).toBe(401);
    const fresh = (await stepUp(u.t.access_token, undefined, u.mobile)).json.access_token as string;
    expect((await enrolPush(fresh)).status).toBe(204);
  });

  test('lowering factorMaxFailures below a user’s count refuses them for a block period, then lets them try', async () => {
    await createTenant(srv, 'strict-bank', 'live');
    const strictApp = await createClient(srv, { tenants: ['strict-bank'], grant_types: ['password'] });
    await createUser(srv, 'strict-bank', { username: 'lowered', mobile: '+447911150001', password: PASSWORD });
    const t = await login(srv, strictApp, 'lowered', PASSWORD);
    for (let i = 0; i < 4; i += 1) {
      await json(srv, 'POST', '/authentication_factors/otp/SMS', undefined, bearer(t.access_token));
      await json(srv, 'POST', '/authentication_factors/otp/SMS/verify', { verificationCode: '000000' }, bearer(t.access_token));
    }
    await srv.running.app.services.tenants.setPolicy('strict-bank', { factorMaxFailures: 3 });
    // The used-up count refuses codes for a block period from its last attempt: none is sent
    // meanwhile, and the answer does not say so.
    expect((await json(srv, 'POST', '/authentication_factors/otp/SMS', undefined, bearer(t.access_token))).status).toBe(204);
    expect((await outbox(srv, 'sms', '+447911150001')).filter((m) => m.tenant === 'strict-bank')).toHaveLength(4);
    expect((await json(srv, 'POST', '/authentication_factors/otp/SMS/verify', { verificationCode: await lastCode(srv, '+447911150001') }, bearer(t.access_token))).status).toBe(403);
    clock.advance(901);
    await json(srv, 'POST', '/authentication_factors/otp/SMS', undefined, bearer(t.access_token));
    expect((await json(srv, 'POST', '/authentication_factors/otp/SMS/verify', { verificationCode: await lastCode(srv, '+447911150001') }, bearer(t.access_token))).status).toBe(204);
  });

  test('no step-up code is sent while codes are refused, and one is once the block ends', async () => {
    const u = await enrolled();
    for (let i = 0; i < 5; i += 1) {
      expect((await json(srv, 'POST', '/stepup/challenges/otp/SMS', {}, bearer(u.t.access_token))).status).toBe(204);
      expect((await json(srv, 'POST', '/stepup/challenges/otp/SMS/verify', { verificationCode: '000000' }, bearer(u.t.access_token))).status).toBe(403);
    }
    const sent = (await outbox(srv, 'sms', u.mobile)).length;
    // Answered as a send, so that the caller cannot tell the user is blocked; nothing is sent.
    const refused = await json(srv, 'POST', '/stepup/challenges/otp/SMS', { authorization_details: pay('9.99') }, bearer(u.t.access_token));
    expect(refused.status).toBe(204);
    expect(refused.headers.get('retry-after')).toBeNull();
    expect(await outbox(srv, 'sms', u.mobile)).toHaveLength(sent);
    clock.advance(901);
    expect((await stepUp(u.t.access_token, undefined, u.mobile)).status).toBe(200);
  });

  test('a pending login token is opaque even for a JWT client', async () => {
    await createTenant(srv, 'mfa-jwt', 'sandbox');
    const c = await createClient(srv, { tenants: ['mfa-jwt'], grant_types: ['password'], token_format: 'jwt' });
    await createUser(srv, 'mfa-jwt', { username: 'joe', mobile: '+447911160002', password: PASSWORD });
    const first = await login(srv, c, 'joe', PASSWORD);
    expect(first.access_token.split('.')).toHaveLength(3);
    await json(srv, 'POST', '/authentication_factors/otp/SMS', undefined, bearer(first.access_token));
    await json(srv, 'POST', '/authentication_factors/otp/SMS/verify', { verificationCode: '123456' }, bearer(first.access_token));
    await srv.running.app.services.tenants.setPolicy('mfa-jwt', { mfaAtLogin: true });
    const pending = await passwordLogin(srv, c, 'joe', PASSWORD);
    expect(pending.json.mfa_required).toBe(true);
    expect(String(pending.json.access_token).split('.')).toHaveLength(1);
  });

  test('a payee with bidi or zero-width characters is refused; the SMS shows the whole IBAN', async () => {
    const u = await enrolled();
    const spoof = [{ type: 'payment_initiation', instructedAmount: { amount: '5.00', currency: 'EUR' }, creditorName: 'ACME \u202Edtl ygrenE' }];
    expect((await json(srv, 'POST', '/stepup/challenges/otp/SMS', { authorization_details: spoof }, bearer(u.t.access_token))).status).toBe(400);
    const iban = [{ type: 'payment_initiation', instructedAmount: { amount: '5.00', currency: 'EUR' }, creditorAccount: { iban: 'DE89370400440532013000' } }];
    expect((await json(srv, 'POST', '/stepup/challenges/otp/SMS', { authorization_details: iban }, bearer(u.t.access_token))).status).toBe(204);
    const msgs = await outbox(srv, 'sms', u.mobile);
    expect(String(msgs[msgs.length - 1]!.text)).toContain('DE89370400440532013000');
    expect(jwtApp.client_id).toBeDefined();
  });
});
