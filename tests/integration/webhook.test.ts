import http from 'node:http';
import { createHmac } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { startTestServer, type TestServer } from '../helpers/server';
import { bearer, createClient, createTenant, createUser, json, login, type ClientCreds } from '../helpers/flows';
import { newDevice } from '../helpers/device';
import { dbLabel } from '../helpers/env';

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
  let srv: TestServer;
  let app: ClientCreds;

  beforeAll(async () => {
    receiver = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        received.push({ path: req.url ?? '', body: Buffer.concat(chunks).toString('utf8'), signature: String(req.headers['x-portcullis-signature'] ?? '') });
        res.statusCode = failing ? 500 : 200;
        res.end();
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
  });

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
});
