import { connect } from 'node:net';
import { startTestServer, type TestServer } from '../helpers/server';
import {
  basic, bearer, createClient, createTenant, createUser, form, introspect, json, login, passwordLogin, refresh, type ClientCreds,
} from '../helpers/flows';
import { dbLabel } from '../helpers/env';

const PASSWORD = 'a perfectly decent passphrase';

describe(`access ends when it should; hostile input (${dbLabel})`, () => {
  let srv: TestServer;
  let app: ClientCreds;
  let jwtApp: ClientCreds;
  let rs: ClientCreds;

  beforeAll(async () => {
    srv = await startTestServer();
    await createTenant(srv, 'bank-a');
    await createTenant(srv, 'bank-z');
    app = await createClient(srv, { tenants: ['bank-a'], grant_types: ['password', 'client_credentials'], scope: 'accounts admin', admin: true });
    jwtApp = await createClient(srv, { tenants: ['bank-a'], grant_types: ['password'], token_format: 'jwt' });
    rs = await createClient(srv, { tenants: ['bank-a'], introspection: true });
    await createUser(srv, 'bank-a', { username: 'jay', password: PASSWORD });
  });
  afterAll(async () => srv?.close());

  test('a request with two Authorization headers is refused, whichever of them is good', async () => {
    /** One request over a raw socket (node's clients send a header once): status and parsed body. */
    const raw = (method: string, path: string, headers: Array<[string, string]>, body = '') =>
      new Promise<{ status: number; body: unknown }>((resolve, reject) => {
        const url = new URL(srv.base);
        const socket = connect({ host: url.hostname, port: Number(url.port) }, () => {
          const lines = [`${method} ${path} HTTP/1.1`, `host: ${url.host}`, 'connection: close', `content-length: ${Buffer.byteLength(body)}`, ...headers.map(([k, v]) => `${k}: ${v}`)];
          socket.write(`${lines.join('\r\n')}\r\n\r\n${body}`); // the server closes after its reply
        });
        const chunks: Buffer[] = [];
        socket.on('data', (c: Buffer) => chunks.push(c));
        socket.on('error', reject);
        socket.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          // The JSON body, with or without chunked framing around it.
          const body = text.slice(text.indexOf('\r\n\r\n') + 4);
          resolve({ status: Number(text.slice(9, 12)), body: JSON.parse(body.slice(body.indexOf('{'), body.lastIndexOf('}') + 1)) as unknown });
        });
      });
    const good = basic(app);
    const bad = basic({ client_id: app.client_id, client_secret: 'wrong' });
    const formType: [string, string] = ['content-type', 'application/x-www-form-urlencoded'];
    const cc = 'grant_type=client_credentials&scope=accounts&tenant=bank-a';
    expect((await raw('POST', '/token', [formType, ['authorization', good]], cc)).status).toBe(200);
    const refused = { status: 400, body: { error: 'invalid_request', error_description: 'more than one Authorization header' } };
    for (const pair of [[good, bad], [bad, good], [good, good]]) {
      expect(await raw('POST', '/token', [formType, ['Authorization', pair[0]!], ['authorization', pair[1]!]], cc)).toEqual(refused);
      expect(await raw('POST', '/token/introspection', [formType, ['authorization', pair[0]!], ['AUTHORIZATION', pair[1]!]], 'token=x')).toEqual(refused);
    }
    // Our routes: the documented 400, naming the header.
    const token = (await form(srv, '/token', { grant_type: 'client_credentials', scope: 'admin', tenant: 'bank-a' }, { authorization: good })).json.access_token as string;
    expect((await raw('GET', '/admin/tenants/bank-a', [['authorization', `Bearer ${token}`]])).status).toBe(200);
    expect(await raw('GET', '/admin/tenants/bank-a', [['authorization', `Bearer ${token}`], ['authorization', 'Bearer nothing']])).toEqual({
      status: 400,
      body: { message: 'Request is invalid', syntaxErrors: { invalidFields: [{ fieldName: 'Authorization', error: 'must be sent once' }] } },
    });
  });

  test('a JWT user access token dies with its session', async () => {
    const t = await login(srv, jwtApp, 'jay', PASSWORD);
    expect(t.access_token.split('.')).toHaveLength(3);
    expect((await introspect(srv, rs, t.access_token)).json.active).toBe(true);
    expect((await json(srv, 'GET', '/users/me', undefined, bearer(t.access_token))).status).toBe(200);
    const sessions = (await json(srv, 'GET', '/sessions', undefined, bearer(t.access_token))).json.sessions as Array<{ id: string; current: boolean }>;
    const current = sessions.find((s) => s.current)!;
    expect((await json(srv, 'DELETE', `/sessions/${current.id}`, undefined, bearer(t.access_token))).status).toBe(204);
    expect((await introspect(srv, rs, t.access_token)).json).toEqual({ active: false });
    expect((await json(srv, 'GET', '/users/me', undefined, bearer(t.access_token))).status).toBe(401);
  });

  test('a locked user: tokens inactive, refresh refused', async () => {
    const user = await createUser(srv, 'bank-a', { username: 'kim', password: PASSWORD });
    const t = await login(srv, app, 'kim', PASSWORD);
    await srv.running.app.database.knex('users').where({ id: user.id }).update({ status: 'locked' });
    expect((await introspect(srv, rs, t.access_token)).json).toEqual({ active: false });
    expect((await json(srv, 'GET', '/users/me', undefined, bearer(t.access_token))).status).toBe(401);
    expect((await refresh(srv, app, t.refresh_token)).json.error).toBe('invalid_grant');
  });

  test('a disabled tenant: its tokens inactive, its refresh and token requests refused', async () => {
    const zApp = await createClient(srv, { tenants: ['bank-z'], grant_types: ['password', 'client_credentials'] });
    const zRs = await createClient(srv, { tenants: ['bank-z'], introspection: true });
    await createUser(srv, 'bank-z', { username: 'zed', password: PASSWORD });
    const t = await login(srv, zApp, 'zed', PASSWORD);
    const cc = (await form(srv, '/token', { grant_type: 'client_credentials' }, { authorization: basic(zApp) })).json.access_token as string;
    await srv.running.app.database.knex('tenants').where({ id: 'bank-z' }).update({ status: 'disabled' });
    srv.running.app.services.caches.changed('tenant', 'bank-z'); // a write behind the repository's back must say so
    expect((await introspect(srv, zRs, t.access_token)).json).toEqual({ active: false });
    expect((await introspect(srv, zRs, cc)).json).toEqual({ active: false });
    expect((await refresh(srv, zApp, t.refresh_token)).json.error).toBe('invalid_grant');
    expect((await form(srv, '/token', { grant_type: 'client_credentials' }, { authorization: basic(zApp) })).status).toBe(400);
    expect((await passwordLogin(srv, zApp, 'zed', PASSWORD)).status).toBe(400);
  });

  test('the admin scope never reaches a user token', async () => {
    const t = await login(srv, app, 'jay', PASSWORD);
    expect(t.scope).toBe('accounts');
    expect((await login(srv, app, 'jay', PASSWORD, { scope: 'accounts' })).scope).toBe('accounts');
  });

  test('NUL bytes: a plain miss or a 400, never a 500', async () => {
    expect((await introspect(srv, rs, 'a\u0000b')).json).toEqual({ active: false });
    expect((await form(srv, '/token/revocation', { token: 'a\u0000b' }, { authorization: basic(app) })).status).toBe(200);
    const r = await refresh(srv, app, 'a\u0000b');
    expect(r.status).toBe(400);
    expect(r.json.error).toBe('invalid_grant');
    const cid = await form(srv, '/token', { grant_type: 'client_credentials', client_id: 'a\u0000b', client_secret: 'x' });
    expect(cid.status).toBeLessThan(500);
    expect((await passwordLogin(srv, app, 'j\u0000y', PASSWORD)).status).toBe(400);
    expect((await passwordLogin(srv, app, 'jay', `${PASSWORD}\u0000`)).status).toBe(400);
    expect((await form(srv, '/token', { grant_type: 'client_credentials', tenant: 'bank\u0000a' }, { authorization: basic(app) })).status).toBe(400);
    const reg = await json(srv, 'POST', '/users', { username: 'nul', password: PASSWORD, acceptedTerms: true, group: 'a\u0000b' }, { 'api-key': app.api_key });
    expect(reg.status).toBe(400);
    expect(reg.json).toMatchObject({ syntaxErrors: { invalidFields: [{ fieldName: 'group' }] } });
  });

  test('a lone surrogate (JSON "\\ud800") in a value or a key: a 400 naming it, never a 500, nothing stored', async () => {
    const users = async () => Number((await srv.running.app.database.knex('users').count({ n: '*' }).first())?.n);
    const before = await users();
    const body = { username: 'lone', password: PASSWORD, acceptedTerms: true, profile: { firstName: 'Ca\ud800rol' } };
    const reg = await json(srv, 'POST', '/users', body, { 'api-key': app.api_key });
    expect([reg.status, reg.json]).toEqual([400, { message: 'Request is invalid', syntaxErrors: { invalidFields: [{ fieldName: 'profile.firstName', error: 'must be valid Unicode text' }] } }]);
    const key = await json(srv, 'POST', '/users', { ...body, profile: { ['x\udfff']: 'y' } }, { 'api-key': app.api_key });
    expect(key.status).toBe(400);
    expect(await users()).toBe(before);
    // A well-formed pair is text like any other.
    const ok = await json(srv, 'POST', '/users', { ...body, profile: { firstName: 'Ca\ud83d\ude00rol' } }, { 'api-key': app.api_key });
    expect(ok.status).toBe(201);
  });

  test('an empty body sent chunked is no body, as an empty one with a length is', async () => {
    const { request } = await import('node:http');
    const status = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = request(`${srv.base}/users`, { method: 'POST', headers: { 'content-type': 'application/json', 'transfer-encoding': 'chunked', 'api-key': app.api_key } }, (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += String(c)));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on('error', reject);
      req.end();
    });
    expect(status.status).toBe(400);
    // Told what the registration lacks, not that the body is not an object.
    expect(status.body).not.toContain('must be a JSON object');
    expect(status.body).toContain('password');
  });

  test('the bearer scheme is case-insensitive (RFC 7235)', async () => {
    const t = await login(srv, app, 'jay', PASSWORD);
    expect((await json(srv, 'GET', '/users/me', undefined, { authorization: `bearer ${t.access_token}` })).status).toBe(200);
  });
});

describe(`per-IP throttle behind a trusted proxy (${dbLabel})`, () => {
  let srv: TestServer;
  let app: ClientCreds;

  beforeAll(async () => {
    srv = await startTestServer({ config: { trustProxy: true, loginThrottle: { failuresPerWindow: 3, windowSeconds: 60 } } });
    await createTenant(srv, 'bank-a');
    app = await createClient(srv, { tenants: ['bank-a'], grant_types: ['password'] });
    await createUser(srv, 'bank-a', { username: 'pat', password: PASSWORD });
  });
  afterAll(async () => srv?.close());

  const attempt = (xff: string, password = 'wrong wrong wrong') =>
    fetch(`${srv.base}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic(app), 'x-forwarded-for': xff },
      body: new URLSearchParams({ grant_type: 'password', username: 'pat', password }).toString(),
    });

  test('a last entry that is no address (a proxy passing on what its client wrote) counts by its own budget, however long', async () => {
    const long = `not-an-address-${'x'.repeat(6000)}`;
    for (let i = 0; i < 3; i += 1) expect((await attempt(`203.0.113.1, ${long}`)).status).toBe(400);
    expect((await attempt(long)).status).toBe(429);
    expect((await attempt(`${long}-another`, PASSWORD)).status).toBe(200);
    // An IPv6 address with a zone is an address to Node's isIP, whatever the zone's length.
    const zoned = `fe80::1%${'ab'.repeat(4000)}`;
    for (let i = 0; i < 3; i += 1) expect((await attempt(zoned)).status).toBe(400);
    expect((await attempt(zoned)).status).toBe(429);
  });

  test('client-written X-Forwarded-For entries do not buy more attempts; parallel ones cannot overrun', async () => {
    const verify = jest.spyOn(srv.running.app.services.hasher, 'verify');
    try {
      const results = await Promise.all(Array.from({ length: 20 }, (_, i) => attempt(`1.1.1.${i}, 203.0.113.5`)));
      expect(results.filter((r) => r.status === 429).length).toBeGreaterThanOrEqual(17);
      expect(verify.mock.calls.length).toBeLessThanOrEqual(3);
      // the proxy-appended address is what counts: another one is a fresh budget
      expect((await attempt('9.9.9.9, 203.0.113.6', PASSWORD)).status).toBe(200);
    } finally {
      verify.mockRestore();
    }
  });
});
