import { untilNextSecond } from '../../src/oidc/not-before';
import * as oauth from 'openid-client';
import { startTestServer, type TestServer } from '../helpers/server';
import {
  basic, createClient, createTenant, createUser, form, introspect, json, login, passwordLogin, refresh, statements, type ClientCreds,
} from '../helpers/flows';
import { dbLabel, usingPostgres } from '../helpers/env';
import { tokenAudience } from '../../src/config';

const PASSWORD = 'correct horse battery staple';

describe(`end users: password grant and sessions (${dbLabel})`, () => {
  let srv: TestServer;
  let app: ClientCreds; // bank-a, password grant
  let appB: ClientCreds; // bank-b, password grant
  let rs: ClientCreds; // bank-a resource server
  let userId: string;

  beforeAll(async () => {
    srv = await startTestServer();
    await createTenant(srv, 'bank-a');
    await createTenant(srv, 'bank-b');
    app = await createClient(srv, { tenants: ['bank-a'], grant_types: ['password'], scope: 'accounts payments' });
    appB = await createClient(srv, { tenants: ['bank-b'], grant_types: ['password'] });
    rs = await createClient(srv, { tenants: ['bank-a'], introspection: true });
    const user = await createUser(srv, 'bank-a', { email: 'Alice@Example.com', mobile: '+447911123456', username: 'alice', password: PASSWORD });
    userId = user.id;
  });
  afterAll(async () => srv?.close());

  test('openid-client performs the password and refresh grants; introspection shows the user claims', async () => {
    const config = await oauth.discovery(new URL(srv.running.app.config.publicUrl), app.client_id, undefined, oauth.ClientSecretBasic(app.client_secret), {
      execute: [oauth.allowInsecureRequests],
    });
    const tokens = await oauth.genericGrantRequest(config, 'password', { username: 'alice@example.com', password: PASSWORD, scope: 'accounts' });
    expect(tokens.expires_in).toBe(1800);
    expect(tokens.refresh_token).toBeDefined();
    expect(tokens.member_id).toBe(userId);

    const rsConfig = await oauth.discovery(new URL(srv.running.app.config.publicUrl), rs.client_id, undefined, oauth.ClientSecretBasic(rs.client_secret), {
      execute: [oauth.allowInsecureRequests],
    });
    const info = await oauth.tokenIntrospection(rsConfig, tokens.access_token);
    expect(info).toMatchObject({
      active: true, sub: userId, member_id: userId, tenant: 'bank-a', client_id: app.client_id, scope: 'accounts',
      acr: 'urn:openbanking:psd2:ca', amr: ['pwd'],
    });
    expect(info.exp! - info.iat!).toBe(1800);
    expect(Math.abs((info.auth_time as number) - Date.now() / 1000)).toBeLessThan(60);

    const refreshed = await oauth.refreshTokenGrant(config, tokens.refresh_token!);
    expect(refreshed.refresh_token).not.toBe(tokens.refresh_token);
    const info2 = await oauth.tokenIntrospection(rsConfig, refreshed.access_token);
    expect(info2).toMatchObject({ active: true, sub: userId, member_id: userId, tenant: 'bank-a', acr: 'urn:openbanking:psd2:ca', amr: ['pwd'], auth_time: info.auth_time });
  });

  test('email (any case), mobile and username all log in; a user of tenant A cannot log in through tenant B', async () => {
    for (const id of ['alice@example.com', 'ALICE@EXAMPLE.COM', '+447911123456', 'alice', 'Alice']) {
      const res = await passwordLogin(srv, app, id, PASSWORD);
      expect(res.status).toBe(200);
      expect(res.json.member_id).toBe(userId);
    }
    const cross = await passwordLogin(srv, appB, 'alice@example.com', PASSWORD);
    expect(cross.status).toBe(400);
    expect(cross.json.error).toBe('invalid_grant');
    const named = await passwordLogin(srv, app, 'alice@example.com', PASSWORD, { tenant: 'bank-b' });
    expect(named.status).toBe(400);
    expect(named.json.error).toBe('invalid_request');
  });

  test('a resource indicator (RFC 8707): the server’s own is taken, another or two are invalid_target before any password is checked', async () => {
    const audience = tokenAudience(srv.running.app.config);
    const own = await passwordLogin(srv, app, 'alice', PASSWORD, { resource: audience });
    expect(own.status).toBe(200);
    const info = await introspect(srv, rs, own.json.access_token as string);
    expect(info.json).toMatchObject({ active: true, sub: userId, aud: audience });
    const verify = jest.spyOn(srv.running.app.services.hasher, 'verify');
    try {
      const other = await passwordLogin(srv, app, 'alice', PASSWORD, { resource: 'https://payments.elsewhere.example' });
      expect(other.status).toBe(400);
      expect(other.json).toEqual({ error: 'invalid_target', error_description: 'resource indicator is missing, or unknown' });
      const two = await form(srv, '/token', { grant_type: 'password', username: 'alice', password: PASSWORD, resource: [audience, audience] }, { authorization: basic(app) });
      expect(two.status).toBe(400);
      expect(two.json.error).toBe('invalid_target');
      expect((await passwordLogin(srv, app, 'alice', PASSWORD, { resource: 'not a uri' })).json).toEqual({ error: 'invalid_target', error_description: 'resource indicator must be an absolute URI' });
      expect((await passwordLogin(srv, app, 'alice', PASSWORD, { resource: `${audience}#x` })).json).toEqual({ error: 'invalid_target', error_description: 'resource indicator must not contain a fragment component' });
      expect(verify).not.toHaveBeenCalled();
    } finally {
      verify.mockRestore();
    }
  });

  test('a refresh naming a resource that is not ours is refused before its token is rotated: the retry works, the session lives', async () => {
    const audience = tokenAudience(srv.running.app.config);
    const first = await login(srv, app, 'alice', PASSWORD);
    const refreshWith = (resource: string | string[]) =>
      form(srv, '/token', { grant_type: 'refresh_token', refresh_token: first.refresh_token, resource }, { authorization: basic(app) });
    for (const [resource, description] of [
      ['https://payments.elsewhere.example', 'resource indicator is missing, or unknown'],
      [[audience, 'https://payments.elsewhere.example'], 'only a single resource indicator value must be requested/resolved during Access Token Request'],
      [[audience, audience], 'only a single resource indicator value must be requested/resolved during Access Token Request'],
      ['not a uri', 'resource indicator must be an absolute URI'],
      [`${audience}#part`, 'resource indicator must not contain a fragment component'],
    ] as const) {
      const refused = await refreshWith(resource as string | string[]);
      expect({ resource, status: refused.status, json: refused.json }).toEqual({ resource, status: 400, json: { error: 'invalid_target', error_description: description } });
    }
    // Nothing was consumed: the refresh token still works once, and the session's tokens are alive.
    expect((await introspect(srv, rs, first.access_token)).json.active).toBe(true);
    const ok = await refreshWith(audience);
    expect(ok.status).toBe(200);
    expect((await introspect(srv, rs, ok.json.access_token as string)).json).toMatchObject({ active: true, sub: userId, aud: audience });
    expect((await refresh(srv, app, ok.json.refresh_token as string)).status).toBe(200);
  });

  test("a refresh naming a tenant other than its session's is refused as the other grants refuse it, before rotation", async () => {
    const multi = await createClient(srv, { tenants: ['bank-a', 'bank-b'], grant_types: ['password'], scope: 'accounts' });
    const first = await login(srv, multi, 'alice', PASSWORD, { tenant: 'bank-a' });
    const refreshWith = (body: Record<string, string>, headers: Record<string, string> = {}) =>
      form(srv, '/token', { grant_type: 'refresh_token', refresh_token: first.refresh_token, ...body }, { authorization: basic(multi), ...headers });
    for (const [body, headers, description] of [
      [{}, { di_fiid: 'bank-b' }, 'the client is not allowed for this tenant'],
      [{}, { institutionId: 'bank-b' }, 'the client is not allowed for this tenant'],
      [{ tenant: 'no-such-bank' }, {}, 'the client is not allowed for this tenant'],
      [{}, { di_fiid: 'bank-a', institutionId: 'bank-b' }, 'the request names more than one tenant'],
    ] as const) {
      const refused = await refreshWith(body, headers);
      expect({ body, headers, status: refused.status, json: refused.json }).toEqual({ body, headers, status: 400, json: { error: 'invalid_request', error_description: description } });
    }
    const ok = await refreshWith({}, { di_fiid: 'bank-a' }); // its own tenant, named: as before, and the token was not used up
    expect(ok.status).toBe(200);
    expect((await introspect(srv, rs, ok.json.access_token as string)).json).toMatchObject({ active: true, tenant: 'bank-a' });
  });

  test('a refresh while its tenant is disabled is refused without using the token up, and once enabled again the session is over', async () => {
    await createTenant(srv, 'bank-s');
    const c = await createClient(srv, { tenants: ['bank-s'], grant_types: ['password', 'refresh_token'], scope: 'accounts' });
    const sam = await createUser(srv, 'bank-s', { username: 'sam', password: PASSWORD });
    const first = await login(srv, c, 'sam', PASSWORD);
    const tenants = srv.running.app.services.tenants;
    const setStatus = async (status: 'active' | 'disabled') => {
      const t = await tenants.find('bank-s');
      expect(await tenants.update('bank-s', t!.version, { status })).toBeDefined();
    };
    await setStatus('disabled');
    const refused = await refresh(srv, c, first.refresh_token);
    expect([refused.status, refused.json]).toEqual([400, { error: 'invalid_grant', error_description: 'grant request is invalid' }]);
    const stored = await srv.running.app.database.knex('oidc_payloads').where({ type: 'RefreshToken', account_id: sam.id }).select('consumed_at');
    expect(stored.length).toBeGreaterThan(0);
    expect(stored.every((r: { consumed_at: unknown }) => r.consumed_at === null)).toBe(true);
    await untilNextSecond(); // as the admin route enables (src/oidc/not-before.ts)
    await setStatus('active');
    // Disabling ended every session of the tenant for good (tests/integration/disable-revokes.test.ts).
    expect((await refresh(srv, c, first.refresh_token)).status).toBe(400);
    const again = await login(srv, c, 'sam', PASSWORD);
    expect((await refresh(srv, c, again.refresh_token)).status).toBe(200);
  });

  test('a refresh asking for a scope the client has since lost is invalid_scope, and the token is not used up', async () => {
    const c = await createClient(srv, { tenants: ['bank-a'], grant_types: ['password', 'refresh_token'], scope: 'accounts payments' });
    const first = await login(srv, c, 'alice', PASSWORD, { scope: 'accounts payments' });
    await srv.running.app.database.knex('clients').where({ id: c.client_id }).update({ scope: 'accounts' });
    srv.running.app.services.caches.changed('client', c.client_id); // a write behind the repository's back must say so
    const refreshWith = (scope: string) => form(srv, '/token', { grant_type: 'refresh_token', refresh_token: first.refresh_token, scope }, { authorization: basic(c) });
    const refused = await refreshWith('payments');
    expect([refused.status, refused.json]).toEqual([400, { error: 'invalid_scope', error_description: 'requested scope is not allowed', scope: 'payments' }]);
    const ok = await refreshWith('accounts');
    expect([ok.status, ok.json.scope]).toEqual([200, 'accounts']);
  });

  test('unknown user and wrong password give the same reply', async () => {
    const unknown = await passwordLogin(srv, app, 'nobody@example.com', PASSWORD);
    const wrong = await passwordLogin(srv, app, 'alice@example.com', `${PASSWORD}!`);
    const garbage = await passwordLogin(srv, app, '!!!', PASSWORD);
    for (const r of [unknown, wrong, garbage]) {
      expect(r.status).toBe(400);
      expect(r.json).toEqual(unknown.json);
      expect(r.headers.get('cache-control')).toBe('no-store');
    }
    expect(unknown.json).toEqual({ error: 'invalid_grant', error_description: 'invalid username or password' });
    await login(srv, app, 'alice', PASSWORD); // resets the failure count
  });

  test('a warm login: throttle point and attempt taken; then the session stored with its tokens and the login closed (attempt reset, point returned) in one statement', async () => {
    expect((await passwordLogin(srv, app, 'alice', PASSWORD)).status).toBe(200); // the client and tenant are cached now
    const seen = await statements(srv, async () => expect((await passwordLogin(srv, app, 'alice', PASSWORD)).status).toBe(200));
    const [begin, ...rest] = seen.filter((q) => !/^(BEGIN|COMMIT)\b/i.test(q.sql.trim()));
    expect(begin!.sql).toMatch(/INSERT INTO rate_limits[\s\S]*UPDATE users/);
    const closes = /UPDATE rate_limits[\s\S]*UPDATE users SET failed_login_count = 0, failed_login_epoch = failed_login_epoch \+ 1, lockout_count = 0/;
    let inserts = rest;
    if (usingPostgres) {
      // One statement, one commit: the login is closed only if its session is stored.
      expect(rest).toHaveLength(1);
      expect(rest[0]!.sql).toMatch(closes);
    } else {
      // The embedded database binds no arrays: the same two statements, in one transaction.
      expect(rest.map((q) => closes.test(q.sql))).toEqual([false, true]);
      inserts = rest.slice(0, 1);
    }
    // The rows each insert wrote, by type: the prepared INSERT binds one array per column (type
    // first); knex's binds each row's columns in name order (type sixth of eight).
    const types = inserts.map((q) => {
      expect(q.sql).toMatch(/^\s*(WITH [\s\S]*)?insert into "?oidc_payloads"?/i);
      const b = q.bindings ?? [];
      return (Array.isArray(b[0]) ? (b[0] as string[]) : b.filter((_, i) => i % 8 === 5)).map(String).sort().join('+');
    });
    // One INSERT: on PostgreSQL, too, the access token joins its session's statement rather than
    // the asynchronously committing pool's (a commit happens there anyway). This relies on the
    // Grant reaching the adapter first, which oidc-provider's access-token save (more awaits)
    // gives today; were that to change, the token would be stored in a statement of its own,
    // correct but slower, and this would say so.
    expect(types).toEqual(['AccessToken+Grant+RefreshToken']);
  });

  test('two passwords equal in their first 72 bytes: only the right one logs in', async () => {
    const prefix = 'x'.repeat(72);
    await createUser(srv, 'bank-a', { username: 'long-pw', password: `${prefix}right-suffix` });
    expect((await passwordLogin(srv, app, 'long-pw', `${prefix}wrong-suffix`)).status).toBe(400);
    expect((await passwordLogin(srv, app, 'long-pw', prefix)).status).toBe(400);
    expect((await passwordLogin(srv, app, 'long-pw', `${prefix}right-suffix`)).status).toBe(200);
  });

  test('passwords are NFC-normalised: the same passphrase in another Unicode form logs in', async () => {
    const composed = 'caf\u00e9 au lait mornings';
    await createUser(srv, 'bank-a', { username: 'unicode', password: composed });
    expect((await passwordLogin(srv, app, 'unicode', 'cafe\u0301 au lait mornings')).status).toBe(200);
  });

  test('20 parallel refreshes with one refresh token: exactly one pair, zero 5xx; reuse afterwards ends the session', async () => {
    const t = await login(srv, app, 'alice', PASSWORD);
    const results = await Promise.all(Array.from({ length: 20 }, () => refresh(srv, app, t.refresh_token)));
    const ok = results.filter((r) => r.status === 200);
    expect(ok).toHaveLength(1);
    expect(results.filter((r) => r.status >= 500)).toHaveLength(0);
    for (const r of results.filter((x) => x.status !== 200)) {
      expect(r.status).toBe(400);
      expect(r.json.error).toBe('invalid_grant');
    }
    const winner = ok[0]!.json as { access_token: string; refresh_token: string };
    expect(winner.refresh_token).not.toBe(t.refresh_token);
    expect(winner).toHaveProperty('member_id');
    // The other 19 were uses of a used refresh token: a stolen token is indistinguishable from a
    // racing client, so the session ended (RFC 9700 §4.14.2), the winner's tokens with it.
    expect((await introspect(srv, rs, winner.access_token)).json.active).toBe(false);

    // the rotated-out token used again: the whole session is revoked
    const reuse = await refresh(srv, app, t.refresh_token);
    expect(reuse.json.error).toBe('invalid_grant');
    expect((await introspect(srv, rs, winner.access_token)).json.active).toBe(false);
    expect((await refresh(srv, app, winner.refresh_token)).json.error).toBe('invalid_grant');
  });

  test('one refresh, then reuse of the old token: the new pair dies with the session', async () => {
    const t = await login(srv, app, 'alice', PASSWORD);
    const r1 = await refresh(srv, app, t.refresh_token);
    expect(r1.status).toBe(200);
    const fresh = r1.json as { access_token: string; refresh_token: string };
    expect((await introspect(srv, rs, fresh.access_token)).json.active).toBe(true);
    expect((await refresh(srv, app, t.refresh_token)).json.error).toBe('invalid_grant');
    expect((await introspect(srv, rs, fresh.access_token)).json.active).toBe(false);
    expect((await refresh(srv, app, fresh.refresh_token)).json.error).toBe('invalid_grant');
  });

  test('sessions: many per user, listed, and DELETE makes its tokens inactive at once', async () => {
    const s1 = await login(srv, app, 'alice', PASSWORD);
    const s2 = await login(srv, app, 'alice', PASSWORD);
    const list = await json(srv, 'GET', '/sessions', undefined, { authorization: `Bearer ${s1.access_token}` });
    expect(list.status).toBe(200);
    const sessions = list.json.sessions as Array<{ id: string; current: boolean; clientId: string }>;
    expect(sessions.length).toBeGreaterThanOrEqual(2);
    const current = sessions.find((s) => s.current)!;
    expect(current.clientId).toBe(app.client_id);
    const other = sessions.find((s) => !s.current)!;

    // s2's session is one of the others; end the one that s2's token belongs to
    const s2Sessions = (await json(srv, 'GET', '/sessions', undefined, { authorization: `Bearer ${s2.access_token}` })).json.sessions as Array<{ id: string; current: boolean }>;
    const s2Id = s2Sessions.find((s) => s.current)!.id;
    expect(s2Id).not.toBe(current.id);
    const del = await json(srv, 'DELETE', `/sessions/${s2Id}`, undefined, { authorization: `Bearer ${s1.access_token}` });
    expect(del.status).toBe(204);
    expect((await introspect(srv, rs, s2.access_token)).json.active).toBe(false);
    expect((await refresh(srv, app, s2.refresh_token)).json.error).toBe('invalid_grant');
    expect((await json(srv, 'GET', '/users/me', undefined, { authorization: `Bearer ${s2.access_token}` })).status).toBe(401);
    expect((await introspect(srv, rs, s1.access_token)).json.active).toBe(true);

    // another user's session, or nonsense, is 404
    const bob = await createUser(srv, 'bank-a', { username: 'bob-sessions', password: PASSWORD });
    const bobTokens = await login(srv, app, 'bob-sessions', PASSWORD);
    expect(bob.id).toBeDefined();
    expect((await json(srv, 'DELETE', `/sessions/${other.id}`, undefined, { authorization: `Bearer ${bobTokens.access_token}` })).status).toBe(404);
    expect((await json(srv, 'DELETE', '/sessions/..%2F..', undefined, { authorization: `Bearer ${s1.access_token}` })).status).toBe(404);
  });

  test('revoking a refresh token ends its session', async () => {
    const t = await login(srv, app, 'alice', PASSWORD);
    const res = await form(srv, '/token/revocation', { token: t.refresh_token, token_type_hint: 'refresh_token' }, { authorization: basic(app) });
    expect(res.status).toBe(200);
    expect((await refresh(srv, app, t.refresh_token)).json.error).toBe('invalid_grant');
    expect((await introspect(srv, rs, t.access_token)).json.active).toBe(false);
  });

  test("revoking an access token ends that token alone: the session, its refresh token and its other access tokens stand", async () => {
    const t = await login(srv, app, 'alice', PASSWORD);
    let refreshToken = t.refresh_token;
    for (const hint of [{}, { token_type_hint: 'access_token' }, { token_type_hint: 'refresh_token' }] as Array<Record<string, string>>) {
      const fresh = (await refresh(srv, app, refreshToken)).json as { access_token: string; refresh_token: string };
      refreshToken = fresh.refresh_token;
      const res = await form(srv, '/token/revocation', { token: fresh.access_token, ...hint }, { authorization: basic(app) });
      expect(res.status).toBe(200);
      expect((await introspect(srv, rs, fresh.access_token)).json).toEqual({ active: false });
      expect((await json(srv, 'GET', '/users/me', undefined, { authorization: `Bearer ${fresh.access_token}` })).status).toBe(401);
    }
    // The session's first access token still works, and its latest refresh token still refreshes.
    expect((await introspect(srv, rs, t.access_token)).json.active).toBe(true);
    expect((await refresh(srv, app, refreshToken)).status).toBe(200);
  });

  test('a session past its duration cannot refresh', async () => {
    const t = await login(srv, app, 'alice', PASSWORD);
    const { knex } = srv.running.app.database;
    // Move the session's end into the past (the clock of the stored artifacts).
    const past = Math.floor(Date.now() / 1000) - 10;
    const grantRow = await knex('oidc_payloads').where({ type: 'RefreshToken' }).orderBy('expires_at', 'desc').first();
    const grantId = (typeof grantRow.payload === 'string' ? JSON.parse(grantRow.payload) : grantRow.payload).grantId as string;
    for (const type of ['Grant', 'RefreshToken']) {
      const where = type === 'Grant' ? { type, id: grantId } : { type, grant_id: grantId };
      const rows = await knex('oidc_payloads').where(where);
      for (const r of rows) {
        const payload = typeof r.payload === 'string' ? JSON.parse(r.payload) : r.payload;
        await knex('oidc_payloads').where({ type, id: r.id }).update({ payload: JSON.stringify({ ...payload, exp: past }), expires_at: new Date(past * 1000) });
      }
    }
    const res = await refresh(srv, app, t.refresh_token);
    expect(res.status).toBe(400);
    expect(res.json.error).toBe('invalid_grant');
    expect((await introspect(srv, rs, t.access_token)).json.active).toBe(false);
  });

  test('access tokens and /users/me: user token works, client token is 403, none is 401', async () => {
    const t = await login(srv, app, 'alice', PASSWORD);
    const me = await json(srv, 'GET', '/users/me', undefined, { authorization: `Bearer ${t.access_token}` });
    expect(me.status).toBe(200);
    expect(me.json).toMatchObject({ id: userId, tenant: 'bank-a', email: 'alice@example.com', mobile: '+447911123456', username: 'alice', role: 'root' });
    expect(JSON.stringify(me.json)).not.toMatch(/password|hash/i);
    const cc = await createClient(srv, { tenants: ['bank-a'] });
    const ccToken = (await form(srv, '/token', { grant_type: 'client_credentials' }, { authorization: basic(cc) })).json.access_token as string;
    expect((await json(srv, 'GET', '/users/me', undefined, { authorization: `Bearer ${ccToken}` })).status).toBe(403);
    const none = await json(srv, 'GET', '/users/me');
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toMatch(/^Bearer/);
    expect(none.json).toEqual({ message: 'Missing or invalid access token', code: 'UNAUTHORIZED' });
  });
});
