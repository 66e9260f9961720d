import { startTestServer, type TestServer } from '../helpers/server';
import {
  basic, bearer, createClient, createTenant, createUser, form, json, lastCode, login, outbox, testClock, type ClientCreds,
} from '../helpers/flows';
import { newDevice } from '../helpers/device';
import { dbLabel } from '../helpers/env';

const PASSWORD = 'a perfectly decent passphrase';
let mobileSeq = 100;
const nextMobile = () => `+4479111${String((mobileSeq += 1)).padStart(5, '0')}`;

describe(`additional factors (${dbLabel})`, () => {
  let srv: TestServer;
  let sandboxApp: ClientCreds;
  let liveApp: ClientCreds;
  const clock = testClock();

  beforeAll(async () => {
    srv = await startTestServer({ clock: clock.now });
    await createTenant(srv, 'sandbox-bank', 'sandbox');
    await createTenant(srv, 'live-bank', 'live');
    sandboxApp = await createClient(srv, { tenants: ['sandbox-bank'], grant_types: ['password', 'client_credentials'] });
    liveApp = await createClient(srv, { tenants: ['live-bank'], grant_types: ['password'] });
  });
  afterAll(async () => srv?.close());

  async function userWithSession(tenant: 'sandbox-bank' | 'live-bank', mobile = nextMobile()) {
    const username = `u${Math.random().toString(36).slice(2, 10)}`;
    const user = await createUser(srv, tenant, { username, mobile, password: PASSWORD });
    const app = tenant === 'sandbox-bank' ? sandboxApp : liveApp;
    const tokens = await login(srv, app, username, PASSWORD);
    return { user, mobile, username, app, token: tokens.access_token };
  }
  const factorsOf = async (token: string) => (await json(srv, 'GET', '/authentication_factors', undefined, bearer(token))).json.factors;
  const enrolSms = (token: string, headers: Record<string, string> = {}) => json(srv, 'POST', '/authentication_factors/otp/SMS', undefined, bearer(token, headers));
  const verifySms = (token: string, verificationCode: string, headers: Record<string, string> = {}) =>
    json(srv, 'POST', '/authentication_factors/otp/SMS/verify', { verificationCode }, bearer(token, headers));
  /** A verification whose attempt is reserved, then `meanwhile` runs before its code is compared. */
  async function verifyWithMeanwhile(token: string, code: string, meanwhile: () => Promise<void>) {
    const { factors } = srv.running.app.services;
    const original = factors.reserveAttempt.bind(factors);
    const reserve = jest.spyOn(factors, 'reserveAttempt').mockImplementationOnce(async (...args) => {
      const attempt = await original(...args);
      await meanwhile();
      return attempt;
    });
    try {
      return await verifySms(token, code);
    } finally {
      reserve.mockRestore();
    }
  }

  test('sandbox: enrol → verify with 123456 → ACTIVE; nothing is texted', async () => {
    const u = await userWithSession('sandbox-bank');
    expect(await factorsOf(u.token)).toEqual([]);
    expect((await enrolSms(u.token)).status).toBe(204);
    expect(await factorsOf(u.token)).toEqual([{ type: 'OTP', channel: 'SMS', status: 'PENDING_VERIFICATION' }]);
    expect(await outbox(srv, 'sms', u.mobile)).toHaveLength(0);
    expect((await verifySms(u.token, '123456')).status).toBe(204);
    expect(await factorsOf(u.token)).toEqual([{ type: 'OTP', channel: 'SMS', status: 'ACTIVE' }]);
  });

  test('live: the code is texted to the user and works once; 123456 never does', async () => {
    const u = await userWithSession('live-bank');
    expect((await enrolSms(u.token)).status).toBe(204);
    const [msg] = await outbox(srv, 'sms', u.mobile);
    expect(msg).toMatchObject({ to: u.mobile, tenant: 'live-bank', userId: u.user.id });
    const code = await lastCode(srv, u.mobile);
    expect(code).toMatch(/^\d{6}$/);
    expect(code).not.toBe('123456');
    const sandboxCode = await verifySms(u.token, '123456');
    expect(sandboxCode.status).toBe(403);
    expect(sandboxCode.json).toEqual({ message: 'Verification failed', code: 'VERIFICATION_FAILED' });
    expect((await verifySms(u.token, code)).status).toBe(204);
    expect((await verifySms(u.token, code)).status).toBe(403); // single use
    expect(await factorsOf(u.token)).toEqual([{ type: 'OTP', channel: 'SMS', status: 'ACTIVE' }]);
  });

  test('the code is stored only as a hash', async () => {
    const u = await userWithSession('live-bank');
    await enrolSms(u.token);
    const code = await lastCode(srv, u.mobile);
    const rows = await srv.running.app.database.knex('challenges').where({ user_id: u.user.id });
    expect(JSON.stringify(rows)).not.toContain(code);
  });

  test('50 parallel verifications of one correct code → exactly one success', async () => {
    const u = await userWithSession('live-bank');
    await enrolSms(u.token);
    const code = await lastCode(srv, u.mobile);
    const results = await Promise.all(Array.from({ length: 50 }, () => verifySms(u.token, code)));
    expect(results.filter((r) => r.status === 204)).toHaveLength(1);
    expect(results.filter((r) => r.status >= 500)).toHaveLength(0);
    expect(results.filter((r) => r.status !== 204).every((r) => r.status === 403)).toBe(true);
    // the duplicates of a right code are not counted as guesses
    const row = await srv.running.app.database.knex('users').where({ id: u.user.id }).first();
    expect(row.factor_blocked_until).toBeNull();
  });

  test('5 wrong codes across 5 fresh challenges → blocked; the right code afterwards fails; audited; no code sent meanwhile', async () => {
    // Six requests an hour per user: the five below, and one while blocked.
    await createTenant(srv, 'blocking-bank', 'live');
    await srv.running.app.services.tenants.setPolicy('blocking-bank', { smsPerUserPerHour: 6 });
    const app = await createClient(srv, { tenants: ['blocking-bank'], grant_types: ['password'] });
    const mobile = nextMobile();
    const username = 'blocked-user';
    const user = await createUser(srv, 'blocking-bank', { username, mobile, password: PASSWORD });
    const u = { user, mobile, username, app, token: (await login(srv, app, username, PASSWORD)).access_token };
    for (let i = 0; i < 5; i += 1) {
      expect((await enrolSms(u.token)).status).toBe(204);
      const code = await lastCode(srv, u.mobile);
      const wrong = code === '000000' ? '000001' : '000000';
      expect((await verifySms(u.token, wrong)).status).toBe(403);
    }
    // The fifth challenge is still open, and its right code fails now.
    const good = await lastCode(srv, u.mobile);
    const blocked = await verifySms(u.token, good);
    expect(blocked.status).toBe(403);
    expect(blocked.json).toEqual({ message: 'Verification failed', code: 'VERIFICATION_FAILED' });
    expect(await factorsOf(u.token)).toEqual([{ type: 'OTP', channel: 'SMS', status: 'PENDING_VERIFICATION' }]);
    const audit = await srv.running.app.database.knex('audit_log').where({ type: 'factor.blocked', target: u.user.id });
    expect(audit).toHaveLength(1);
    // While codes are refused no code is sent (it could not be used), and the answer is a send's:
    // it must not tell the caller that the user is blocked. The request counts against the caps.
    expect((await enrolSms(u.token)).status).toBe(204);
    expect(await outbox(srv, 'sms', u.mobile)).toHaveLength(5);

    clock.advance(901); // the block (15 minutes) is over
    const u2 = await login(srv, u.app, u.username, PASSWORD);
    const capped = await enrolSms(u2.access_token); // the seventh request of the hour
    expect(capped.status).toBe(429);
    expect(capped.json.message).toBe('Too many messages sent; try again later');
    await srv.running.app.services.tenants.setPolicy('blocking-bank', { smsPerUserPerHour: 7 });
    expect((await enrolSms(u2.access_token)).status).toBe(204);
    expect(await outbox(srv, 'sms', u.mobile)).toHaveLength(6);
    expect((await verifySms(u2.access_token, await lastCode(srv, u.mobile))).status).toBe(204);
  });

  test('a code older than 5 minutes fails', async () => {
    const u = await userWithSession('live-bank');
    await enrolSms(u.token);
    const code = await lastCode(srv, u.mobile);
    clock.advance(301);
    expect((await verifySms(u.token, code)).status).toBe(403);
  });

  test("a code of user A, or of another challenge, never verifies for B or for the newer challenge", async () => {
    const a = await userWithSession('live-bank');
    const b = await userWithSession('live-bank');
    await enrolSms(a.token);
    await enrolSms(b.token);
    const codeA = await lastCode(srv, a.mobile);
    expect((await verifySms(b.token, codeA)).status).toBe(403);
    await enrolSms(a.token); // a newer challenge: the old code is void
    const newer = await lastCode(srv, a.mobile);
    if (newer !== codeA) expect((await verifySms(a.token, codeA)).status).toBe(403);
    expect((await verifySms(a.token, newer)).status).toBe(204);
  });

  test('a code is bound to the session that asked for it', async () => {
    const u = await userWithSession('live-bank');
    await enrolSms(u.token);
    const code = await lastCode(srv, u.mobile);
    const other = await login(srv, u.app, u.username, PASSWORD);
    expect((await verifySms(other.access_token, code)).status).toBe(403);
    expect((await verifySms(u.token, code)).status).toBe(204);
  });

  test("another session's newer code cancels this one's, and this one's right code then fails without counting as a guess", async () => {
    const u = await userWithSession('live-bank');
    await enrolSms(u.token);
    const mine = await lastCode(srv, u.mobile);
    const other = await login(srv, u.app, u.username, PASSWORD);
    await enrolSms(other.access_token);
    const theirs = await lastCode(srv, u.mobile);
    expect((await verifySms(u.token, mine)).status).toBe(403);
    const failures = async () => (await srv.running.app.database.knex('users').where({ id: u.user.id }).first('factor_failures')).factor_failures as number;
    expect(await failures()).toBe(0);
    expect((await verifySms(u.token, '000000')).status).toBe(403); // a wrong code still counts
    expect(await failures()).toBe(1);
    expect((await verifySms(other.access_token, theirs)).status).toBe(204);
  });

  test('a right code sent twice gives the second attempt back only while no success came between: a wrong code after the success still counts', async () => {
    const u = await userWithSession('live-bank');
    await enrolSms(u.token);
    const code = await lastCode(srv, u.mobile);
    const failures = async () => (await srv.running.app.database.knex('users').where({ id: u.user.id }).first('factor_failures')).factor_failures as number;
    // The second request's attempt is reserved; before it compares its code, the first succeeds
    // (the count starts afresh) and a wrong code is tried.
    const meanwhile = async () => {
      expect((await verifySms(u.token, code)).status).toBe(204);
      expect((await verifySms(u.token, '000000')).status).toBe(403);
    };
    expect((await verifyWithMeanwhile(u.token, code, meanwhile)).status).toBe(403); // its challenge was used meanwhile
    expect(await failures()).toBe(1);
  });

  test('a count begun again after its block ended is a new count: an attempt reserved before gives nothing back to it', async () => {
    const u = await userWithSession('live-bank');
    await enrolSms(u.token);
    const mine = await lastCode(srv, u.mobile);
    const knex = srv.running.app.database.knex;
    const failures = async () => (await knex('users').where({ id: u.user.id }).first('factor_failures')).factor_failures as number;
    for (let i = 0; i < 3; i += 1) expect((await verifySms(u.token, '000000')).status).toBe(403);
    // This request's attempt is the fourth. Meanwhile the fifth blocks the factors, the block ends,
    // another session's enrolment cancels this one's challenge, and a wrong code starts the count again.
    const meanwhile = async () => {
      expect((await verifySms(u.token, '000000')).status).toBe(403);
      await knex('users').where({ id: u.user.id }).update({ factor_blocked_until: knex.raw("now() - interval '1 second'") });
      const other = await login(srv, u.app, u.username, PASSWORD);
      expect((await enrolSms(other.access_token)).status).toBe(204);
      expect((await verifySms(u.token, '000000')).status).toBe(403);
      expect(await failures()).toBe(1);
    };
    expect((await verifyWithMeanwhile(u.token, mine, meanwhile)).status).toBe(403); // its challenge was cancelled meanwhile
    expect(await failures()).toBe(1);
  });

  test('20 parallel enrolments with one idempotency-ref → one SMS, identical replies or 409; another body → 409', async () => {
    const u = await userWithSession('live-bank');
    const results = await Promise.all(Array.from({ length: 20 }, () => enrolSms(u.token, { 'idempotency-ref': 'enrol-1' })));
    expect(await outbox(srv, 'sms', u.mobile)).toHaveLength(1);
    expect(results.every((r) => r.status === 204 || r.status === 409)).toBe(true);
    expect(results.filter((r) => r.status === 204).length).toBeGreaterThanOrEqual(1);
    const again = await enrolSms(u.token, { 'idempotency-ref': 'enrol-1' });
    expect(again.status).toBe(204);
    expect(again.headers.get('idempotent-replayed')).toBe('true');
    expect(await outbox(srv, 'sms', u.mobile)).toHaveLength(1);

    const device = await newDevice();
    const ref = { 'idempotency-ref': 'push-1' };
    const first = await json(srv, 'POST', '/authentication_factors/push/BIOMETRIC', { publicKey: device.publicJwk, deviceName: 'phone' }, bearer(u.token, ref));
    expect(first.status).toBe(204);
    const other = await json(srv, 'POST', '/authentication_factors/push/BIOMETRIC', { publicKey: device.publicJwk, deviceName: 'tablet' }, bearer(u.token, ref));
    expect(other.status).toBe(409);
    expect(other.json.code).toBe('IDEMPOTENCY_CONFLICT');
    // the same ref of another user is another key
    const v = await userWithSession('live-bank');
    expect((await enrolSms(v.token, { 'idempotency-ref': 'enrol-1' })).status).toBe(204);
    expect(await outbox(srv, 'sms', v.mobile)).toHaveLength(1);
  });

  test('push: enrol a device key, the device approves with a JWS → ACTIVE', async () => {
    const u = await userWithSession('sandbox-bank');
    const device = await newDevice();
    const res = await json(srv, 'POST', '/authentication_factors/push/AUTHY', { publicKey: device.publicJwk, deviceName: 'Pixel' }, bearer(u.token));
    expect(res.status).toBe(204);
    expect(await factorsOf(u.token)).toEqual([{ type: 'PUSH', channel: 'AUTHY', status: 'PENDING_VERIFICATION' }]);
    const pushes = await outbox(srv, 'push', u.user.id);
    const msg = pushes[pushes.length - 1] as { challengeId: string; nonce: string; kind: string; channel: string; text: string };
    expect(msg).toMatchObject({ kind: 'enrolment', channel: 'AUTHY' });
    const answer = await json(srv, 'POST', `/device/challenges/${msg.challengeId}`, { jws: await device.answer(msg) });
    expect(answer.status).toBe(200);
    expect(answer.json).toEqual({ status: 'APPROVED' });
    expect(await factorsOf(u.token)).toEqual([{ type: 'PUSH', channel: 'AUTHY', status: 'ACTIVE' }]);
  });

  test('a JWS by another key, with a wrong nonce, or replayed is rejected; an unlinked device approves nothing', async () => {
    const u = await userWithSession('sandbox-bank');
    const device = await newDevice();
    const intruder = await newDevice();
    await json(srv, 'POST', '/authentication_factors/push/BIOMETRIC', { publicKey: device.publicJwk }, bearer(u.token));
    const pushes = await outbox(srv, 'push', u.user.id);
    const msg = pushes[pushes.length - 1] as { challengeId: string; nonce: string };
    const post = async (jws: string) => json(srv, 'POST', `/device/challenges/${msg.challengeId}`, { jws });

    const forged = await post(await intruder.answer(msg));
    expect(forged.status).toBe(403);
    expect(forged.json).toEqual({ message: 'Challenge response rejected', code: 'CHALLENGE_REJECTED' });
    expect((await post(await device.answer({ ...msg, nonce: 'x'.repeat(43) }))).status).toBe(403);
    expect((await post(await device.answer({ ...msg, challengeId: '00000000-0000-0000-0000-000000000000' }))).status).toBe(403);
    expect((await post('not.a.jws')).status).toBe(403);
    const good = await device.answer(msg);
    expect((await post(good)).status).toBe(200);
    expect((await post(good)).status).toBe(403); // replay

    // a device whose enrolment is still pending is unlinked: its answer is worthless
    const v = await userWithSession('sandbox-bank');
    await json(srv, 'POST', '/authentication_factors/push/BIOMETRIC', { publicKey: device.publicJwk }, bearer(v.token));
    const msg2 = (await outbox(srv, 'push', v.user.id)).pop() as { challengeId: string; nonce: string };
    expect((await json(srv, 'DELETE', '/authentication_factors/push/BIOMETRIC', undefined, bearer(v.token))).status).toBe(204);
    expect((await json(srv, 'POST', `/device/challenges/${msg2.challengeId}`, { jws: await device.answer(msg2) })).status).toBe(403);
    expect(await factorsOf(v.token)).toEqual([]);
    expect((await json(srv, 'DELETE', '/authentication_factors/push/BIOMETRIC', undefined, bearer(v.token))).status).toBe(404);
  });

  test('with an ACTIVE factor, changing factors needs a step-up (SCA) token: RFC 9470 challenge', async () => {
    const u = await userWithSession('sandbox-bank');
    await enrolSms(u.token);
    expect((await verifySms(u.token, '123456')).status).toBe(204);
    const device = await newDevice();
    const res = await json(srv, 'POST', '/authentication_factors/push/AUTHY', { publicKey: device.publicJwk }, bearer(u.token));
    expect(res.status).toBe(401);
    expect(res.json.code).toBe('INSUFFICIENT_USER_AUTHENTICATION');
    expect(res.headers.get('www-authenticate')).toMatch(/^Bearer .*error="insufficient_user_authentication"/);
    expect(res.headers.get('www-authenticate')).toMatch(/acr_values="urn:openbanking:psd2:sca"/);
    expect(res.headers.get('www-authenticate')).toMatch(/, max_age=300$/); // an SCA older than the tenant's step-up lifetime will not do
    expect((await enrolSms(u.token)).status).toBe(401); // re-enrolling SMS
    expect((await json(srv, 'DELETE', '/authentication_factors/push/AUTHY', undefined, bearer(u.token))).status).toBe(401);
    // a fresh password login is not enough any more
    const fresh = await login(srv, u.app, u.username, PASSWORD);
    expect((await json(srv, 'POST', '/authentication_factors/push/AUTHY', { publicKey: device.publicJwk }, bearer(fresh.access_token))).status).toBe(401);
    // a step-up token is
    expect((await json(srv, 'POST', '/stepup/challenges/otp/SMS', {}, bearer(fresh.access_token))).status).toBe(204);
    const sca = await json(srv, 'POST', '/stepup/challenges/otp/SMS/verify', { verificationCode: '123456' }, bearer(fresh.access_token));
    expect(sca.status).toBe(200);
    const scaToken = sca.json.access_token as string;
    expect((await json(srv, 'POST', '/authentication_factors/push/AUTHY', { publicKey: device.publicJwk }, bearer(scaToken))).status).toBe(204);
  });

  test('account authentication: the api-key must be the token client’s; a tenant may require it', async () => {
    const u = await userWithSession('sandbox-bank');
    const other = await createClient(srv, { tenants: ['sandbox-bank'] });
    expect((await json(srv, 'GET', '/authentication_factors', undefined, bearer(u.token, { 'api-key': sandboxApp.api_key }))).status).toBe(200);
    expect((await json(srv, 'GET', '/authentication_factors', undefined, bearer(u.token, { 'api-key': other.api_key }))).status).toBe(401);
    expect((await json(srv, 'GET', '/authentication_factors', undefined, bearer(u.token, { 'api-key': 'garbage' }))).status).toBe(401);
    await createTenant(srv, 'strict-bank', 'sandbox');
    await srv.running.app.services.tenants.setPolicy('strict-bank', { requireApiKey: true });
    const strictApp = await createClient(srv, { tenants: ['strict-bank'], grant_types: ['password'] });
    await createUser(srv, 'strict-bank', { username: 'strict', password: PASSWORD });
    const t = await login(srv, strictApp, 'strict', PASSWORD);
    expect((await json(srv, 'GET', '/authentication_factors', undefined, bearer(t.access_token))).status).toBe(401);
    expect((await json(srv, 'GET', '/authentication_factors', undefined, bearer(t.access_token, { 'api-key': strictApp.api_key }))).status).toBe(200);
  });

  test('bad input and wrong callers get the documented errors', async () => {
    const u = await userWithSession('sandbox-bank');
    const bad = await verifySms(u.token, '12ab');
    expect(bad.status).toBe(400);
    expect(bad.json).toMatchObject({ message: expect.any(String), syntaxErrors: { invalidFields: [{ fieldName: 'verificationCode', error: expect.any(String) }] } });
    expect((await json(srv, 'POST', '/authentication_factors/otp/EMAIL', undefined, bearer(u.token))).status).toBe(400);
    expect((await json(srv, 'POST', '/authentication_factors/push/CARRIER_PIGEON', { publicKey: {} }, bearer(u.token))).status).toBe(400);
    const badKey = await json(srv, 'POST', '/authentication_factors/push/AUTHY', { publicKey: { kty: 'EC', crv: 'P-256', x: 'a'.repeat(43), y: 'b'.repeat(43) } }, bearer(u.token));
    expect(badKey.status).toBe(400);
    const privateKey = await json(srv, 'POST', '/authentication_factors/push/AUTHY', { publicKey: { kty: 'RSA', n: 'x', e: 'AQAB' } }, bearer(u.token));
    expect(privateKey.status).toBe(400);
    const withD = await json(srv, 'POST', '/authentication_factors/push/AUTHY', { publicKey: { ...(await newDevice()).publicJwk, d: 'A'.repeat(43) } }, bearer(u.token));
    expect(withD.status).toBe(400);
    expect(withD.json).toMatchObject({ syntaxErrors: { invalidFields: [{ fieldName: 'publicKey.d' }] } });
    expect((await json(srv, 'GET', '/authentication_factors')).status).toBe(401);
    const cc = (await form(srv, '/token', { grant_type: 'client_credentials' }, { authorization: basic(sandboxApp) })).json.access_token as string;
    expect((await json(srv, 'GET', '/authentication_factors', undefined, bearer(cc))).status).toBe(403);
    const noMobile = await createUser(srv, 'sandbox-bank', { username: `nomobile${Date.now()}`, password: PASSWORD });
    const t = await login(srv, sandboxApp, noMobile.username!, PASSWORD);
    expect((await enrolSms(t.access_token)).json).toEqual({ message: 'The user has no mobile number', code: 'MOBILE_REQUIRED' });
    // With an idempotency-ref the request runs in one transaction, which a refusal commits (for its
    // counters and audit): the enrolment's own writes are still undone, as without one.
    const withRef = await json(srv, 'POST', '/authentication_factors/otp/SMS', undefined, bearer(t.access_token, { 'idempotency-ref': 'no-mobile-1' }));
    expect(withRef.json.code).toBe('MOBILE_REQUIRED');
    expect((await json(srv, 'GET', '/authentication_factors', undefined, bearer(t.access_token))).json).toEqual({ factors: [] });
  });

  test("a tenant's hourly SMS budget holds across numbers and users; another tenant's is its own", async () => {
    await createTenant(srv, 'budget-bank', 'live');
    await srv.running.app.services.tenants.setPolicy('budget-bank', { smsPerTenantPerHour: 2 });
    const app = await createClient(srv, { tenants: ['budget-bank'], grant_types: ['password'] });
    const users = [];
    for (let i = 0; i < 3; i += 1) {
      const mobile = nextMobile();
      await createUser(srv, 'budget-bank', { username: `budget${i}`, mobile, password: PASSWORD });
      users.push({ mobile, token: (await login(srv, app, `budget${i}`, PASSWORD)).access_token });
    }
    expect((await enrolSms(users[0]!.token)).status).toBe(204);
    expect((await enrolSms(users[1]!.token)).status).toBe(204);
    const third = await enrolSms(users[2]!.token);
    expect(third.status).toBe(429);
    expect(third.json.code).toBe('TOO_MANY_REQUESTS');
    expect(Number(third.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(await outbox(srv, 'sms', users[2]!.mobile)).toHaveLength(0);
    // Raised live, the budget lets the next send through.
    await srv.running.app.services.tenants.setPolicy('budget-bank', { smsPerTenantPerHour: 3 });
    expect((await enrolSms(users[2]!.token)).status).toBe(204);
    expect(await outbox(srv, 'sms', users[2]!.mobile)).toHaveLength(1);
    // Another tenant's sends count against its own budget only.
    const u = await userWithSession('live-bank');
    expect((await enrolSms(u.token)).status).toBe(204);
  });

  test('hourly send caps per number: 429 with Retry-After', async () => {
    await createTenant(srv, 'capped-bank', 'live');
    await srv.running.app.services.tenants.setPolicy('capped-bank', { smsPerNumberPerHour: 2 });
    const app = await createClient(srv, { tenants: ['capped-bank'], grant_types: ['password'] });
    const mobile = nextMobile();
    await createUser(srv, 'capped-bank', { username: 'capped', mobile, password: PASSWORD });
    const t = await login(srv, app, 'capped', PASSWORD);
    expect((await enrolSms(t.access_token)).status).toBe(204);
    expect((await enrolSms(t.access_token)).status).toBe(204);
    const third = await enrolSms(t.access_token);
    expect(third.status).toBe(429);
    expect(Number(third.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(await outbox(srv, 'sms', mobile)).toHaveLength(2);
    // Another tenant's user with the same number has a cap of its own, whatever this one's is.
    await createTenant(srv, 'other-bank', 'live');
    await srv.running.app.services.tenants.setPolicy('other-bank', { smsPerNumberPerHour: 2 });
    const other = await createClient(srv, { tenants: ['other-bank'], grant_types: ['password'] });
    await createUser(srv, 'other-bank', { username: 'same-number', mobile, password: PASSWORD });
    const o = await login(srv, other, 'same-number', PASSWORD);
    expect((await enrolSms(o.access_token)).status).toBe(204);
    expect(await outbox(srv, 'sms', mobile)).toHaveLength(3);
  });
});
