import { Writable } from 'node:stream';
import { createLogger } from '../../src/log';
import { startTestServer, type TestServer } from '../helpers/server';
import { basic, bearer, createClient, createTenant, createUser, form, introspect, json, lastCode, login, passwordLogin, refresh } from '../helpers/flows';
import { newDevice } from '../helpers/device';
import { createTestStore, dbLabel, freePort, testConfig } from '../helpers/env';
import { startServer } from '../../src/server';

const PASSWORD = 'an unguessable debug-log passphrase';

describe(`observability and hygiene (${dbLabel})`, () => {
  let srv: TestServer;
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      lines.push(String(chunk));
      cb();
    },
  });

  beforeAll(async () => {
    srv = await startTestServer({ logger: createLogger('trace', sink) });
    await createTenant(srv, 'live-bank', 'live');
  });
  afterAll(async () => srv?.close());

  test('no password, client secret, API key, code, access or refresh token is ever logged (most verbose level, every flow)', async () => {
    const secrets: string[] = [PASSWORD];
    const app = await createClient(srv, { tenants: ['live-bank'], grant_types: ['password', 'client_credentials'] });
    const rs = await createClient(srv, { tenants: ['live-bank'], introspection: true });
    secrets.push(app.client_secret, app.api_key, rs.client_secret, rs.api_key);
    const mobile = '+447911123459';
    await createUser(srv, 'live-bank', { username: 'logged', mobile, password: PASSWORD });

    const cc = (await form(srv, '/token', { grant_type: 'client_credentials' }, { authorization: basic(app) })).json.access_token as string;
    secrets.push(cc);
    await introspect(srv, rs, cc);
    await passwordLogin(srv, app, 'logged', `${PASSWORD} wrong`);
    const t = await login(srv, app, 'logged', PASSWORD);
    secrets.push(t.access_token, t.refresh_token);
    const r = (await refresh(srv, app, t.refresh_token)).json as { access_token: string; refresh_token: string };
    secrets.push(r.access_token, r.refresh_token);
    await json(srv, 'POST', '/authentication_factors/otp/SMS', undefined, bearer(r.access_token, { 'api-key': app.api_key }));
    const code = await lastCode(srv, mobile);
    secrets.push(code);
    await json(srv, 'POST', '/authentication_factors/otp/SMS/verify', { verificationCode: '000000' }, bearer(r.access_token));
    await json(srv, 'POST', '/authentication_factors/otp/SMS/verify', { verificationCode: code }, bearer(r.access_token));
    await json(srv, 'POST', '/stepup/challenges/otp/SMS', {}, bearer(r.access_token));
    const stepCode = await lastCode(srv, mobile);
    secrets.push(stepCode);
    const sca = (await json(srv, 'POST', '/stepup/challenges/otp/SMS/verify', { verificationCode: stepCode }, bearer(r.access_token))).json.access_token as string;
    secrets.push(sca);
    const device = await newDevice();
    await json(srv, 'POST', '/authentication_factors/push/AUTHY', { publicKey: device.publicJwk }, bearer(sca));
    const reg = await json(srv, 'POST', '/users', { username: 'newbie', password: `${PASSWORD}!`, acceptedTerms: true }, { 'api-key': app.api_key });
    secrets.push(`${PASSWORD}!`, (reg.json.token as { access_token: string }).access_token);
    await json(srv, 'POST', '/users', { username: 'dup', password: 'password', acceptedTerms: true }, { 'api-key': app.api_key });
    await form(srv, '/token/revocation', { token: t.refresh_token }, { authorization: basic(app) });

    await new Promise((r) => setTimeout(r, 50)); // the last requests' log lines are written on 'finish'
    const log = lines.join('');
    expect(lines.length).toBeGreaterThan(15);
    expect(log).toContain('"msg":"request"');
    for (const s of secrets) expect(log).not.toContain(s);
  });

  test('/metrics: Prometheus text with the counters and latency histograms', async () => {
    const app = await createClient(srv, { tenants: ['live-bank'], grant_types: ['password', 'client_credentials'] });
    await form(srv, '/token', { grant_type: 'client_credentials' }, { authorization: basic(app) });
    await form(srv, '/token', { grant_type: 'client_credentials', scope: 'nope' }, { authorization: basic(app) });
    const res = await fetch(`${srv.base}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
    const text = await res.text();
    expect(text).toMatch(/portcullis_tokens_issued_total\{grant="client_credentials",tenant="live-bank"\} [1-9]/);
    expect(text).toMatch(/portcullis_tokens_issued_total\{grant="password",tenant="live-bank"\} [1-9]/);
    expect(text).toMatch(/portcullis_oauth_failures_total\{endpoint="token",error="invalid_scope"\} [1-9]/);
    expect(text).toMatch(/portcullis_oauth_failures_total\{endpoint="token",error="invalid_grant"\} [1-9]/);
    expect(text).toMatch(/portcullis_messages_sent_total\{kind="sms",sender="log"\} [1-9]/);
    expect(text).toMatch(/portcullis_stepups_total\{channel="SMS",tenant="live-bank"\} 1/);
    expect(text).toMatch(/portcullis_http_request_duration_seconds_bucket\{le="0.05",method="POST",route="\/token",status="200"\} [1-9]/);
    expect(text).toMatch(/portcullis_http_request_duration_seconds_count\{method="GET",route="\/authentication_factors",status="\d+"\}|route="\/authentication_factors\/otp\/:channel"/);
    expect(text).toContain('portcullis_lockouts_total');
    expect(text).toContain('portcullis_idempotent_replays_total');
    expect(text).toContain('portcullis_process_resident_memory_bytes');
  });

  test('/readyz answers 503 within its 2 s when every connection of the pool is held, and 200 once one is free', async () => {
    // A server with one connection, held by a transaction: knex's query timeout starts only once a
    // connection is out, so the probe used to wait out the pool's 10 s acquire timeout.
    const one = await startTestServer({ config: { dbPoolMax: 1 } });
    try {
      expect((await fetch(`${one.base}/readyz`)).status).toBe(200);
      const trx = await one.running.app.database.knex.transaction();
      try {
        const started = Date.now();
        const res = await fetch(`${one.base}/readyz`);
        expect(res.status).toBe(503);
        expect(res.headers.get('retry-after')).toBe('5');
        expect(await res.json()).toEqual({ status: 'unavailable', database: 'unreachable' });
        expect(Date.now() - started).toBeLessThan(4000);
        // Probes meanwhile share the check still waiting for a connection: one in the pool's queue.
        const more = await Promise.all([1, 2, 3].map(() => fetch(`${one.base}/readyz`)));
        expect(more.map((r) => r.status)).toEqual([503, 503, 503]);
        const pool = (one.running.app.database.knex.client as { pool: { numPendingAcquires(): number } }).pool;
        expect(pool.numPendingAcquires()).toBeLessThanOrEqual(1);
      } finally {
        await trx.commit();
      }
      expect((await fetch(`${one.base}/readyz`)).status).toBe(200);
    } finally {
      await one.close();
    }
  });

  test('security headers on every reply', async () => {
    const replies = await Promise.all([
      fetch(`${srv.base}/token`, { method: 'POST' }),
      fetch(`${srv.base}/token/introspection`, { method: 'POST' }),
      fetch(`${srv.base}/users/me`),
      fetch(`${srv.base}/no/such/path`),
      fetch(`${srv.base}/healthz`),
      fetch(`${srv.base}/docs`),
      fetch(`${srv.base}/jwks`),
    ]);
    for (const r of replies) {
      expect(r.headers.get('x-content-type-options')).toBe('nosniff');
      expect(r.headers.get('x-frame-options')).toBe('DENY');
      expect(r.headers.get('strict-transport-security')).toBeNull(); // http PUBLIC_URL
    }
    expect(replies[0]!.headers.get('cache-control')).toBe('no-store');
    expect(replies[1]!.headers.get('cache-control')).toBe('no-store');
  });
});

describe(`HSTS when PUBLIC_URL is https (${dbLabel})`, () => {
  let srv: TestServer;
  beforeAll(async () => {
    srv = await startTestServer({ config: { publicUrl: 'https://auth.example.com' } });
  });
  afterAll(async () => srv?.close());

  test('Strict-Transport-Security on OAuth and our replies', async () => {
    for (const path of ['/healthz', '/jwks', '/users/me']) {
      const r = await fetch(`${srv.base}${path}`);
      expect(r.headers.get('strict-transport-security')).toMatch(/max-age=\d+/);
    }
  });
});

describe(`development senders in production (${dbLabel})`, () => {
  test('a production server with the log sender says so at start-up; with webhooks it does not', async () => {
    const store = await createTestStore();
    try {
      for (const [senders, warned] of [[{}, true], [{ smsSender: 'webhook', pushSender: 'webhook', smsWebhookUrl: 'http://127.0.0.1:9/sms', pushWebhookUrl: 'http://127.0.0.1:9/push', webhookSecret: 'a-webhook-secret-of-some-length' }, false]] as const) {
        const out: string[] = [];
        const logger = createLogger('info', new Writable({ write: (c, _e, cb) => (out.push(String(c)), cb()) }));
        const config = { ...testConfig(store, senders, await freePort()), env: 'production', secretsKey: Buffer.alloc(32, 7).toString('base64') };
        const running = await startServer(config, { seedDemo: false, app: { logger } });
        await running.shutdown();
        expect(out.some((l) => l.includes('a development sender (log) is in use'))).toBe(warned);
      }
    } finally {
      await store.cleanup();
    }
  });
});
