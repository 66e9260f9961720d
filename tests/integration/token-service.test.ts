import * as oauth from 'openid-client';
import { createRemoteJWKSet, jwtVerify, decodeProtectedHeader, SignJWT } from 'jose';
import { newEs256Pair } from '../helpers/keys';
import { startTestServer, type TestServer } from '../helpers/server';
import { basic, clientCredentialsToken, createClient, createTenant, createUser, form, introspect, login, refresh, type ClientCreds } from '../helpers/flows';
import { dbLabel } from '../helpers/env';
import { storedTokenId } from '../../src/oidc/adapter';

describe(`token service (${dbLabel})`, () => {
  let srv: TestServer;
  let app: ClientCreds; // tenant a, client_credentials
  let rsA: ClientCreds; // resource server of tenant a
  let rsB: ClientCreds; // resource server of tenant b
  let multi: ClientCreds; // allowed for a and b

  beforeAll(async () => {
    srv = await startTestServer();
    await createTenant(srv, 'bank-a');
    await createTenant(srv, 'bank-b', 'live');
    app = await createClient(srv, { tenants: ['bank-a'], scope: 'accounts payments' });
    rsA = await createClient(srv, { tenants: ['bank-a'], introspection: true });
    rsB = await createClient(srv, { tenants: ['bank-b'], introspection: true });
    multi = await createClient(srv, { tenants: ['bank-a', 'bank-b'], scope: 'accounts' });
  });
  afterAll(async () => srv?.close());

  const discover = (c: ClientCreds, algorithm: 'oidc' | 'oauth2' = 'oidc') =>
    oauth.discovery(new URL(srv.running.app.config.publicUrl), c.client_id, undefined, oauth.ClientSecretBasic(c.client_secret), {
      algorithm,
      execute: [oauth.allowInsecureRequests],
    });

  test('an OAuth client library discovers, gets a token, introspects and revokes it', async () => {
    const appConfig = await discover(app, 'oauth2');
    const rsConfig = await discover(rsA);
    const tokens = await oauth.clientCredentialsGrant(appConfig, { scope: 'accounts' });
    expect(tokens.token_type.toLowerCase()).toBe('bearer');
    expect(tokens.expires_in).toBe(1800);
    expect(tokens.refresh_token).toBeUndefined();

    const info = await oauth.tokenIntrospection(rsConfig, tokens.access_token);
    expect(info.active).toBe(true);
    // oidc-provider's opaque format reads the clock twice, for exp's basis and then for iat: across
    // a second's boundary iat is one later (seen once in a full run), and the token a second shorter.
    expect([1799, 1800]).toContain(info.exp! - info.iat!);
    expect(info).toMatchObject({ tenant: 'bank-a', client_id: app.client_id, sub: app.client_id, scope: 'accounts', token_type: 'Bearer' });
    expect(info.iss).toBe(srv.running.app.config.publicUrl);
    expect(typeof info.jti).toBe('string');
    expect(info.jti).not.toBe(tokens.access_token);
    expect(info.acr).toBeUndefined();

    await oauth.tokenRevocation(appConfig, tokens.access_token);
    const after = await oauth.tokenIntrospection(rsConfig, tokens.access_token);
    expect(after.active).toBe(false);
  });

  test('no token is stored as itself, nor in a payload: the table holds their hashes, and they work as before', async () => {
    const pw = await createClient(srv, { tenants: ['bank-a'], grant_types: ['password'] });
    await createUser(srv, 'bank-a', { username: 'hashed-tokens', password: 'a perfectly decent passphrase' });
    const user = await login(srv, pw, 'hashed-tokens', 'a perfectly decent passphrase');
    const cc = (await clientCredentialsToken(srv, app)).access_token;
    const values = [user.access_token, user.refresh_token, cc];
    const table = async () => JSON.stringify(await srv.running.app.database.knex('oidc_payloads').select('id', srv.running.app.database.knex.raw('payload::text as payload')));
    const before = await table();
    for (const v of values) {
      expect(before).not.toContain(v);
      expect(before).toContain(storedTokenId(v));
    }
    for (const v of [user.access_token, cc]) expect((await introspect(srv, rsA, v)).json.active).toBe(true);
    const next = await refresh(srv, pw, user.refresh_token);
    expect(next.status).toBe(200);
    expect(await table()).not.toContain(next.json.refresh_token as string);
    expect((await refresh(srv, pw, user.refresh_token)).status).toBe(400); // used once: rotation and reuse detection still hold
    expect((await form(srv, '/token/revocation', { token: cc }, { authorization: basic(app) })).status).toBe(200);
    expect((await introspect(srv, rsA, cc)).json.active).toBe(false);
  });

  test('endpoint URLs in the metadata are under the issuer, whatever Host the request names', async () => {
    const { request } = await import('node:http');
    const get = (path: string, host: string) =>
      new Promise<Record<string, unknown>>((resolve, reject) => {
        const req = request(`${srv.base}${path}`, { headers: { host, 'x-forwarded-host': host } }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>));
        });
        req.on('error', reject);
        req.end();
      });
    for (const path of ['/.well-known/oauth-authorization-server', '/.well-known/openid-configuration']) {
      const meta = await get(path, 'evil.example');
      const urls = Object.entries(meta).filter(([k]) => k === 'jwks_uri' || k.endsWith('_endpoint'));
      expect(urls.length).toBeGreaterThanOrEqual(4);
      for (const [key, url] of urls) expect([path, key, url]).toEqual([path, key, expect.stringMatching(new RegExp(`^${String(meta.issuer).replace(/[.]/g, '\\.')}/`))]);
      expect(meta).toEqual(await get(path, new URL(srv.base).host));
    }
  });

  test('both metadata documents describe the same endpoints', async () => {
    const a = (await (await fetch(`${srv.base}/.well-known/openid-configuration`)).json()) as Record<string, unknown>;
    const b = (await (await fetch(`${srv.base}/.well-known/oauth-authorization-server`)).json()) as Record<string, unknown>;
    expect(b).toEqual(a);
    expect(a.token_endpoint).toMatch(/\/token$/);
    expect(a.introspection_endpoint).toMatch(/\/token\/introspection$/);
    expect(a.revocation_endpoint).toMatch(/\/token\/revocation$/);
    expect(a.jwks_uri).toMatch(/\/jwks$/);
    const jwks = (await (await fetch(`${srv.base}/jwks`)).json()) as { keys: Array<Record<string, unknown>> };
    expect(jwks.keys.length).toBeGreaterThan(0);
    for (const k of jwks.keys) {
      expect(k).toMatchObject({ kty: 'EC', crv: 'P-256', alg: 'ES256' });
      expect(k.d).toBeUndefined();
    }
  });

  test('the metadata names only what this server serves; the library\'s other endpoints are not reachable', async () => {
    const meta = (await (await fetch(`${srv.base}/.well-known/oauth-authorization-server`)).json()) as Record<string, unknown>;
    for (const key of ['authorization_endpoint', 'end_session_endpoint', 'pushed_authorization_request_endpoint', 'dpop_signing_alg_values_supported', 'scopes_supported', 'response_modes_supported']) {
      expect([key, meta[key]]).toEqual([key, undefined]);
    }
    expect(meta.response_types_supported).toEqual([]);
    expect(meta.grant_types_supported).toEqual(expect.arrayContaining(['client_credentials', 'password', 'refresh_token']));

    const { knex } = srv.running.app.database;
    const rows = async () => Number((await knex('oidc_payloads').whereNotIn('type', ['AccessToken', 'ClientCredentials', 'Grant', 'RefreshToken']).count({ n: '*' }).first())?.n);
    const before = await rows();
    for (const [method, path] of [['GET', '/auth'], ['GET', '/session/end'], ['POST', '/session/end/confirm'], ['POST', '/request'], ['GET', '/me'], ['GET', '/no/such/path']]) {
      const r = await fetch(`${srv.base}${path}`, { method });
      expect([path, r.status, await r.json()]).toEqual([path, 404, { message: 'Not found', code: 'NOT_FOUND' }]);
      expect(r.headers.get('set-cookie')).toBeNull();
    }
    expect(await rows()).toBe(before); // no session or interaction stored for anyone who asks

    const wrong = await fetch(`${srv.base}/users/me`, { method: 'PUT' });
    expect(wrong.status).toBe(405);
    expect(wrong.headers.get('allow')).toMatch(/GET/);
    expect(await wrong.json()).toEqual({ message: 'PUT is not allowed here', code: 'METHOD_NOT_ALLOWED' });

    // The library's paths as its router takes them (one trailing slash, any case), and their methods.
    expect((await form(srv, '/token/', { grant_type: 'client_credentials' }, { authorization: basic(app) })).status).toBe(200);
    expect((await form(srv, '/V1/Token', { grant_type: 'client_credentials' }, { authorization: basic(app), institutionId: 'bank-a' })).status).toBe(200);
    expect((await fetch(`${srv.base}/.well-known/openid-configuration/`)).status).toBe(200);
    expect((await fetch(`${srv.base}/jwks`, { method: 'HEAD' })).status).toBe(200);
    // OPTIONS without a CORS preflight's headers asks which methods the path allows (RFC 9110 §9.3.7).
    for (const [path, allow] of [['/token', 'POST, OPTIONS'], ['/token/revocation', 'POST, OPTIONS'], ['/jwks', 'GET, HEAD, OPTIONS'], ['/.well-known/oauth-authorization-server', 'GET, HEAD, OPTIONS']]) {
      const r = await fetch(`${srv.base}${path}`, { method: 'OPTIONS' });
      expect([path, r.status, r.headers.get('allow'), await r.text()]).toEqual([path, 204, allow, '']);
    }
    // Our paths answer OPTIONS alike; a path that does not exist is still a 404.
    for (const [path, allow] of [['/users/me', 'HEAD, GET, OPTIONS'], ['/healthz', 'HEAD, GET, OPTIONS'], ['/admin/tenants', 'HEAD, GET, POST, OPTIONS']]) {
      const r = await fetch(`${srv.base}${path}`, { method: 'OPTIONS' });
      expect([path, r.status, r.headers.get('allow'), await r.text()]).toEqual([path, 204, allow, '']);
    }
    expect((await fetch(`${srv.base}/no/such/path`, { method: 'OPTIONS' })).status).toBe(404);
    // oidc-provider's paths answer in RFC 6749's shape, ours in {message, code}.
    for (const [method, path, allow] of [['GET', '/token', 'POST, OPTIONS'], ['PUT', '/jwks', 'GET, HEAD, OPTIONS'], ['DELETE', '/token/introspection', 'POST, OPTIONS']]) {
      const r = await fetch(`${srv.base}${path}`, { method });
      expect([method, path, r.status, r.headers.get('allow'), await r.json()]).toEqual([method, path, 405, allow, { error: 'invalid_request', error_description: `${method} is not allowed here` }]);
    }
    // A method the router knows nowhere (SEARCH, PROPFIND, QUERY) on one of our paths: 405 as well.
    for (const [method, path, allow] of [['SEARCH', '/users/me', 'HEAD, GET'], ['PROPFIND', '/users', 'POST'], ['QUERY', '/metrics', 'HEAD, GET']]) {
      const r = await fetch(`${srv.base}${path}`, { method });
      expect([method, path, r.status, r.headers.get('allow'), await r.json()]).toEqual([method, path, 405, allow, { message: `${method} is not allowed here`, code: 'METHOD_NOT_ALLOWED' }]);
    }
    // … and on a path that does not exist, the 404 as for any other method.
    for (const path of ['/no/such/path', '/admin/nothing-here']) {
      const r = await fetch(`${srv.base}${path}`, { method: 'PROPFIND' });
      expect([path, r.status, r.headers.get('allow'), await r.json()]).toEqual([path, 404, null, { message: 'Not found', code: 'NOT_FOUND' }]);
    }
    for (const [method, path, allow] of [['POST', '/healthz', 'HEAD, GET'], ['POST', '/readyz', 'HEAD, GET']]) {
      const r = await fetch(`${srv.base}${path}`, { method });
      expect([method, path, r.status, r.headers.get('allow'), await r.json()]).toEqual([method, path, 405, allow, { message: `${method} is not allowed here`, code: 'METHOD_NOT_ALLOWED' }]);
    }
  });

  test('DPoP is not offered: a proof is ignored, and a key-bound token never passes as a bearer token', async () => {
    const { privateKey, publicJwk } = await newEs256Pair();
    const proof = await new SignJWT({ htm: 'POST', htu: `${srv.running.app.config.publicUrl}/token`, jti: crypto.randomUUID() })
      .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: publicJwk })
      .setIssuedAt()
      .sign(privateKey);
    const t = await form(srv, '/token', { grant_type: 'client_credentials' }, { authorization: basic(app), dpop: proof });
    expect(t.status).toBe(200);
    expect(t.json.token_type).toBe('Bearer');
    const info = await introspect(srv, rsA, t.json.access_token as string);
    expect(info.json.active).toBe(true);
    expect(info.json).not.toHaveProperty('cnf');

    // A token bound to a key (stored before DPoP was turned off, say) is refused on our routes.
    const admin = await createClient(srv, { tenants: [], admin: true });
    const token = (await clientCredentialsToken(srv, admin, { scope: 'admin' })).access_token;
    const get = () => fetch(`${srv.base}/admin/tenants`, { headers: { authorization: `Bearer ${token}` } });
    expect((await get()).status).toBe(200);
    const { knex } = srv.running.app.database;
    await knex('oidc_payloads').where({ id: storedTokenId(token) }).update({ payload: knex.raw(`jsonb_set(payload, '{jkt}', '"thumbprint"')`) });
    expect((await get()).status).toBe(401);
  });

  test('token replies carry Cache-Control: no-store and Pragma: no-cache (RFC 6749 §5.1), on every path', async () => {
    const ok = await form(srv, '/token', { grant_type: 'client_credentials' }, { authorization: basic(app) });
    expect(ok.status).toBe(200);
    expect(ok.headers.get('cache-control')).toBe('no-store');
    const bad = await form(srv, '/token', { grant_type: 'client_credentials' }, { authorization: basic({ ...app, client_secret: 'nope' }) });
    expect(bad.headers.get('cache-control')).toBe('no-store');
    const intro = await introspect(srv, rsA, 'x');
    expect(intro.headers.get('cache-control')).toBe('no-store');
    const token = (await clientCredentialsToken(srv, app)).access_token;
    const answers = {
      'fast client_credentials': ok,
      'library client_credentials (client_secret_post)': await form(srv, '/token', { grant_type: 'client_credentials', client_id: app.client_id, client_secret: app.client_secret }),
      'alias /v1/token': await form(srv, '/v1/token', { grant_type: 'client_credentials' }, { authorization: basic(app), institutionId: 'bank-a' }),
      'invalid_client': bad,
      'unsupported_grant_type': await form(srv, '/token', { grant_type: 'urn:example:nope' }, { authorization: basic(app) }),
      'fast introspection': await introspect(srv, rsA, token),
      'library introspection (a hint)': await form(srv, '/token/introspection', { token, token_type_hint: 'access_token' }, { authorization: basic(rsA) }),
      'revocation': await form(srv, '/token/revocation', { token: 'unknown' }, { authorization: basic(app) }),
      'revocation, invalid_client': await form(srv, '/token/revocation', { token: 'unknown' }, { authorization: basic({ ...app, client_secret: 'nope' }) }),
      "revocation, another client's token": await form(srv, '/token/revocation', { token }, { authorization: basic(rsA) }),
      '405 before the library': await fetch(`${srv.base}/token`).then((r) => ({ status: r.status, headers: r.headers })),
    };
    for (const [what, r] of Object.entries(answers)) {
      expect([what, r.headers.get('cache-control'), r.headers.get('pragma')]).toEqual([what, 'no-store', 'no-cache']);
    }
  });

  test('a wrong secret is invalid_client with WWW-Authenticate', async () => {
    const res = await form(srv, '/token', { grant_type: 'client_credentials' }, { authorization: basic({ ...app, client_secret: `${app.client_secret}x` }) });
    expect(res.status).toBe(401);
    expect(res.json.error).toBe('invalid_client');
    expect(res.headers.get('www-authenticate')).toMatch(/^Basic /);
    const unknown = await form(srv, '/token', { grant_type: 'client_credentials' }, { authorization: basic({ client_id: 'nobody', client_secret: 'x' }) });
    expect(unknown.status).toBe(401);
    expect(unknown.json).toEqual(res.json); // an unknown client looks the same as a wrong secret
  });

  test('an Origin header changes nothing but CORS: the client is authenticated first, and no browser origin may read the answer', async () => {
    const origin = { origin: 'https://app.example' };
    const token = (await clientCredentialsToken(srv, app)).access_token;
    for (const path of ['/token', '/v1/oauth/token', '/v1/token', '/token/introspection', '/token/revocation']) {
      const body = { grant_type: 'client_credentials', token };
      const tenant = { di_fiid: 'bank-a' };
      // A wrong secret and an unknown client: the same 401 invalid_client with its challenge, as without an Origin.
      for (const creds of [{ ...app, client_secret: 'nope' }, { client_id: 'nobody', client_secret: 'x' }]) {
        const r = await form(srv, path, body, { authorization: basic(creds), ...tenant, ...origin });
        expect([path, r.status, r.json.error, r.headers.get('www-authenticate')?.slice(0, 6)]).toEqual([path, 401, 'invalid_client', 'Basic ']);
        expect(r.headers.get('access-control-allow-origin')).toBeNull();
      }
      // The right client is answered as without an Origin, with no CORS grant.
      const who = path === '/token/introspection' ? rsA : app;
      const ok = await form(srv, path, body, { authorization: basic(who), ...tenant, ...origin });
      expect([path, ok.status]).toEqual([path, 200]);
      expect([path, ok.headers.get('access-control-allow-origin'), ok.headers.get('access-control-expose-headers')]).toEqual([path, null, null]);
    }
    // A preflight gets no grant either; the public documents keep theirs.
    const preflight = await fetch(`${srv.base}/token`, { method: 'OPTIONS', headers: { ...origin, 'access-control-request-method': 'POST' } });
    expect([preflight.status, preflight.headers.get('access-control-allow-origin')]).toEqual([204, null]);
    expect((await fetch(`${srv.base}/jwks`, { headers: origin })).headers.get('access-control-allow-origin')).toBe('https://app.example');
  });

  test('client_secret_post works; no credentials at all is 401 invalid_client', async () => {
    const post = await createClient(srv, { tenants: ['bank-a'], token_endpoint_auth_method: 'client_secret_post' });
    const ok = await form(srv, '/token', { grant_type: 'client_credentials', client_id: post.client_id, client_secret: post.client_secret });
    expect(ok.status).toBe(200);
    const wrong = await form(srv, '/token', { grant_type: 'client_credentials', client_id: post.client_id, client_secret: 'x' });
    expect(wrong.status).toBe(401);
    const none = await form(srv, '/token', { grant_type: 'client_credentials' });
    expect(none.status).toBe(401);
    expect(none.json.error).toBe('invalid_client');
    expect(none.headers.get('www-authenticate')).toMatch(/^Basic realm=/);
  });

  test('RFC 6749 §5.2: an unreadable Authorization header or an unsupported method is 401 invalid_client, and every 401 has its challenge', async () => {
    const b64 = (v: string) => Buffer.from(v).toString('base64');
    const headers = [
      `Basic ${b64(`${app.client_id}:`)}`, // no secret
      `Basic ${b64('no-colon')}`,
      `Basic ${b64(app.client_id)}x!`,
      'Bearer abc',
      `Basic  ${b64(`${app.client_id}:${app.client_secret}`)}`, // two spaces: the library reads one
    ];
    for (const path of ['/token', '/token/introspection', '/token/revocation']) {
      for (const authorization of headers) {
        const r = await form(srv, path, { grant_type: 'client_credentials', token: 'x' }, { authorization });
        expect([path, authorization, r.status, r.json.error]).toEqual([path, authorization, 401, 'invalid_client']);
        expect(r.headers.get('www-authenticate')).toMatch(/^Basic realm="[^"]+", error="invalid_client", error_description="[^"]+"$/);
      }
      // A client assertion (private_key_jwt / client_secret_jwt are not offered): an unsupported method.
      const jwt = `${b64('{"alg":"HS256"}')}.${b64(JSON.stringify({ iss: app.client_id, sub: app.client_id }))}.c2ln`.replace(/=/g, '');
      const assertion = await form(srv, path, {
        grant_type: 'client_credentials', token: 'x', client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: jwt,
      });
      expect([path, assertion.status, assertion.json.error]).toEqual([path, 401, 'invalid_client']);
      expect(assertion.headers.get('www-authenticate')).toMatch(/^Basic realm="[^"]+", error="invalid_client"/);
    }
    // client_secret_post refused: a 401 carries a challenge too (RFC 9110 §15.5.2).
    const post = await createClient(srv, { tenants: ['bank-a'], token_endpoint_auth_method: 'client_secret_post' });
    const wrong = await form(srv, '/token', { grant_type: 'client_credentials', client_id: post.client_id, client_secret: 'x' });
    expect([wrong.status, wrong.json.error]).toEqual([401, 'invalid_client']);
    expect(wrong.headers.get('www-authenticate')).toMatch(/^Basic realm="[^"]+", error="invalid_client"/);
    // Both methods at once stays what it was: a malformed request.
    const both = await form(srv, '/token', { grant_type: 'client_credentials', client_id: app.client_id, client_secret: app.client_secret }, { authorization: basic(app) });
    expect([both.status, both.json.error]).toEqual([400, 'invalid_request']);
  });

  test('unknown grant, disallowed scope and duplicated parameters are refused', async () => {
    const grant = await form(srv, '/token', { grant_type: 'urn:example:nope' }, { authorization: basic(app) });
    expect(grant.status).toBe(400);
    expect(grant.json.error).toBe('unsupported_grant_type');
    const scope = await form(srv, '/token', { grant_type: 'client_credentials', scope: 'accounts admin' }, { authorization: basic(app) });
    expect(scope.status).toBe(400);
    expect(scope.json.error).toBe('invalid_scope');
    const dup = await form(srv, '/token', { grant_type: 'client_credentials', scope: ['accounts', 'payments'] }, { authorization: basic(app) });
    expect(dup.status).toBe(400);
    expect(dup.json.error).toBe('invalid_request');
    // RFC 6749 §5.2: a grant type the client is not registered for is unauthorized_client, on every path.
    for (const body of [{ grant_type: 'password', username: 'u', password: 'p' }, { grant_type: 'refresh_token', refresh_token: 'x' }] as Array<Record<string, string>>) {
      for (const aliasPath of ['/token', '/v1/token']) {
        const r = await form(srv, aliasPath, body, { authorization: basic(app) });
        expect([body.grant_type, aliasPath, r.status, r.json]).toEqual([
          body.grant_type, aliasPath, 400, { error: 'unauthorized_client', error_description: 'requested grant type is not allowed for this client' },
        ]);
      }
    }
  });

  test('no scope requested gives the client its allowed scopes', async () => {
    const t = await clientCredentialsToken(srv, app);
    expect(t.scope?.split(' ').sort()).toEqual(['accounts', 'payments']);
  });

  test('introspection needs client authentication and the introspection permission', async () => {
    const token = (await clientCredentialsToken(srv, app)).access_token;
    const anon = await form(srv, '/token/introspection', { token });
    expect(anon.status).toBe(401);
    expect(anon.json.error).toBe('invalid_client');
    const wrong = await introspect(srv, { ...rsA, client_secret: 'wrong' }, token);
    expect(wrong.status).toBe(401);
    expect(wrong.json.error).toBe('invalid_client');
    const notAllowed = await introspect(srv, app, token);
    expect(notAllowed.status).toBe(403);
    expect(notAllowed.json.error).toBe('unauthorized_client');
    expect(JSON.stringify(notAllowed.json)).not.toContain('active');
    const notAllowedGarbage = await introspect(srv, app, 'garbage');
    expect(notAllowedGarbage.status).toBe(403);
  });

  test('a garbage token introspects as {"active": false} and nothing else', async () => {
    for (const token of ['garbage', 'a'.repeat(43), 'eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.', '']) {
      const res = await introspect(srv, rsA, token);
      if (token === '') {
        expect(res.status).toBe(400);
        continue;
      }
      expect(res.status).toBe(200);
      expect(res.json).toEqual({ active: false });
    }
  });

  test('a token of tenant A is inactive for a resource server of tenant B', async () => {
    const token = (await clientCredentialsToken(srv, app)).access_token;
    expect((await introspect(srv, rsA, token)).json.active).toBe(true);
    expect((await introspect(srv, rsB, token)).json).toEqual({ active: false });
  });

  test('tenant selection: header, form field, implied, and refused', async () => {
    // multi has two tenants: it must name one
    const none = await form(srv, '/token', { grant_type: 'client_credentials' }, { authorization: basic(multi) });
    expect(none.status).toBe(400);
    expect(none.json.error).toBe('invalid_request');
    const viaV1 = await clientCredentialsToken(srv, multi, {}, { di_fiid: 'bank-b' });
    expect((await introspect(srv, rsB, viaV1.access_token)).json.tenant).toBe('bank-b');
    const viaV2 = await clientCredentialsToken(srv, multi, {}, { institutionId: 'bank-a' });
    expect((await introspect(srv, rsA, viaV2.access_token)).json.tenant).toBe('bank-a');
    const viaForm = await clientCredentialsToken(srv, multi, { tenant: 'bank-b' });
    expect((await introspect(srv, rsB, viaForm.access_token)).json.tenant).toBe('bank-b');
    const implied = await clientCredentialsToken(srv, app);
    expect((await introspect(srv, rsA, implied.access_token)).json.tenant).toBe('bank-a');

    const notAllowed = await form(srv, '/token', { grant_type: 'client_credentials', tenant: 'bank-b' }, { authorization: basic(app) });
    expect(notAllowed.status).toBe(400);
    expect(notAllowed.json.error).toBe('invalid_request');
    const unknownTenant = await form(srv, '/token', { grant_type: 'client_credentials' }, { authorization: basic(app), di_fiid: 'no-such-bank' });
    expect(unknownTenant.json).toEqual(notAllowed.json); // does not reveal whether the tenant exists
    const conflicting = await form(srv, '/token', { grant_type: 'client_credentials', tenant: 'bank-a' }, { authorization: basic(multi), di_fiid: 'bank-b' });
    expect(conflicting.status).toBe(400);
    expect(conflicting.json.error).toBe('invalid_request');
  });

  test('seed V1 and V2 aliases behave like /token and echo the request id', async () => {
    const v1 = await form(srv, '/v1/oauth/token', { grant_type: 'client_credentials' }, {
      authorization: basic(app),
      di_tid: '123e4567-e89b-12d3-a456-426655440000',
      di_fiid: 'bank-a',
      'user-agent': 'iPhone/1.0/abc12345;Nokia3110',
      offering_id: 'demo-app',
      originating_ip: '203.0.113.7',
    });
    expect(v1.status).toBe(200);
    expect(v1.headers.get('di_tid')).toBe('123e4567-e89b-12d3-a456-426655440000');
    expect(v1.headers.get('cache-control')).toBe('no-store');
    expect((await introspect(srv, rsA, v1.json.access_token as string)).json.active).toBe(true);

    const v2 = await form(srv, '/v1/token', { grant_type: 'client_credentials' }, { authorization: basic(app), transactionId: 'tx-42', institutionId: 'bank-a' });
    expect(v2.status).toBe(200);
    expect(v2.headers.get('transactionid')).toBe('tx-42');

    const bad = await form(srv, '/v1/oauth/token', { grant_type: 'client_credentials' }, { authorization: basic({ ...app, client_secret: 'x' }), di_tid: 'abc' });
    expect(bad.status).toBe(401);
    expect(bad.headers.get('di_tid')).toBe('abc');
    // Request ids as callers make them: printable ASCII, up to 255 characters, echoed as sent.
    for (const id of ['abc/def', 'YWJj+ZA==', 'order 42', 'x'.repeat(255)]) {
      const r = await form(srv, '/v1/token', { grant_type: 'client_credentials' }, { authorization: basic(app), institutionId: 'bank-a', transactionId: id });
      expect([id, r.headers.get('transactionid')]).toEqual([id, id]);
    }
    for (const id of ['x'.repeat(256), 'caf\u00e9']) {
      const r = await fetch(`${srv.base}/v1/token`, { method: 'POST', headers: { authorization: basic(app), institutionId: 'bank-a', transactionId: id, 'content-type': 'application/x-www-form-urlencoded' }, body: 'grant_type=client_credentials' });
      expect([id.length, r.status, r.headers.get('transactionid')]).toEqual([id.length, 200, null]);
    }
    const injected = await fetch(`${srv.base}/v1/token`, { method: 'POST', headers: { transactionId: 'a b<script>' } });
    expect(injected.headers.get('transactionid')).toBeNull();
  });

  test('revocation by another client is refused and leaves the token active', async () => {
    const token = (await clientCredentialsToken(srv, app)).access_token;
    const other = await form(srv, '/token/revocation', { token }, { authorization: basic(multi) });
    expect(other.status).toBe(400);
    expect((await introspect(srv, rsA, token)).json.active).toBe(true);
    const unknown = await form(srv, '/token/revocation', { token: 'not-a-token' }, { authorization: basic(app) });
    expect(unknown.status).toBe(200); // RFC 7009 §2.2
  });

  test('a client set to jwt gets RFC 9068 access tokens verifiable with /jwks', async () => {
    const jwtClient = await createClient(srv, { tenants: ['bank-a'], scope: 'accounts', token_format: 'jwt' });
    const t = await clientCredentialsToken(srv, jwtClient);
    expect(decodeProtectedHeader(t.access_token)).toMatchObject({ typ: 'at+jwt', alg: 'ES256' });
    const jwks = createRemoteJWKSet(new URL(`${srv.base}/jwks`));
    const { payload } = await jwtVerify(t.access_token, jwks, {
      issuer: srv.running.app.config.publicUrl,
      audience: srv.running.app.config.publicUrl,
      typ: 'at+jwt',
    });
    expect(payload).toMatchObject({ sub: jwtClient.client_id, client_id: jwtClient.client_id, tenant: 'bank-a', scope: 'accounts', token_type: 'Bearer' });
    expect(payload.exp! - payload.iat!).toBe(1800);
    expect(typeof payload.jti).toBe('string');

    const info = await introspect(srv, rsA, t.access_token);
    expect(info.json).toMatchObject({ active: true, tenant: 'bank-a', client_id: jwtClient.client_id, jti: payload.jti });
    expect((await introspect(srv, rsB, t.access_token)).json).toEqual({ active: false });
    const [h, p] = t.access_token.split('.');
    expect((await introspect(srv, rsA, `${h}.${p}.AAAA`)).json).toEqual({ active: false });

    // RFC 7662 §2.2 / RFC 7009 §2.2: strings shaped as JWTs that this server never issued are
    // invalid tokens, not errors: five parts (an encrypted JWT's), characters outside base64url.
    const header = Buffer.from('{"alg":"dir","enc":"A128GCM"}').toString('base64url');
    const shaped = [`${header}.a.b.c.d`, `${h}.${p}.a+b`, `${h}.${p}.abc=`, `${h}.${p}.AAAA`];
    for (const token of shaped) {
      const inactive = await introspect(srv, rsA, token);
      expect([inactive.status, inactive.json]).toEqual([200, { active: false }]);
      const revoked = await form(srv, '/token/revocation', { token }, { authorization: basic(jwtClient) });
      expect([revoked.status, revoked.json]).toEqual([200, {}]);
    }
    // Its own valid JWT is the one token revocation cannot end (§2.2.1): said so, and it stays active.
    const refused = await form(srv, '/token/revocation', { token: t.access_token }, { authorization: basic(jwtClient) });
    expect([refused.status, refused.json.error]).toEqual([400, 'unsupported_token_type']);
    expect((await introspect(srv, rsA, t.access_token)).json.active).toBe(true);
  });
});
