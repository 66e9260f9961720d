import * as oauth from 'openid-client';
import { startTestServer, type TestServer } from '../helpers/server';
import {
  bearer, createClient, createTenant, createUser, introspect, json, lastCode, login, outbox, passwordLogin, refresh, type ClientCreds,
} from '../helpers/flows';
import { newDevice } from '../helpers/device';
import { dbLabel, usingPostgres } from '../helpers/env';
import { bindingHash } from '../../src/stepup/details';

const PASSWORD = 'a perfectly decent passphrase';
const SCA = 'urn:openbanking:psd2:sca';
const payment = (amount = '125.00', creditorName = 'ACME Energy Ltd') => [
  { type: 'payment_initiation', instructedAmount: { amount, currency: 'EUR' }, creditorName, creditorAccount: { iban: 'DE89370400440532013000' } },
];

describe(`step-up: SCA challenges, dynamic linking, login-time MFA (${dbLabel})`, () => {
  let srv: TestServer;
  let sandboxApp: ClientCreds;
  let liveApp: ClientCreds;
  let rsSandbox: ClientCreds;
  let rsLive: ClientCreds;
  let seq = 0;

  beforeAll(async () => {
    srv = await startTestServer();
    await createTenant(srv, 'sandbox-bank', 'sandbox');
    await createTenant(srv, 'live-bank', 'live');
    sandboxApp = await createClient(srv, { tenants: ['sandbox-bank'], grant_types: ['password'], scope: 'accounts payments' });
    liveApp = await createClient(srv, { tenants: ['live-bank'], grant_types: ['password'], scope: 'payments' });
    rsSandbox = await createClient(srv, { tenants: ['sandbox-bank'], introspection: true });
    rsLive = await createClient(srv, { tenants: ['live-bank'], introspection: true });
  });
  afterAll(async () => srv?.close());

  /** A user with an ACTIVE SMS factor (enrolled in a first session). */
  async function smsUser(tenant: 'sandbox-bank' | 'live-bank') {
    seq += 1;
    const username = `s${seq}${Math.random().toString(36).slice(2, 7)}`;
    const mobile = `+4479112${String(10000 + seq).slice(-5)}`;
    const user = await createUser(srv, tenant, { username, mobile, password: PASSWORD });
    const app = tenant === 'sandbox-bank' ? sandboxApp : liveApp;
    const t = await login(srv, app, username, PASSWORD);
    await json(srv, 'POST', '/authentication_factors/otp/SMS', undefined, bearer(t.access_token));
    const code = tenant === 'sandbox-bank' ? '123456' : await lastCode(srv, mobile);
    expect((await json(srv, 'POST', '/authentication_factors/otp/SMS/verify', { verificationCode: code }, bearer(t.access_token))).status).toBe(204);
    return { user, username, mobile, app, token: t.access_token, tokens: t };
  }
  const startSms = (token: string, body: unknown = {}) => json(srv, 'POST', '/stepup/challenges/otp/SMS', body, bearer(token));

  /** Enrols a test device for push on `u` (with an SCA token from SMS, as a second factor needs); not yet answered. */
  async function enrolPush(u: { token: string; user: { id: string } }, channel: 'AUTHY' | 'BIOMETRIC') {
    const device = await newDevice();
    await startSms(u.token);
    const sca = (await verifySms(u.token, '123456')).json.access_token as string;
    await json(srv, 'POST', `/authentication_factors/push/${channel}`, { publicKey: device.publicJwk }, bearer(sca));
    const enrol = (await outbox(srv, 'push', u.user.id)).pop() as { challengeId: string; nonce: string };
    return { device, enrol };
  }
  /** A user with ACTIVE SMS and push factors, and the device that holds the push key. */
  async function pushUser(channel: 'AUTHY' | 'BIOMETRIC') {
    const u = await smsUser('sandbox-bank');
    const { device, enrol } = await enrolPush(u, channel);
    await json(srv, 'POST', `/device/challenges/${enrol.challengeId}`, { jws: await device.answer(enrol) });
    return { ...u, device };
  }
  const verifySms = (token: string, verificationCode: string, extra: Record<string, unknown> = {}) =>
    json(srv, 'POST', '/stepup/challenges/otp/SMS/verify', { verificationCode, ...extra }, bearer(token));

  test('openid-client: password grant → SMS step-up → introspection shows the SCA acr, amr and a fresh auth_time', async () => {
    const u = await smsUser('sandbox-bank');
    const config = await oauth.discovery(new URL(srv.running.app.config.publicUrl), sandboxApp.client_id, undefined, oauth.ClientSecretBasic(sandboxApp.client_secret), {
      execute: [oauth.allowInsecureRequests],
    });
    const tokens = await oauth.genericGrantRequest(config, 'password', { username: u.username, password: PASSWORD, scope: 'payments' });
    expect((await startSms(tokens.access_token)).status).toBe(204);
    const res = await verifySms(tokens.access_token, '123456');
    expect(res.status).toBe(200);
    expect(res.headers.get('cache-control')).toBe('no-store');
    expect(res.json).toMatchObject({ token_type: 'Bearer', expires_in: 300, scope: 'payments', member_id: u.user.id });
    const rsConfig = await oauth.discovery(new URL(srv.running.app.config.publicUrl), rsSandbox.client_id, undefined, oauth.ClientSecretBasic(rsSandbox.client_secret), {
      execute: [oauth.allowInsecureRequests],
    });
    const before = await oauth.tokenIntrospection(rsConfig, tokens.access_token);
    const info = await oauth.tokenIntrospection(rsConfig, res.json.access_token as string);
    expect(info).toMatchObject({ active: true, sub: u.user.id, member_id: u.user.id, tenant: 'sandbox-bank', client_id: sandboxApp.client_id, acr: SCA, amr: ['pwd', 'otp', 'sms'], scope: 'payments' });
    expect(info.exp! - info.iat!).toBe(300);
    expect(info.auth_time as number).toBeGreaterThanOrEqual(before.auth_time as number);
    expect(info.sid).toBe(before.sid); // same session
  });

  test('push step-up with a test device: PENDING → APPROVED, the token once and only to its opener', async () => {
    const u = await pushUser('BIOMETRIC');
    const { device } = u;

    const started = await json(srv, 'POST', '/stepup/challenges/push/BIOMETRIC', {}, bearer(u.token));
    expect(started.status).toBe(202);
    expect(started.json).toMatchObject({ challengeId: expect.any(String), status: 'PENDING', expiresAt: expect.any(String) });
    const id = started.json.challengeId as string;
    expect((await json(srv, 'GET', `/stepup/challenges/${id}`, undefined, bearer(u.token))).json.status).toBe('PENDING');
    const push = (await outbox(srv, 'push', u.user.id)).pop() as { challengeId: string; nonce: string; kind: string };
    expect(push).toMatchObject({ challengeId: id, kind: 'stepup', channel: 'BIOMETRIC' });
    expect((await json(srv, 'POST', `/device/challenges/${id}`, { jws: await device.answer(push) })).json).toEqual({ status: 'APPROVED' });

    const other = await login(srv, u.app, u.username, PASSWORD);
    expect((await json(srv, 'GET', `/stepup/challenges/${id}`, undefined, bearer(other.access_token))).status).toBe(404);
    const done = await json(srv, 'GET', `/stepup/challenges/${id}`, undefined, bearer(u.token));
    expect(done.json).toMatchObject({ status: 'APPROVED', token: { token_type: 'Bearer', expires_in: 300 } });
    const token = (done.json.token as { access_token: string }).access_token;
    expect((await introspect(srv, rsSandbox, token)).json).toMatchObject({ active: true, acr: SCA, amr: ['pwd', 'hwk'] });
    const again = await json(srv, 'GET', `/stepup/challenges/${id}`, undefined, bearer(u.token));
    expect(again.json.status).toBe('APPROVED');
    expect(again.json.token).toBeUndefined();

    // a denial
    const second = await json(srv, 'POST', '/stepup/challenges/push/BIOMETRIC', {}, bearer(u.token));
    const push2 = (await outbox(srv, 'push', u.user.id)).pop() as { challengeId: string; nonce: string };
    await json(srv, 'POST', `/device/challenges/${second.json.challengeId as string}`, { jws: await device.answer(push2, 'DENY') });
    expect((await json(srv, 'GET', `/stepup/challenges/${second.json.challengeId as string}`, undefined, bearer(u.token))).json.status).toBe('DENIED');
  });

  test('dynamic linking: the SMS names amount and payee; a cent or a payee changed and the code no longer works', async () => {
    const u = await smsUser('live-bank');
    expect((await startSms(u.token, { authorization_details: payment() })).status).toBe(204);
    const msgs = await outbox(srv, 'sms', u.mobile);
    const text = String(msgs[msgs.length - 1]!.text);
    expect(text).toContain('125.00 EUR');
    expect(text).toContain('ACME Energy Ltd');
    const code = await lastCode(srv, u.mobile);
    expect((await verifySms(u.token, code, { authorization_details: payment('125.01') })).status).toBe(403);
    expect((await verifySms(u.token, code, { authorization_details: payment('125.00', 'Mallory Ltd') })).status).toBe(403);
    const ok = await verifySms(u.token, code, { authorization_details: payment() });
    expect(ok.status).toBe(200);
    expect(ok.json.authorization_details).toEqual(payment());
    const info = await introspect(srv, rsLive, ok.json.access_token as string);
    expect(info.json).toMatchObject({ active: true, acr: SCA, authorization_details: payment() });
  });

  test("a transaction's code verified with the code alone (DESIGN's {verificationCode}) steps up exactly the challenged details", async () => {
    const u = await smsUser('live-bank');
    expect((await startSms(u.token, { authorization_details: payment('42.00', 'Bakery GmbH') })).status).toBe(204);
    const code = await lastCode(srv, u.mobile);
    const wrong = String((Number(code) + 1) % 1_000_000).padStart(6, '0');
    expect((await verifySms(u.token, wrong)).status).toBe(403);
    const ok = await verifySms(u.token, code);
    expect(ok.status).toBe(200);
    expect(ok.json.authorization_details).toEqual(payment('42.00', 'Bakery GmbH'));
    expect((await introspect(srv, rsLive, ok.json.access_token as string)).json).toMatchObject({ active: true, acr: SCA, authorization_details: payment('42.00', 'Bakery GmbH') });
    // The code is used up.
    expect((await verifySms(u.token, code)).status).toBe(403);
  });

  test('a code issued without a transaction never steps up one', async () => {
    const u = await smsUser('live-bank');
    await startSms(u.token);
    const code = await lastCode(srv, u.mobile);
    expect((await verifySms(u.token, code, { authorization_details: payment() })).status).toBe(403);
  });

  test('dynamic linking by push: the device must sign the hash of exactly those details', async () => {
    const u = await pushUser('AUTHY');
    const { device } = u;

    const started = await json(srv, 'POST', '/stepup/challenges/push/AUTHY', { authorization_details: payment('9.99') }, bearer(u.token));
    const push = (await outbox(srv, 'push', u.user.id)).pop() as { challengeId: string; nonce: string; text: string; authorization_details: unknown };
    expect(push.text).toContain('9.99 EUR');
    expect(push.authorization_details).toEqual(payment('9.99'));
    const post = async (jws: string) => json(srv, 'POST', `/device/challenges/${push.challengeId}`, { jws });
    expect((await post(await device.answer(push))).status).toBe(403); // no binding hash
    expect((await post(await device.answer(push, 'APPROVE', { bindingHash: bindingHash(payment('9.98') as never) }))).status).toBe(403);
    expect((await post(await device.answer(push, 'APPROVE', { bindingHash: bindingHash(payment('9.99') as never) }))).status).toBe(200);
    const done = await json(srv, 'GET', `/stepup/challenges/${started.json.challengeId as string}`, undefined, bearer(u.token));
    const token = done.json.token as { access_token: string; authorization_details: unknown };
    expect(token.authorization_details).toEqual(payment('9.99'));
    expect((await introspect(srv, rsSandbox, token.access_token)).json).toMatchObject({ acr: SCA, amr: ['pwd', 'swk'], authorization_details: payment('9.99') });
  });

  test('50 parallel verifies of one code → exactly one token', async () => {
    const u = await smsUser('live-bank');
    await startSms(u.token);
    const code = await lastCode(srv, u.mobile);
    const results = await Promise.all(Array.from({ length: 50 }, () => verifySms(u.token, code)));
    expect(results.filter((r) => r.status === 200)).toHaveLength(1);
    expect(results.filter((r) => r.status >= 500)).toHaveLength(0);
    const count = await srv.running.app.database.knex('oidc_payloads').where({ type: 'AccessToken', account_id: u.user.id }).whereRaw("payload->'extra'->>'acr' = ?", [SCA]).count({ n: '*' }).first();
    expect(Number(count?.n)).toBe(1);
  });

  test('login-time MFA: the password token is pending until a challenge succeeds', async () => {
    await createTenant(srv, 'mfa-bank', 'sandbox');
    const app = await createClient(srv, { tenants: ['mfa-bank'], grant_types: ['password'] });
    const rs = await createClient(srv, { tenants: ['mfa-bank'], introspection: true });
    await createUser(srv, 'mfa-bank', { username: 'mia', mobile: '+447911200001', password: PASSWORD });
    const first = await login(srv, app, 'mia', PASSWORD);
    await json(srv, 'POST', '/authentication_factors/otp/SMS', undefined, bearer(first.access_token));
    await json(srv, 'POST', '/authentication_factors/otp/SMS/verify', { verificationCode: '123456' }, bearer(first.access_token));
    await srv.running.app.services.tenants.setPolicy('mfa-bank', { mfaAtLogin: true });

    const pending = await passwordLogin(srv, app, 'mia', PASSWORD);
    expect(pending.status).toBe(200);
    expect(pending.json.mfa_required).toBe(true);
    expect(pending.json.refresh_token).toBeUndefined();
    const token = pending.json.access_token as string;
    expect((await introspect(srv, rs, token)).json).toEqual({ active: false });
    const me = await json(srv, 'GET', '/users/me', undefined, bearer(token));
    expect(me.status).toBe(401);
    expect(me.headers.get('www-authenticate')).toMatch(/insufficient_user_authentication/);
    expect((await json(srv, 'GET', '/authentication_factors', undefined, bearer(token))).status).toBe(401);
    // A payment's approval never completes the login: the user approved that payment, not a session.
    const payment = { authorization_details: [{ type: 'payment_initiation', instructedAmount: { amount: '1.00', currency: 'EUR' }, creditorName: 'Coffee shop' }] };
    for (const path of ['/stepup/challenges/otp/SMS', '/stepup/challenges/push/AUTHY']) {
      const r = await json(srv, 'POST', path, payment, bearer(token));
      expect([path, r.status, r.json.code]).toEqual([path, 403, 'LOGIN_PENDING']);
    }

    expect((await startSms(token)).status).toBe(204);
    const done = await verifySms(token, '123456');
    expect(done.status).toBe(200);
    expect(done.json.expires_in).toBe(1800); // the session's own token, not a 5-minute step-up
    expect(done.json.refresh_token).toBeDefined();
    const full = done.json.access_token as string;
    expect((await introspect(srv, rs, full)).json).toMatchObject({ active: true, acr: SCA, amr: ['pwd', 'otp', 'sms'] });
    expect((await json(srv, 'GET', '/users/me', undefined, bearer(full))).status).toBe(200);
    expect((await introspect(srv, rs, token)).json).toEqual({ active: false }); // the pending one stays pending
    // ... and has done its work: it completes no second login.
    expect((await startSms(token)).status).toBe(401);
    expect((await verifySms(token, '123456')).status).toBe(401);
    const refreshed = await refresh(srv, app, done.json.refresh_token as string);
    expect(refreshed.status).toBe(200);
    expect((await introspect(srv, rs, refreshed.json.access_token as string)).json).toMatchObject({ active: true, acr: SCA });
  });

  test('push step-ups started at once leave exactly one challenge open, the only one the device can approve', async () => {
    const u = await pushUser('AUTHY');
    const { device } = u;

    const started = await Promise.all(Array.from({ length: 6 }, () => json(srv, 'POST', '/stepup/challenges/push/AUTHY', {}, bearer(u.token))));
    expect(started.map((r) => r.status)).toEqual(Array(6).fill(202));
    const open = await srv.running.app.database.knex('challenges').where({ user_id: u.user.id, purpose: 'stepup', channel: 'AUTHY', status: 'PENDING' });
    expect(open).toHaveLength(1);
    const pushes = (await outbox(srv, 'push', u.user.id)).filter((p) => p.kind === 'stepup') as Array<{ challengeId: string; nonce: string }>;
    const answers = await Promise.all(pushes.map(async (p) => (await json(srv, 'POST', `/device/challenges/${p.challengeId}`, { jws: await device.answer(p) })).status));
    expect(answers.filter((status) => status === 200)).toHaveLength(1);
    expect(pushes[answers.indexOf(200)]!.challengeId).toBe(open[0].id);
  });

  test("a device's answer honours idempotency-ref: the same answer again is the stored reply, another is a 409", async () => {
    const u = await smsUser('sandbox-bank');
    const { device, enrol } = await enrolPush(u, 'BIOMETRIC');
    const answer = { jws: await device.answer(enrol) };
    const path = `/device/challenges/${enrol.challengeId}`;

    const first = await json(srv, 'POST', path, answer, { 'idempotency-ref': 'dev-1' });
    expect([first.status, first.json]).toEqual([200, { status: 'APPROVED' }]);
    const retry = await json(srv, 'POST', path, answer, { 'idempotency-ref': 'dev-1' }); // the reply was lost: the device sends it again
    expect([retry.status, retry.json, retry.headers.get('idempotent-replayed')]).toEqual([200, { status: 'APPROVED' }, 'true']);
    const other = await json(srv, 'POST', path, { jws: await device.answer(enrol, 'DENY') }, { 'idempotency-ref': 'dev-1' });
    expect([other.status, other.json.code]).toEqual([409, 'IDEMPOTENCY_CONFLICT']);
    const audit = await srv.running.app.database.knex('audit_log').where({ target: u.user.id, type: 'factor.enrolled' });
    expect(audit.filter((e: { details: unknown }) => JSON.stringify(e.details).includes('BIOMETRIC'))).toHaveLength(1);
  });

  test('the fixed sandbox code stops working the moment the tenant goes live, for challenges already sent too', async () => {
    await createTenant(srv, 'going-live', 'sandbox');
    const app = await createClient(srv, { tenants: ['going-live'], grant_types: ['password'] });
    await createUser(srv, 'going-live', { username: 'gil', mobile: '+447911200077', password: PASSWORD });
    const t = (await login(srv, app, 'gil', PASSWORD)).access_token;
    await json(srv, 'POST', '/authentication_factors/otp/SMS', undefined, bearer(t));
    expect((await json(srv, 'POST', '/authentication_factors/otp/SMS/verify', { verificationCode: '123456' }, bearer(t))).status).toBe(204);
    expect((await startSms(t)).status).toBe(204); // a sandbox challenge: its code is 123456

    const tenants = srv.running.app.services.tenants;
    expect(await tenants.update('going-live', (await tenants.find('going-live'))!.version, { mode: 'live' })).toBeDefined();
    const refused = await verifySms(t, '123456');
    expect(refused.status).toBe(403);
    expect(refused.json).toEqual({ message: 'Verification failed', code: 'VERIFICATION_FAILED' });
  });

  // With an idempotency-ref the verification runs inside the request's transaction: its consumption
  // and effect must still be undone together when the effect fails.
  (usingPostgres ? test.each : test.skip.each)([
    ['without', ''],
    ['with', 'ref-'],
  ])("a login completes once, even by two of its challenges answered at the same moment; the loser's right code is no failure (%s an idempotency-ref)", async (_label, ref) => {
    const bank = `twice-bank-${ref || 'plain'}`;
    await createTenant(srv, bank, 'sandbox');
    const app = await createClient(srv, { tenants: [bank], grant_types: ['password'] });
    const user = await createUser(srv, bank, { username: 'twice', mobile: '+447911200088', password: PASSWORD });
    const first = (await login(srv, app, 'twice', PASSWORD)).access_token;
    await json(srv, 'POST', '/authentication_factors/otp/SMS', undefined, bearer(first));
    await json(srv, 'POST', '/authentication_factors/otp/SMS/verify', { verificationCode: '123456' }, bearer(first));
    const { device, enrol } = await enrolPush({ token: first, user }, 'AUTHY');
    await json(srv, 'POST', `/device/challenges/${enrol.challengeId}`, { jws: await device.answer(enrol) });
    await srv.running.app.services.tenants.setPolicy(bank, { mfaAtLogin: true });

    const pending = (await passwordLogin(srv, app, 'twice', PASSWORD)).json.access_token as string;
    expect((await startSms(pending)).status).toBe(204);
    const push = await json(srv, 'POST', '/stepup/challenges/push/AUTHY', {}, bearer(pending));
    const msg = (await outbox(srv, 'push', user.id)).pop() as { challengeId: string; nonce: string };
    expect((await json(srv, 'POST', `/device/challenges/${msg.challengeId}`, { jws: await device.answer(msg) })).status).toBe(200);

    // Both requests get past their bearer check, then wait on the pending token's row until released.
    const knex = srv.running.app.database.knex;
    const waiting = async (n: number) => {
      for (let i = 0; i < 500; i += 1) {
        const row = await knex.raw("select count(*)::int as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'");
        if ((row.rows[0] as { n: number }).n >= n) return;
        await new Promise((r) => setTimeout(r, 10));
      }
      throw new Error(`fewer than ${n} requests waiting on a lock`);
    };
    const hold = await knex.transaction();
    try {
      await hold('oidc_payloads').where({ type: 'AccessToken', account_id: user.id }).whereRaw("payload->'extra'->>'pending' is not null").forUpdate();
      // The push's collection queues on the row first, so it wins; the SMS verification, its right
      // code counted against the user's failure budget before it was compared, finds the login done.
      const polling = json(srv, 'GET', `/stepup/challenges/${push.json.challengeId as string}`, undefined, bearer(pending));
      await waiting(1);
      const verifying = json(srv, 'POST', '/stepup/challenges/otp/SMS/verify', { verificationCode: '123456' }, bearer(pending, ref ? { 'idempotency-ref': `${ref}sms` } : {}));
      await waiting(2);
      await hold.commit();
      const [sms, polled] = await Promise.all([verifying, polling]);
      const sessionTokens = [sms.json.refresh_token, (polled.json.token as { refresh_token?: string } | undefined)?.refresh_token].filter(Boolean);
      expect(sessionTokens).toHaveLength(1);
      expect([sms.status, polled.status]).toEqual([403, 200]);
      // Not a guess: the attempt it reserved is given back, and the code it used is not spent.
      expect((await knex('users').where({ id: user.id }).first()).factor_failures).toBe(0);
      const raced = await knex('challenges').where({ user_id: user.id, purpose: 'stepup', channel: 'SMS' }).orderBy('created_at', 'desc').first();
      expect(raced.status).toBe('PENDING');
    } finally {
      if (!hold.isCompleted()) await hold.rollback();
    }
  });

  test('a step-up token lives its own lifetime; ending the session revokes it', async () => {
    const u = await smsUser('sandbox-bank');
    await startSms(u.token);
    const sca = (await verifySms(u.token, '123456')).json.access_token as string;
    const info = (await introspect(srv, rsSandbox, sca)).json as { exp: number; iat: number; sid: string };
    expect(info.exp - info.iat).toBe(300);
    const knex = srv.running.app.database.knex;
    // its own expiry (the stored clock moved past it)
    const rows = await knex('oidc_payloads').where({ type: 'AccessToken', account_id: u.user.id }).whereRaw("payload->'extra'->>'acr' = ?", [SCA]);
    for (const r of rows) {
      const p = typeof r.payload === 'string' ? JSON.parse(r.payload) : r.payload;
      await knex('oidc_payloads').where({ type: 'AccessToken', id: r.id }).update({ payload: JSON.stringify({ ...p, exp: p.iat - 1 }) });
    }
    expect((await introspect(srv, rsSandbox, sca)).json).toEqual({ active: false });
    expect((await introspect(srv, rsSandbox, u.token)).json.active).toBe(true); // the session's other token lives on

    await startSms(u.token);
    const sca2 = (await verifySms(u.token, '123456')).json.access_token as string;
    expect((await introspect(srv, rsSandbox, sca2)).json.active).toBe(true);
    expect((await json(srv, 'DELETE', `/sessions/${info.sid}`, undefined, bearer(u.token))).status).toBe(204);
    expect((await introspect(srv, rsSandbox, sca2)).json).toEqual({ active: false });
  });

  test('no active factor, a locked user, bad input: refused', async () => {
    await createUser(srv, 'sandbox-bank', { username: 'nofactor', mobile: '+447911200002', password: PASSWORD });
    const t = await login(srv, sandboxApp, 'nofactor', PASSWORD);
    expect((await startSms(t.access_token)).json).toMatchObject({ code: 'FACTOR_NOT_ACTIVE' });
    expect((await json(srv, 'POST', '/stepup/challenges/push/AUTHY', {}, bearer(t.access_token))).status).toBe(409);
    const bad = await startSms(t.access_token, { authorization_details: [{ type: 'payment_initiation', instructedAmount: { amount: '1,00', currency: 'euro' } }] });
    expect(bad.status).toBe(400);
    expect((await json(srv, 'GET', '/stepup/challenges/not-an-id', undefined, bearer(t.access_token))).status).toBe(404);

    const u = await smsUser('sandbox-bank');
    await srv.running.app.database.knex('users').where({ id: u.user.id }).update({ status: 'locked' });
    expect((await startSms(u.token)).status).toBe(401);
  });
});
