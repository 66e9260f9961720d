import { connect } from 'node:net';
import { startTestServer, type TestServer } from '../helpers/server';
import { basic, createClient, createTenant, createUser, form, json, login, type ClientCreds } from '../helpers/flows';
import { dbLabel } from '../helpers/env';

// RFC 6750 on our own bearer-protected routes: a valid token that does not reach the resource is a
// 403 with an `insufficient_scope` challenge (§3, §3.1); a Bearer header that is not one token is a
// 400 `invalid_request`; the scheme may be followed by more than one space (§2.1).

const PASSWORD = 'a long and unusual passphrase';

describe(`bearer challenges on our routes (${dbLabel})`, () => {
  let srv: TestServer;
  let app: ClientCreds;
  let ccToken: string;
  let userToken: string;
  let realm: string;

  const get = (path: string, authorization: string) => json(srv, 'GET', path, undefined, { authorization });

  beforeAll(async () => {
    srv = await startTestServer();
    realm = srv.base;
    await createTenant(srv, 'bank-a');
    app = await createClient(srv, { tenants: ['bank-a'], grant_types: ['password', 'client_credentials'], scope: 'accounts' });
    await createUser(srv, 'bank-a', { username: 'uma', password: PASSWORD });
    ccToken = (await form(srv, '/token', { grant_type: 'client_credentials' }, { authorization: basic(app) })).json.access_token as string;
    userToken = (await login(srv, app, 'uma', PASSWORD)).access_token;
  });
  afterAll(async () => srv?.close());

  test('a client token on an end-user route: 403 insufficient_scope, the body as documented', async () => {
    const r = await get('/users/me', `Bearer ${ccToken}`);
    expect(r.status).toBe(403);
    expect(r.json.code).toBe('USER_TOKEN_REQUIRED');
    expect(r.headers.get('www-authenticate')).toBe(`Bearer realm="${realm}", error="insufficient_scope"`);
  });

  test('a user token where a client is required: 403 insufficient_scope', async () => {
    const r = await json(srv, 'POST', '/users', { username: 'x', password: PASSWORD, acceptedTerms: true }, { authorization: `Bearer ${userToken}` });
    expect(r.status).toBe(403);
    expect(r.json.code).toBe('CLIENT_TOKEN_REQUIRED');
    expect(r.headers.get('www-authenticate')).toBe(`Bearer realm="${realm}", error="insufficient_scope"`);
  });

  test('admin routes: without scope admin the challenge names it; a tenant admin on a platform route is refused likewise', async () => {
    const r = await get('/admin/tenants', `Bearer ${ccToken}`);
    expect(r.status).toBe(403);
    expect(r.json.code).toBe('FORBIDDEN');
    expect(r.headers.get('www-authenticate')).toBe(`Bearer realm="${realm}", error="insufficient_scope", scope="admin"`);

    const tenantAdmin = await createClient(srv, { tenants: ['bank-a'], admin: true });
    const t = (await form(srv, '/token', { grant_type: 'client_credentials', scope: 'admin' }, { authorization: basic(tenantAdmin) })).json.access_token as string;
    expect((await get('/admin/tenants/bank-a', `Bearer ${t}`)).status).toBe(200);
    const platformOnly = await get('/admin/keys', `Bearer ${t}`);
    expect(platformOnly.status).toBe(403);
    expect(platformOnly.headers.get('www-authenticate')).toBe(`Bearer realm="${realm}", error="insufficient_scope"`);
  });

  test('the scheme in any case and followed by several spaces is read; a Bearer header that is not one token is a 400', async () => {
    expect((await get('/users/me', `Bearer  ${userToken}`)).status).toBe(200);
    expect((await get('/users/me', `bearer ${userToken}`)).status).toBe(200);
    for (const header of ['Bearer a b', `Bearer ${userToken} x`, 'Bearer "quoted"', 'Bearer', 'bearer ']) {
      const r = await get('/users/me', header);
      expect([header, r.status]).toEqual([header, 400]);
      expect(r.json).toEqual({ message: 'Request is invalid', syntaxErrors: { invalidFields: [{ fieldName: 'Authorization', error: 'must be Bearer and one token' }] } });
      expect(r.headers.get('www-authenticate')).toBe(`Bearer realm="${realm}", error="invalid_request"`);
    }
  });

  test('two Authorization headers: a 400 with the same challenge', async () => {
    // Raw: fetch and node:http join or refuse a repeated header.
    const url = new URL(srv.base);
    const text = await new Promise<string>((resolve, reject) => {
      const socket = connect({ host: url.hostname, port: Number(url.port) }, () => {
        const lines = ['GET /users/me HTTP/1.1', `host: ${url.host}`, 'connection: close', `authorization: Bearer ${userToken}`, `Authorization: Bearer ${ccToken}`];
        socket.write(`${lines.join('\r\n')}\r\n\r\n`);
      });
      const chunks: Buffer[] = [];
      socket.on('data', (c: Buffer) => chunks.push(c));
      socket.on('error', reject);
      socket.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    });
    expect(text.slice(9, 12)).toBe('400');
    expect(text).toMatch(new RegExp(`\r\nWWW-Authenticate: Bearer realm="${realm.replace(/[.]/g, '\\.')}", error="invalid_request"\r\n`, 'i'));
    expect(JSON.parse(text.slice(text.indexOf('{'), text.lastIndexOf('}') + 1))).toEqual({ message: 'Request is invalid', syntaxErrors: { invalidFields: [{ fieldName: 'Authorization', error: 'must be sent once' }] } });
  });

  test('no token, or another scheme: 401 with the realm and no error code; a bad token: invalid_token', async () => {
    for (const authorization of ['', `Basic ${Buffer.from('a:b').toString('base64')}`]) {
      const r = await get('/users/me', authorization);
      expect([authorization, r.status, r.headers.get('www-authenticate')]).toEqual([authorization, 401, `Bearer realm="${realm}"`]);
    }
    const bad = await get('/users/me', 'Bearer not-a-token');
    expect([bad.status, bad.headers.get('www-authenticate')]).toEqual([401, `Bearer realm="${realm}", error="invalid_token"`]);
  });
});
