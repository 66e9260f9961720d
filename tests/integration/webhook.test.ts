import http from 'node:http';
import { createHmac } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { startTestServer, type TestServer } from '../helpers/server';
import { bearer, createClient, createTenant, createUser, json, login, type ClientCreds } from '../helpers/flows';
import { newDevice } from '../helpers/device';
import { dbLabel, usingPostgres } from '../helpers/env';

const SECRET = 'webhook-secret-for-tests-0123456789';
const PASSWORD = 'a perfectly decent passphrase';

interface Received {
  path: string;
  body: string;
  signature: string;
}

describe(`webhook senders against a real HTTP receiver (${dbLabel})`, () => {
  let receiver: http.Server;
  let received: Received[] = [];
  let failing = false;
  /** While set, the receiver holds each request until the test lets it go. */
  let holding: { arrived: () => void; release: Promise<void> } | undefined;
  /** What the next requests get, in order, before `failing` and `holding` apply: an answer, or one held until released. */
  let script: Array<200 | 500 | { arrived: () => void; release: Promise<void>; status: number }> = [];
  const held = (status: number) => {
    let arrived!: () => void;
    let release!: () => void;
    const there = new Promise<void>((r) => (arrived = r));
    const step = { arrived, release: new Promise<void>((r) => (release = r)), status };
    return { step, there, release };
  };
  let srv: TestServer;
  let app: ClientCreds;

  beforeAll(async () => {
    receiver = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        received.push({ path: req.url ?? '', body: Buffer.concat(chunks).toString('utf8'), signature: String(req.headers['x-portcullis-signature'] ?? '') });
        const answer = () => {
          res.statusCode = failing ? 500 : 200;
          res.end();
        };
        const next = script.shift();
        if (typeof next === 'number') {
          res.statusCode = next;
          return res.end();
        }
        if (next) {
          next.arrived();
          void next.release.then(() => {
            res.statusCode = next.status;
            res.end();
          });
          return;
        }
        if (!holding) return answer();
        holding.arrived();
        void holding.release.then(answer);
      });
    });
    await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
    const base = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`;
    srv = await startTestServer({
      config: {
        smsSender: 'webhook',
        pushSender: 'webhook',
        smsWebhookUrl: `${base}/sms`,
        pushWebhookUrl: `${base}/push`,
        webhookSecret: SECRET,
        webhook: { attempts: 3, backoffMs: 5, timeoutMs: 2000 },
      },
    });
    await createTenant(srv, 'live-bank', 'live');
    app = await createClient(srv, { tenants: ['live-bank'], grant_types: ['password'] });
  });
  afterAll(async () => {
    await srv?.close();
    await new Promise((r) => receiver.close(r));
  });
  beforeEach(() => {
    received = [];
    failing = false;
    script = [];
  });

  /** The body of the last message the receiver got. */
  const lastMessage = () => JSON.parse(received[received.length - 1]!.body) as { challengeId: string; nonce: string; kind: string };

  /**
   * A user with a push factor enrolled on `before`, a step-up token (`sca`, for a re-enrolment) and
   * a step-up push on its way to that device, not yet answered (`sent`).
   */
  async function enrolledWithStepUpOpen(username: string) {
    const user = await createUser(srv, 'live-bank', { username, password: PASSWORD });
    const t = await login(srv, app, username, PASSWORD);
    const before = await newDevice();
    expect((await json(srv, 'POST', '/authentication_factors/push/AUTHY', { publicKey: before.publicJwk }, bearer(t.access_token))).status).toBe(204);
    expect((await json(srv, 'POST', `/device/challenges/${lastMessage().challengeId}`, { jws: await before.answer(lastMessage()) })).json).toEqual({ status: 'APPROVED' });
    const first = await json(srv, 'POST', '/stepup/challenges/push/AUTHY', {}, bearer(t.access_token));
    await json(srv, 'POST', `/device/challenges/${first.json.challengeId as string}`, { jws: await before.answer(lastMessage()) });
    const sca = ((await json(srv, 'GET', `/stepup/challenges/${first.json.challengeId as string}`, undefined, bearer(t.access_token))).json.token as { access_token: string }).access_token;
    const open = await json(srv, 'POST', '/stepup/challenges/push/AUTHY', {}, bearer(t.access_token));
    const sent = lastMessage();
    expect(sent).toMatchObject({ challengeId: open.json.challengeId, kind: 'stepup' });
    return { user, t, sca, before, sent };
  }

  function verifySignature(r: Received) {
    const m = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(r.signature);
    expect(m).not.toBeNull();
    const expected = createHmac('sha256', SECRET).update(`${m![1]}.${r.body}`).digest('hex');
    expect(m![2]).toBe(expected);
    expect(Math.abs(Number(m![1]) - Date.now() / 1000)).toBeLessThan(60);
  }

  test('SMS: signed JSON {to, text, tenant, userId}; the texted code verifies', async () => {
    const user = await createUser(srv, 'live-bank', { username: 'hooked', mobile: '+447911123999', password: PASSWORD });
    const t = await login(srv, app, 'hooked', PASSWORD);
    expect((await json(srv, 'POST', '/authentication_factors/otp/SMS', undefined, bearer(t.access_token))).status).toBe(204);
    expect(received).toHaveLength(1);
    const [sms] = received;
    expect(sms!.path).toBe('/sms');
    verifySignature(sms!);
    const body = JSON.parse(sms!.body) as Record<string, string>;
    expect(Object.keys(body).sort()).toEqual(['tenant', 'text', 'to', 'userId']);
    expect(body).toMatchObject({ to: '+447911123999', tenant: 'live-bank', userId: user.id });
    const code = /\b(\d{6})\b/.exec(body.text!)![1]!;
    expect((await json(srv, 'POST', '/authentication_factors/otp/SMS/verify', { verificationCode: code }, bearer(t.access_token))).status).toBe(204);
  });

  test('a failing receiver: retried, then 503 and nothing half-done', async () => {
    await createUser(srv, 'live-bank', { username: 'unlucky', mobile: '+447911123998', password: PASSWORD });
    const t = await login(srv, app, 'unlucky', PASSWORD);
    const knex = srv.running.app.database.knex;
    const count = async (table: string) => Number((await knex(table).count({ n: '*' }).first())?.n);
    const before = { challenges: await count('challenges'), factors: await count('factors') };
    failing = true;
    const res = await json(srv, 'POST', '/authentication_factors/otp/SMS', undefined, bearer(t.access_token, { 'idempotency-ref': 'try-1' }));
    expect(res.status).toBe(503);
    expect(res.json.code).toBe('DELIVERY_FAILED');
    expect(res.headers.get('retry-after')).toBeTruthy();
    expect(received).toHaveLength(3); // attempts
    expect({ challenges: await count('challenges'), factors: await count('factors') }).toEqual(before);
    // the failed request did not consume its idempotency-ref: a retry goes through
    failing = false;
    const retry = await json(srv, 'POST', '/authentication_factors/otp/SMS', undefined, bearer(t.access_token, { 'idempotency-ref': 'try-1' }));
    expect(retry.status).toBe(204);
    expect(await count('challenges')).toBe(before.challenges + 1);
  });

  test('a slow receiver holds no database connection: delivery waits for the commit, not inside it', async () => {
    await createUser(srv, 'live-bank', { username: 'slowpoke', mobile: '+447911123997', password: PASSWORD });
    const t = await login(srv, app, 'slowpoke', PASSWORD);
    let release!: () => void;
    let arrived!: () => void;
    const there = new Promise<void>((r) => (arrived = r));
    holding = { arrived, release: new Promise<void>((r) => (release = r)) };
    try {
      const sending = json(srv, 'POST', '/authentication_factors/otp/SMS', undefined, bearer(t.access_token, { 'idempotency-ref': 'slow-1' }));
      await there;
      // The code is stored and committed before the message leaves.
      const knex = srv.running.app.database.knex;
      expect(await knex('challenges').where({ status: 'PENDING' }).whereIn('user_id', knex('users').select('id').where({ username: 'slowpoke' }))).toHaveLength(1);
      if (usingPostgres) {
        // A transaction held across the send would sit idle all along; another request's may pass
        // through that state between two statements, briefly.
        await new Promise((r) => setTimeout(r, 400));
        const { rows } = (await knex.raw(
          "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'portcullis' AND state LIKE 'idle in transaction%' AND state_change < now() - interval '300 milliseconds'",
        )) as { rows: Array<{ n: number }> };
        expect(rows[0]!.n).toBe(0);
      }
      // The embedded database's one connection is free: another request reads meanwhile.
      let timer: NodeJS.Timeout | undefined;
      const other = await Promise.race([
        json(srv, 'GET', '/authentication_factors', undefined, bearer(t.access_token)).then((r) => r.status),
        new Promise((r) => (timer = setTimeout(() => r('still waiting'), 1500))),
      ]);
      clearTimeout(timer);
      expect(other).toBe(200);
      // Its reply is stored, but not yet the request's: the same ref meanwhile is still in flight.
      const meanwhile = await json(srv, 'POST', '/authentication_factors/otp/SMS', undefined, bearer(t.access_token, { 'idempotency-ref': 'slow-1' }));
      expect([meanwhile.status, meanwhile.json.code]).toEqual([409, 'IDEMPOTENCY_IN_FLIGHT']);
      release();
      expect((await sending).status).toBe(204);
      const replay = await json(srv, 'POST', '/authentication_factors/otp/SMS', undefined, bearer(t.access_token, { 'idempotency-ref': 'slow-1' }));
      expect([replay.status, replay.headers.get('idempotent-replayed')]).toEqual([204, 'true']);
    } finally {
      holding = undefined;
      release();
    }
  });

  test('a resend that cannot be delivered leaves the code sent before working', async () => {
    await createUser(srv, 'live-bank', { username: 'resender', mobile: '+447911123996', password: PASSWORD });
    const t = await login(srv, app, 'resender', PASSWORD);
    expect((await json(srv, 'POST', '/authentication_factors/otp/SMS', undefined, bearer(t.access_token))).status).toBe(204);
    const code = /\b(\d{6})\b/.exec((JSON.parse(received[0]!.body) as { text: string }).text)![1]!;
    failing = true;
    expect((await json(srv, 'POST', '/authentication_factors/otp/SMS', undefined, bearer(t.access_token))).status).toBe(503);
    failing = false;
    expect((await json(srv, 'POST', '/authentication_factors/otp/SMS/verify', { verificationCode: code }, bearer(t.access_token))).status).toBe(204);
  });

  test("an undelivered enrolment's undo leaves alone a factor another enrolment has written since", async () => {
    const user = await createUser(srv, 'live-bank', { username: 'twice', password: PASSWORD });
    const { factors } = srv.running.app.services;
    const at = (s: number) => new Date(Date.UTC(2026, 11, 6, 5, 0, s));
    const { factor: mine } = await factors.upsertPending({ id: '11111111-1111-4111-8111-111111111111', tenantId: 'live-bank', userId: user.id, type: 'PUSH', channel: 'AUTHY', publicJwk: (await newDevice()).publicJwk, now: at(1) });
    const { factor: theirs } = await factors.upsertPending({ id: '22222222-2222-4222-8222-222222222222', tenantId: 'live-bank', userId: user.id, type: 'PUSH', channel: 'AUTHY', publicJwk: (await newDevice()).publicJwk, now: at(2) });
    expect(await factors.undoPending('live-bank', mine, undefined)).toBe(false);
    expect(await factors.find('live-bank', user.id, 'AUTHY')).toMatchObject({ id: mine.id, publicJwk: theirs.publicJwk, status: 'PENDING_VERIFICATION' });
    expect(await factors.undoPending('live-bank', theirs, undefined)).toBe(true);
    expect(await factors.find('live-bank', user.id, 'AUTHY')).toBeUndefined();
  });

  test("two sessions enrol at once and one's message fails: its undo leaves the other's enrolment as it was", async () => {
    await createUser(srv, 'live-bank', { username: 'twosessions', mobile: '+447911123995', password: PASSWORD });
    const s1 = await login(srv, app, 'twosessions', PASSWORD);
    const s2 = await login(srv, app, 'twosessions', PASSWORD);
    const first = held(200);
    script = [first.step, 500, 500, 500];
    const enrolling = json(srv, 'POST', '/authentication_factors/otp/SMS', undefined, bearer(s1.access_token));
    await first.there;
    const code = /\b(\d{6})\b/.exec((JSON.parse(received[0]!.body) as { text: string }).text)![1]!;
    expect((await json(srv, 'POST', '/authentication_factors/otp/SMS', undefined, bearer(s2.access_token))).status).toBe(503);
    first.release();
    expect((await enrolling).status).toBe(204);
    expect((await json(srv, 'POST', '/authentication_factors/otp/SMS/verify', { verificationCode: code }, bearer(s1.access_token))).status).toBe(204);
  });

  test('a push answered while its sender still says it failed was delivered: the request stands', async () => {
    const user = await createUser(srv, 'live-bank', { username: 'answered', password: PASSWORD });
    const t = await login(srv, app, 'answered', PASSWORD);
    const device = await newDevice();
    expect((await json(srv, 'POST', '/authentication_factors/push/AUTHY', { publicKey: device.publicJwk }, bearer(t.access_token))).status).toBe(204);
    const enrol = JSON.parse(received[0]!.body) as { challengeId: string; nonce: string };
    expect((await json(srv, 'POST', `/device/challenges/${enrol.challengeId}`, { jws: await device.answer(enrol) })).json).toEqual({ status: 'APPROVED' });
    // The receiver takes the step-up push, the device answers it, then the receiver reports failure.
    const push = held(500);
    script = [push.step, 500, 500];
    const starting = json(srv, 'POST', '/stepup/challenges/push/AUTHY', {}, bearer(t.access_token));
    await push.there;
    const sent = JSON.parse(received[1]!.body) as { challengeId: string; nonce: string };
    expect((await json(srv, 'POST', `/device/challenges/${sent.challengeId}`, { jws: await device.answer(sent) })).json).toEqual({ status: 'APPROVED' });
    push.release();
    const started = await starting;
    expect([started.status, started.json.challengeId]).toEqual([202, sent.challengeId]);
    const polled = await json(srv, 'GET', `/stepup/challenges/${sent.challengeId}`, undefined, bearer(t.access_token));
    expect(polled.json).toMatchObject({ status: 'APPROVED', token: { access_token: expect.any(String) } });
    expect(user.id).toEqual(expect.any(String));
  });

  test('push: signed {channel, challengeId, nonce, kind, text}', async () => {
    await createUser(srv, 'live-bank', { username: 'pushy', password: PASSWORD });
    const t = await login(srv, app, 'pushy', PASSWORD);
    const device = await newDevice();
    expect((await json(srv, 'POST', '/authentication_factors/push/BIOMETRIC', { publicKey: device.publicJwk, deviceName: 'phone' }, bearer(t.access_token))).status).toBe(204);
    const [push] = received;
    expect(push!.path).toBe('/push');
    verifySignature(push!);
    const body = JSON.parse(push!.body) as { channel: string; challengeId: string; nonce: string; kind: string; text: string };
    expect(body).toMatchObject({ channel: 'BIOMETRIC', kind: 'enrolment' });
    expect(body.text).toContain('phone');
    const answer = await json(srv, 'POST', `/device/challenges/${body.challengeId}`, { jws: await device.answer(body) });
    expect(answer.json).toEqual({ status: 'APPROVED' });
  });

  test('push that cannot be delivered: 503, and the enrolment or step-up it started is taken back', async () => {
    const knex = srv.running.app.database.knex;
    const user = await createUser(srv, 'live-bank', { username: 'pushless', password: PASSWORD });
    const t = await login(srv, app, 'pushless', PASSWORD);
    const rows = async () => ({
      factors: await knex('factors').where({ user_id: user.id }).select('channel', 'status'),
      pending: (await knex('challenges').where({ user_id: user.id, status: 'PENDING' })).length,
    });
    failing = true;
    const device = await newDevice();
    const enrol = await json(srv, 'POST', '/authentication_factors/push/AUTHY', { publicKey: device.publicJwk }, bearer(t.access_token));
    expect([enrol.status, enrol.json.code]).toEqual([503, 'DELIVERY_FAILED']);
    expect(await rows()).toEqual({ factors: [], pending: 0 });
    // Enrolled once delivery works; then a step-up push that cannot be delivered.
    failing = false;
    received = [];
    expect((await json(srv, 'POST', '/authentication_factors/push/AUTHY', { publicKey: device.publicJwk }, bearer(t.access_token))).status).toBe(204);
    const sent = JSON.parse(received[0]!.body) as { challengeId: string; nonce: string };
    expect((await json(srv, 'POST', `/device/challenges/${sent.challengeId}`, { jws: await device.answer(sent) })).json).toEqual({ status: 'APPROVED' });
    failing = true;
    const stepUp = await json(srv, 'POST', '/stepup/challenges/push/AUTHY', {}, bearer(t.access_token));
    expect([stepUp.status, stepUp.json.code]).toEqual([503, 'DELIVERY_FAILED']);
    expect(await rows()).toEqual({ factors: [{ channel: 'AUTHY', status: 'ACTIVE' }], pending: 0 });
  });

  test('a re-enrolment whose push cannot be delivered leaves the device enrolled before able to approve the step-up it was sent', async () => {
    const { user, t, sca, before, sent } = await enrolledWithStepUpOpen('repush');
    // A new device's enrolment resets the factor and cancels that challenge; its push fails.
    failing = true;
    const again = await json(srv, 'POST', '/authentication_factors/push/AUTHY', { publicKey: (await newDevice()).publicJwk }, bearer(sca));
    expect([again.status, again.json.code]).toEqual([503, 'DELIVERY_FAILED']);
    failing = false;
    const knex = srv.running.app.database.knex;
    expect(await knex('factors').where({ user_id: user.id }).select('status')).toEqual([{ status: 'ACTIVE' }]);
    expect((await knex('challenges').where({ id: sent.challengeId }).first()).status).toBe('PENDING');
    expect((await json(srv, 'POST', `/device/challenges/${sent.challengeId}`, { jws: await before.answer(sent) })).json).toEqual({ status: 'APPROVED' });
    expect((await json(srv, 'GET', `/stepup/challenges/${sent.challengeId}`, undefined, bearer(t.access_token))).json.status).toBe('APPROVED');
  });

  test("a re-enrolment whose push fails after another enrolment wrote the factor reopens nothing: the device enrolled before cannot approve", async () => {
    const { user, t, sca, before, sent } = await enrolledWithStepUpOpen('repush2');
    // Device A's enrolment cancels that challenge; its push is held, then fails. Meanwhile device
    // B's enrolment writes the factor again, and its push is delivered.
    const pushA = held(500);
    script = [pushA.step, 200, 500, 500];
    const enrollingA = json(srv, 'POST', '/authentication_factors/push/AUTHY', { publicKey: (await newDevice()).publicJwk }, bearer(sca));
    await pushA.there;
    const deviceB = await newDevice();
    expect((await json(srv, 'POST', '/authentication_factors/push/AUTHY', { publicKey: deviceB.publicJwk }, bearer(sca))).status).toBe(204);
    const toB = lastMessage();
    pushA.release();
    const a = await enrollingA;
    expect([a.status, a.json.code]).toEqual([503, 'DELIVERY_FAILED']);
    // A's undo found B's factor, not its own: the factor stays B's, and the step-up push to the
    // device enrolled before stays cancelled (B's key is the one that counts now).
    const knex = srv.running.app.database.knex;
    expect(await knex('factors').where({ user_id: user.id }).select('status')).toEqual([{ status: 'PENDING_VERIFICATION' }]);
    expect((await knex('challenges').where({ id: sent.challengeId }).first()).status).toBe('CANCELLED');
    expect((await json(srv, 'POST', `/device/challenges/${sent.challengeId}`, { jws: await before.answer(sent) })).status).not.toBe(200);
    expect((await json(srv, 'GET', `/stepup/challenges/${sent.challengeId}`, undefined, bearer(t.access_token))).json.status).not.toBe('APPROVED');
    // B's enrolment completes.
    expect((await json(srv, 'POST', `/device/challenges/${toB.challengeId}`, { jws: await deviceB.answer(toB) })).json).toEqual({ status: 'APPROVED' });
    expect(await knex('factors').where({ user_id: user.id }).select('status')).toEqual([{ status: 'ACTIVE' }]);
  });
});
