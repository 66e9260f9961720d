import { epochSecond, issuedBeforeDisabling } from '../../src/oidc/not-before';
import { startTestServer, type TestServer } from '../helpers/server';
import { basic, bearer, createClient, form, introspect, json, lastCode, login, outbox, passwordLogin, refresh, type ClientCreds } from '../helpers/flows';
import { dbLabel, usingPostgres } from '../helpers/env';
import { newDevice } from '../helpers/device';

const PASSWORD = 'a perfectly decent passphrase';
// Admin replies are read loosely here; their shapes are asserted field by field.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Reply = { status: number; headers: Headers; json: any };

const ADMIN = { client_id: 'platform-admin', client_secret: 'platform-admin-secret-for-tests-0123456789' };

describe(`admin API (${dbLabel})`, () => {
  let srv: TestServer;
  let token: string;

  const adminToken = async (c: { client_id: string; client_secret: string }) =>
    (await form(srv, '/token', { grant_type: 'client_credentials', scope: 'admin' }, { authorization: basic(c) })).json.access_token as string;
  const api = (method: string, path: string, body?: unknown, headers: Record<string, string> = {}, t = token): Promise<Reply> =>
    json(srv, method, `/admin${path}`, body, bearer(t, headers));

  beforeAll(async () => {
    srv = await startTestServer({ config: { adminClientId: ADMIN.client_id, adminClientSecret: ADMIN.client_secret } });
    token = await adminToken(ADMIN);
  });
  afterAll(async () => srv?.close());

  test('the whole lifecycle: tenant → policy → client → user → sessions → audit', async () => {
    const t = await api('POST', '/tenants', { id: 'acme', name: 'Acme Bank', mode: 'sandbox' }, { 'idempotency-ref': 't-acme' });
    expect(t.status).toBe(201);
    expect(t.json).toMatchObject({ id: 'acme', name: 'Acme Bank', mode: 'sandbox', status: 'active' });
    expect((await api('POST', '/tenants', { id: 'acme', name: 'Acme Bank', mode: 'sandbox' }, { 'idempotency-ref': 't-acme' })).status).toBe(201); // replay
    expect((await api('POST', '/tenants', { id: 'acme' })).status).toBe(409);
    expect((await api('GET', '/tenants')).json.items).toEqual(expect.arrayContaining([expect.objectContaining({ id: 'acme' })]));

    const pol = await api('GET', '/tenants/acme/policy');
    expect(pol.json.policy).toMatchObject({ accessTokenTtlSeconds: 1800, sessionDurationSeconds: 36000 });
    const etag = pol.headers.get('etag')!;
    expect((await api('PATCH', '/tenants/acme/policy', { accessTokenTtlSeconds: 600 })).status).toBe(428);
    expect((await api('PATCH', '/tenants/acme/policy', { accessTokenTtlSeconds: 5 }, { 'if-match': etag })).status).toBe(400);
    const set = await api('PATCH', '/tenants/acme/policy', { accessTokenTtlSeconds: 600, mfaAtLogin: false }, { 'if-match': etag });
    expect(set.status).toBe(200);
    expect(set.json.policy.accessTokenTtlSeconds).toBe(600);

    const c = await api('POST', '/tenants/acme/clients', { client_name: 'Acme app', grant_types: ['password', 'client_credentials'], scope: 'accounts', token_endpoint_auth_method: 'client_secret_basic' });
    expect(c.status).toBe(201);
    expect(c.json).toMatchObject({ client_name: 'Acme app', tenants: ['acme'], token_format: 'opaque', introspection: false, disabled: false });
    const app: ClientCreds = { client_id: c.json.client_id, client_secret: c.json.client_secret, api_key: c.json.api_key };
    expect((await api('GET', `/tenants/acme/clients/${app.client_id}`)).json).not.toHaveProperty('client_secret');
    const cc = await form(srv, '/token', { grant_type: 'client_credentials' }, { authorization: basic(app) });
    expect(cc.json.expires_in).toBe(600); // the policy, live

    const u = await api('POST', '/tenants/acme/users', { email: 'ops@acme.test', mobile: '+447911123457', password: PASSWORD, role: 'authorised' });
    expect(u.status).toBe(201);
    expect(u.json).toMatchObject({ email: 'ops@acme.test', role: 'authorised', tenant: 'acme' });
    expect((await api('GET', '/tenants/acme/users?q=ops')).json.items).toHaveLength(1);
    const own = await login(srv, app, 'ops@acme.test', PASSWORD);
    expect(own.expires_in).toBe(600);
    const sessions = await api('GET', `/tenants/acme/users/${u.json.id}/sessions`);
    expect(sessions.json.sessions).toHaveLength(1);

    // admin login for back-end use: marked with act, audited
    const rs = await createClient(srv, { tenants: ['acme'], introspection: true });
    const adminLogin = await api('POST', `/tenants/acme/users/${u.json.id}/login`, { client_id: app.client_id });
    expect(adminLogin.status).toBe(200);
    const info = await introspect(srv, rs, adminLogin.json.access_token);
    expect(info.json).toMatchObject({ active: true, sub: u.json.id, act: { sub: ADMIN.client_id }, amr: [] });

    // lock: sessions end, logins fail generically; unlock
    expect((await api('POST', `/tenants/acme/users/${u.json.id}/lock`)).json.status).toBe('locked');
    expect((await introspect(srv, rs, own.access_token)).json.active).toBe(false);
    expect((await api('GET', `/tenants/acme/users/${u.json.id}/sessions`)).json.sessions).toHaveLength(0);
    expect((await passwordLogin(srv, app, 'ops@acme.test', PASSWORD)).json.error).toBe('invalid_grant');
    expect((await api('DELETE', `/tenants/acme/users/${u.json.id}/lock`)).json.status).toBe('active');
    const again = await login(srv, app, 'ops@acme.test', PASSWORD);
    const s2 = (await api('GET', `/tenants/acme/users/${u.json.id}/sessions`)).json.sessions as Array<{ id: string }>;
    expect((await api('DELETE', `/tenants/acme/users/${u.json.id}/sessions/${s2[0]!.id}`)).status).toBe(204);
    expect((await introspect(srv, rs, again.access_token)).json.active).toBe(false);
    expect((await api('DELETE', `/tenants/acme/users/${u.json.id}/factors`)).status).toBe(204);

    const audit = await api('GET', '/audit?tenant=acme');
    const types = (audit.json.items as Array<{ type: string; actor: string }>).map((e) => e.type);
    expect(types).toEqual(expect.arrayContaining(['tenant.created', 'policy.updated', 'client.created', 'user.created', 'user.admin_login', 'user.locked', 'user.unlocked', 'session.revoked', 'factor.reset']));
    expect(JSON.stringify(audit.json)).not.toContain(app.client_secret);
    expect(JSON.stringify(audit.json)).not.toContain(PASSWORD);
    const policyEntry = (audit.json.items as Array<{ type: string; actor: string; details: Record<string, unknown> }>).find((e) => e.type === 'policy.updated')!;
    expect(policyEntry).toMatchObject({ actor: ADMIN.client_id, details: { before: {}, after: { accessTokenTtlSeconds: 600, mfaAtLogin: false } } });
    expect((await api('GET', '/audit?type=user.locked')).json.items).toHaveLength(1);
    const failed = (await api('GET', '/audit?tenant=acme&type=user.login_failed')).json.items as Array<{ target: string; details: { reason: string } }>;
    expect(failed.some((e) => e.target === u.json.id && e.details.reason === 'locked')).toBe(true);
    expect(JSON.stringify(failed)).not.toContain(PASSWORD);
    expect((await api('GET', '/audit?since=2999-01-01T00:00:00Z')).json.items).toHaveLength(0);
    // Times the database cannot compare (year 0, or 10000 once the offset is applied) are a 400 naming `since`.
    for (const since of ['0000-01-01T00:00:00Z', '9999-12-31T23:59:59-23:59']) {
      const r = await api('GET', `/audit?since=${encodeURIComponent(since)}`);
      expect([since, r.status, r.json.syntaxErrors?.invalidFields?.[0]?.fieldName]).toEqual([since, 400, 'since']);
    }
  });

  test('a tenant admin of A gets 404 on everything of B, and no platform powers', async () => {
    await api('POST', '/tenants', { id: 'bank-a' });
    await api('POST', '/tenants', { id: 'bank-b' });
    const b = await api('POST', '/tenants/bank-b/clients', { grant_types: ['password'] });
    const bu = await api('POST', '/tenants/bank-b/users', { username: 'bee', password: PASSWORD });
    const adminA = await createClient(srv, { tenants: ['bank-a'], admin: true });
    const ta = await adminToken(adminA);
    for (const path of [
      '/tenants/bank-b', '/tenants/bank-b/policy', '/tenants/bank-b/clients', `/tenants/bank-b/clients/${b.json.client_id}`,
      '/tenants/bank-b/users', `/tenants/bank-b/users/${bu.json.id}`, `/tenants/bank-b/users/${bu.json.id}/sessions`, '/audit?tenant=bank-b',
      '/tenants/nonexistent',
    ]) {
      const r = await api('GET', path, undefined, {}, ta);
      expect([path, r.status]).toEqual([path, 404]);
    }
    expect((await api('POST', `/tenants/bank-b/users/${bu.json.id}/lock`, undefined, {}, ta)).status).toBe(404);
    expect((await api('POST', '/tenants/bank-a/clients', { tenants: ['bank-b'] }, {}, ta)).status).toBe(404);
    expect((await api('GET', `/tenants/bank-a/clients/${b.json.client_id}`, undefined, {}, ta)).status).toBe(404);
    expect((await api('GET', '/tenants/bank-a', undefined, {}, ta)).status).toBe(200);
    expect((await api('GET', '/tenants', undefined, {}, ta)).json.items.map((t: { id: string }) => t.id)).toEqual(['bank-a']);
    expect((await api('POST', '/tenants', { id: 'bank-c' }, {}, ta)).status).toBe(403);
    expect((await api('GET', '/keys', undefined, {}, ta)).status).toBe(403);
    const audit = (await api('GET', '/audit', undefined, {}, ta)).json.items as Array<{ tenant: string }>;
    expect(audit.every((e) => e.tenant === 'bank-a')).toBe(true);
  });

  test('a tenant admin may read a client it shares with another tenant, never change it', async () => {
    await api('POST', '/tenants', { id: 'share-a' });
    await api('POST', '/tenants', { id: 'share-b' });
    const shared = await api('POST', '/tenants/share-a/clients', { tenants: ['share-b'], grant_types: ['client_credentials'], scope: 'accounts' });
    expect(shared.json.tenants).toEqual(['share-a', 'share-b']);
    const own = await api('POST', '/tenants/share-a/clients', { grant_types: ['client_credentials'] });
    const adminA = await createClient(srv, { tenants: ['share-a'], admin: true });
    const ta = await adminToken(adminA);
    const id = shared.json.client_id as string;

    const seen = await api('GET', `/tenants/share-a/clients/${id}`, undefined, {}, ta);
    expect(seen.status).toBe(200);
    expect(seen.json.tenants).toEqual(['share-a']); // share-b is not named to share-a's admin
    const listed = (await api('GET', '/tenants/share-a/clients', undefined, {}, ta)).json.items as Array<{ client_id: string; tenants: string[] }>;
    expect(listed.find((c) => c.client_id === id)?.tenants).toEqual(['share-a']);

    // A new secret, scope or introspection right would work in share-b too: refused, nothing changed.
    const rotate = await api('POST', `/tenants/share-a/clients/${id}/secret`, { overlap_seconds: 0 }, {}, ta);
    expect(rotate.status).toBe(403);
    expect(rotate.json).toEqual({ message: expect.any(String), code: 'FORBIDDEN' });
    expect(rotate.json).not.toHaveProperty('client_secret');
    for (const change of [{ introspection: true }, { disabled: true }, { scope: 'accounts payments' }]) {
      const r = await api('PATCH', `/tenants/share-a/clients/${id}`, change, { 'if-match': seen.headers.get('etag')! }, ta);
      expect([change, r.status]).toEqual([change, 403]);
    }
    const after = await api('GET', `/tenants/share-a/clients/${id}`);
    expect(after.json).toMatchObject({ tenants: ['share-a', 'share-b'], introspection: false, disabled: false, scope: 'accounts' });
    const creds = { client_id: id, client_secret: shared.json.client_secret as string };
    expect((await form(srv, '/token', { grant_type: 'client_credentials', tenant: 'share-b' }, { authorization: basic(creds) })).status).toBe(200);
    const audit = (await api('GET', '/audit?tenant=share-a')).json.items as Array<{ type: string; target: string }>;
    expect(audit.filter((e) => e.target === id).map((e) => e.type)).toEqual(['client.created']);

    // Its own tenant's clients it changes as before; a platform admin changes the shared one.
    const ownEtag = (await api('GET', `/tenants/share-a/clients/${own.json.client_id}`, undefined, {}, ta)).headers.get('etag')!;
    expect((await api('PATCH', `/tenants/share-a/clients/${own.json.client_id}`, { disabled: true }, { 'if-match': ownEtag }, ta)).status).toBe(200);
    expect((await api('POST', `/tenants/share-a/clients/${own.json.client_id}/secret`, { overlap_seconds: 0 }, {}, ta)).status).toBe(200);
    expect((await api('POST', `/tenants/share-a/clients/${id}/secret`, { overlap_seconds: 0 })).status).toBe(200);

    // Each tenant's log records what happened to the client, naming that tenant only.
    for (const tenant of ['share-a', 'share-b']) {
      const log = (await api('GET', `/audit?tenant=${tenant}`)).json.items as Array<{ type: string; target: string; details: { after?: { tenants: string[] } } }>;
      const mine = log.filter((e) => e.target === id);
      expect([tenant, mine.map((e) => e.type)]).toEqual([tenant, ['client.secret_rotated', 'client.created']]);
      expect(mine[1]!.details.after!.tenants).toEqual([tenant]);
    }

    // Another admin client of its own tenant is the platform's to re-key, as to change.
    const otherAdmin = await createClient(srv, { tenants: ['share-a'], admin: true });
    expect((await api('POST', `/tenants/share-a/clients/${otherAdmin.client_id}/secret`, { overlap_seconds: 0 }, {}, ta)).status).toBe(403);
    expect((await adminToken(otherAdmin)).length).toBeGreaterThan(0); // its secret unchanged
  });

  test("an admin's login on a user's behalf: marked act, never refreshed, never the user's factors or SCA", async () => {
    await api('POST', '/tenants', { id: 'act-bank', mode: 'sandbox' });
    const app = await api('POST', '/tenants/act-bank/clients', { grant_types: ['password'], scope: 'accounts' });
    const creds: ClientCreds = { client_id: app.json.client_id, client_secret: app.json.client_secret, api_key: app.json.api_key };
    const u = await api('POST', '/tenants/act-bank/users', { email: 'act@bank.test', mobile: '+447911123499', password: PASSWORD });
    const byAdmin = await api('POST', `/tenants/act-bank/users/${u.json.id}/login`, { client_id: creds.client_id });
    expect(byAdmin.status).toBe(200);
    expect(byAdmin.json).not.toHaveProperty('refresh_token'); // a refresh would shed `act`
    const t = byAdmin.json.access_token as string;

    expect((await json(srv, 'GET', '/users/me', undefined, bearer(t))).status).toBe(200);
    for (const [method, path, body] of [
      ['POST', '/authentication_factors/otp/SMS', undefined],
      ['POST', '/authentication_factors/otp/SMS/verify', { verificationCode: '123456' }],
      ['POST', '/authentication_factors/push/AUTHY', { publicKey: { kty: 'EC', crv: 'P-256', x: 'x', y: 'y' } }],
      ['DELETE', '/authentication_factors/push/AUTHY', undefined],
      ['POST', '/stepup/challenges/otp/SMS', undefined],
      ['POST', '/stepup/challenges/otp/SMS/verify', { verificationCode: '123456' }],
      ['POST', '/stepup/challenges/push/AUTHY', undefined],
    ] as const) {
      const r = await json(srv, method, path, body, bearer(t));
      expect([path, r.status, r.json.code]).toEqual([path, 403, 'ACTOR_TOKEN']);
    }

    // The user's own login does all of it.
    const own = await login(srv, creds, 'act@bank.test', PASSWORD);
    expect(own.refresh_token).toBeDefined();
    expect((await json(srv, 'POST', '/authentication_factors/otp/SMS', undefined, bearer(own.access_token))).status).toBe(204);
  });

  test('a user id that is not a UUID is a 404 on every user route, never a database error', async () => {
    await api('POST', '/tenants', { id: 'bank-u' });
    // Each has the length and characters of a UUID, or nearly; PostgreSQL refuses to compare them with one.
    for (const id of ['-'.repeat(36), 'aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaa-', '0'.repeat(36), 'zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz', 'x']) {
      for (const [method, path] of [
        ['GET', `/tenants/bank-u/users/${id}`],
        ['PATCH', `/tenants/bank-u/users/${id}`],
        ['DELETE', `/tenants/bank-u/users/${id}`],
        ['GET', `/tenants/bank-u/users/${id}/sessions`],
        ['POST', `/tenants/bank-u/users/${id}/lock`],
        ['DELETE', `/tenants/bank-u/users/${id}/lock`],
        ['DELETE', `/tenants/bank-u/users/${id}/factors`],
        ['POST', `/tenants/bank-u/users/${id}/login`],
        ['DELETE', `/tenants/bank-u/users/${id}/sessions`],
        ['DELETE', `/tenants/bank-u/users/${id}/sessions/some-session`],
      ] as const) {
        const r = await api(method, path);
        expect([method, path, r.status, r.json?.code]).toEqual([method, path, 404, 'NOT_FOUND']);
      }
      // The user list is paged by id: another value there is a 400 in the documented shape.
      const page = await api('GET', `/tenants/bank-u/users?after=${encodeURIComponent(id)}`);
      expect([id, page.status, page.json?.syntaxErrors?.invalidFields?.[0]?.fieldName]).toEqual([id, 400, 'after']);
    }
  });

  test('removing a lock ends the run of brute-force lockouts: the next lock is the base period again', async () => {
    await api('POST', '/tenants', { id: 'lockrun', name: 'Lock run', mode: 'sandbox' });
    const app = await createClient(srv, { tenants: ['lockrun'], grant_types: ['password'] });
    const u = await api('POST', '/tenants/lockrun/users', { username: 'repeat', password: PASSWORD });
    expect(u.status).toBe(201);
    const knex = srv.running.app.database.knex;
    const lockFor = async () => {
      for (let i = 0; i < 10; i += 1) await passwordLogin(srv, app, 'repeat', `wrong ${i}`); // the default threshold
      const row = await knex('users').where({ id: u.json.id }).first();
      return new Date(row.locked_until).getTime() - Date.now();
    };
    const firstLock = await lockFor();
    expect(firstLock).toBeGreaterThan(250_000); // the policy's 300 s
    expect(firstLock).toBeLessThanOrEqual(300_000);
    await knex('users').where({ id: u.json.id }).update({ locked_until: new Date(Date.now() - 1000) }); // it expires
    expect(await lockFor()).toBeGreaterThan(550_000); // a lock in a row doubles
    const unlocked = await api('DELETE', `/tenants/lockrun/users/${u.json.id}/lock`);
    expect(unlocked.status).toBe(200);
    expect((await api('GET', `/tenants/lockrun/users/${u.json.id}`)).json.lockedUntil).toBeNull();
    const next = await lockFor();
    expect(next).toBeGreaterThan(250_000);
    expect(next).toBeLessThanOrEqual(300_000);
  });

  test('locking a user honours idempotency-ref: replayed, done and audited once', async () => {
    await api('POST', '/tenants', { id: 'lock-ref' });
    const u = await api('POST', '/tenants/lock-ref/users', { username: 'lou', password: PASSWORD });
    const v = await api('POST', '/tenants/lock-ref/users', { username: 'val', password: PASSWORD });
    const first = await api('POST', `/tenants/lock-ref/users/${u.json.id}/lock`, undefined, { 'idempotency-ref': 'lock-1' });
    expect([first.status, first.json.status]).toEqual([200, 'locked']);
    const again = await api('POST', `/tenants/lock-ref/users/${u.json.id}/lock`, undefined, { 'idempotency-ref': 'lock-1' });
    expect([again.status, again.json.status, again.headers.get('idempotent-replayed')]).toEqual([200, 'locked', 'true']);
    const other = await api('POST', `/tenants/lock-ref/users/${v.json.id}/lock`, undefined, { 'idempotency-ref': 'lock-1' });
    expect([other.status, other.json.code]).toEqual([409, 'IDEMPOTENCY_CONFLICT']);
    expect((await api('GET', `/tenants/lock-ref/users/${v.json.id}`)).json.status).toBe('active');
    const audit = (await api('GET', '/audit?tenant=lock-ref&type=user.locked')).json.items as unknown[];
    expect(audit).toHaveLength(1);
  });

  test('the platform admin from the environment is audited when created or re-keyed, not at every start', async () => {
    const log = (await api('GET', `/audit?actor=environment`)).json.items as Array<{ type: string; target: string; tenant: string | null }>;
    expect(log.filter((e) => e.target === ADMIN.client_id).map((e) => e.type)).toEqual(['client.created']);

    const clients = srv.running.app.services.clients;
    const input = (secret: string) => ({
      id: 'env-admin-2', name: 'x', secretHash: `hash-of-${secret}`, apiKeyHash: `api-${secret}`, grantTypes: ['client_credentials'], scope: 'admin',
      tokenEndpointAuthMethod: 'client_secret_basic', tokenFormat: 'opaque' as const, introspection: false, admin: true, tenants: [],
    });
    expect(await clients.ensureAdmin(input('one'))).toBe('created');
    expect(await clients.ensureAdmin(input('one'))).toBe('unchanged');
    expect(await clients.ensureAdmin(input('two'))).toBe('rekeyed');
    expect((await clients.find('env-admin-2'))?.admin).toBe(true);
    expect((await clients.findByApiKeyHash('api-one'))?.id).toBeUndefined(); // the API key moved with the secret
    expect((await clients.findByApiKeyHash('api-two'))?.id).toBe('env-admin-2');
    // Disabled as the admin API disables (stamped with the second: src/oidc/not-before.ts).
    await srv.running.app.database.knex('clients').where({ id: 'env-admin-2' }).update({ disabled: true, tokens_not_before: epochSecond() });
    expect(await clients.ensureAdmin(input('two'))).toBe('restored');
    const restored = await clients.find('env-admin-2');
    expect(restored?.disabled).toBe(false);
    // A token issued now stands: the restoring waited for a second to begin, as an enabling does.
    expect(issuedBeforeDisabling(epochSecond(), restored?.tokensNotBefore)).toBe(false);
    expect(await clients.ensureAdmin(input('two'))).toBe('unchanged');
  });

  test('a NUL in a path or query parameter is a 404 or a 400 naming it, never a database error', async () => {
    await api('POST', '/tenants', { id: 'nul-bank' });
    const u = await api('POST', '/tenants/nul-bank/users', { username: 'nul', password: PASSWORD });
    for (const path of ['/tenants/a%00b', '/tenants/nul-bank/users/a%00b', `/tenants/nul-bank/users/${u.json.id}%00/sessions`, '/tenants/nul-bank/clients/x%00']) {
      const r = await api('GET', path);
      expect([path, r.status, r.json]).toEqual([path, 404, { message: 'Not found', code: 'NOT_FOUND' }]);
    }
    for (const [path, field] of [['/tenants?after=a%00b', 'after'], ['/tenants/nul-bank/users?q=%00', 'q'], ['/audit?actor=a%00', 'actor'], ['/audit?tenant=%00', 'tenant'], ['/audit?type=x%00', 'type'], ['/audit?x%00y=1', 'xy']] as const) {
      const r = await api('GET', path);
      expect([path, r.status, r.json.syntaxErrors?.invalidFields]).toEqual([path, 400, [{ fieldName: field, error: 'must not contain NUL characters' }]]);
    }
  });

  test('an API key rotates: at once after a leak, or with an overlap; audited', async () => {
    await api('POST', '/tenants', { id: 'key-bank', name: 'K' });
    const c = await api('POST', '/tenants/key-bank/clients', { client_name: 'keyed', grant_types: ['password'] });
    let n = 0;
    const registers = async (apiKey: string) =>
      (await json(srv, 'POST', '/users', { tenant: 'key-bank', username: `keyed-user-${(n += 1)}`, password: PASSWORD, acceptedTerms: true }, { 'api-key': apiKey })).status;
    const first = c.json.api_key as string;
    expect(await registers(first)).toBe(201);

    const leaked = await api('POST', `/tenants/key-bank/clients/${c.json.client_id}/api-key`, {});
    expect(leaked.status).toBe(200);
    expect(leaked.json).toEqual({ client_id: c.json.client_id, api_key: expect.any(String), previous_api_key_expires_at: expect.any(String) });
    const second = leaked.json.api_key as string;
    expect(await registers(first)).toBe(401); // no overlap: gone at once
    expect(await registers(second)).toBe(201);
    expect((await api('GET', `/tenants/key-bank/clients/${c.json.client_id}`)).json).not.toHaveProperty('previous_api_key_expires_at');

    const planned = await api('POST', `/tenants/key-bank/clients/${c.json.client_id}/api-key`, { overlap_seconds: 3600 });
    const third = planned.json.api_key as string;
    expect([await registers(second), await registers(third), await registers(first)]).toEqual([201, 201, 401]);
    expect((await api('GET', `/tenants/key-bank/clients/${c.json.client_id}`)).json.previous_api_key_expires_at).toBe(planned.json.previous_api_key_expires_at);
    expect((await api('POST', `/tenants/key-bank/clients/${c.json.client_id}/api-key`, { overlap_seconds: -1 })).status).toBe(400);
    const audit = await api('GET', '/audit?tenant=key-bank&type=client.api_key_rotated');
    expect((audit.json.items as unknown[]).length).toBe(2);
    expect(JSON.stringify(audit.json)).not.toContain(third);
  });

  test("an admin client's idempotency-ref is one request whichever of its tenants the token names", async () => {
    await api('POST', '/tenants', { id: 'ref-a' });
    await api('POST', '/tenants', { id: 'ref-b' });
    const admin = await createClient(srv, { tenants: ['ref-a', 'ref-b'], admin: true });
    const tokenFor = async (tenant: string) =>
      (await form(srv, '/token', { grant_type: 'client_credentials', scope: 'admin', tenant }, { authorization: basic(admin) })).json.access_token as string;
    const headers = { 'idempotency-ref': 'one-client-please' };
    const first = await api('POST', '/tenants/ref-a/clients', { client_name: 'once' }, headers, await tokenFor('ref-a'));
    const second = await api('POST', '/tenants/ref-a/clients', { client_name: 'once' }, headers, await tokenFor('ref-b'));
    expect([first.status, second.status, second.headers.get('idempotent-replayed')]).toEqual([201, 201, 'true']);
    expect(second.json.client_id).toBe(first.json.client_id);
    expect(((await api('GET', '/tenants/ref-a/clients')).json.items as Array<{ client_name: string }>).filter((c) => c.client_name === 'once')).toHaveLength(1);
  });

  test("a tenant-bound admin's token loses a tenant the moment it is disabled, for good: only tokens issued after its enabling reach it again", async () => {
    await api('POST', '/tenants', { id: 'susp-a' });
    await api('POST', '/tenants', { id: 'susp-b' });
    const bothClient = await createClient(srv, { tenants: ['susp-a', 'susp-b'], admin: true });
    // A client of two tenants names one when it asks for a token; its admin rights span both.
    const both = (await form(srv, '/token', { grant_type: 'client_credentials', scope: 'admin', tenant: 'susp-b' }, { authorization: basic(bothClient) })).json.access_token as string;
    expect(both).toEqual(expect.any(String));
    const onlyAClient = await createClient(srv, { tenants: ['susp-a'], admin: true });
    const onlyA = await adminToken(onlyAClient);
    const status = async (id: string, to: 'active' | 'disabled') => {
      const etag = (await api('GET', `/tenants/${id}`)).headers.get('etag')!;
      expect((await api('PATCH', `/tenants/${id}`, { status: to }, { 'if-match': etag })).status).toBe(200);
    };
    expect((await api('GET', '/tenants/susp-a/users', undefined, {}, onlyA)).status).toBe(200);
    await status('susp-a', 'disabled');
    // Tokens issued before: nothing of the disabled tenant, read or write; the other tenant as before.
    // A token of the tenant (onlyA's names it) is revoked with it (src/oidc/not-before.ts).
    expect((await api('GET', '/tenants/susp-a/users', undefined, {}, onlyA)).status).toBe(401);
    expect((await api('POST', '/tenants/susp-a/clients', {}, {}, onlyA)).status).toBe(401);
    expect((await api('GET', '/tenants/susp-a/users', undefined, {}, both)).status).toBe(404);
    expect((await api('POST', '/tenants/susp-a/clients', {}, {}, both)).status).toBe(404);
    expect((await api('GET', '/tenants/susp-b/users', undefined, {}, both)).status).toBe(200);
    expect(((await api('GET', '/tenants', undefined, {}, both)).json.items as Array<{ id: string }>).map((t) => t.id)).toEqual(['susp-b']);
    await status('susp-a', 'active');
    // Disabling revoked what was issued before: a token of the tenant stays ended, and one of the
    // other tenant keeps that one only.
    expect((await api('GET', '/tenants/susp-a/users', undefined, {}, onlyA)).status).toBe(401);
    expect((await api('GET', '/tenants/susp-a/users', undefined, {}, both)).status).toBe(404);
    expect((await api('GET', '/tenants/susp-b/users', undefined, {}, both)).status).toBe(200);
    const both2 = (await form(srv, '/token', { grant_type: 'client_credentials', scope: 'admin', tenant: 'susp-b' }, { authorization: basic(bothClient) })).json.access_token as string;
    expect((await api('GET', '/tenants/susp-a/users', undefined, {}, await adminToken(onlyAClient))).status).toBe(200);
    expect((await api('GET', '/tenants/susp-a/users', undefined, {}, both2)).status).toBe(200);
  });

  test('a stored reply is replayed only to an admin who may act for its tenant now: a tenant disabled since answers 404', async () => {
    await api('POST', '/tenants', { id: 'replay-a' });
    await api('POST', '/tenants', { id: 'replay-b' });
    const admin = await createClient(srv, { tenants: ['replay-a', 'replay-b'], admin: true });
    const bound = (await form(srv, '/token', { grant_type: 'client_credentials', scope: 'admin', tenant: 'replay-a' }, { authorization: basic(admin) })).json.access_token as string;
    const app = await api('POST', '/tenants/replay-b/clients', { grant_types: ['password'] });
    const user = await api('POST', '/tenants/replay-b/users', { username: 'replayed', password: PASSWORD });
    // Each reply holds something secret: a client's secret and API key, a user's id, a user's token.
    const requests: Array<[string, unknown]> = [
      ['/tenants/replay-b/clients', { client_name: 'kept secret' }],
      [`/tenants/replay-b/clients/${app.json.client_id}/secret`, {}],
      [`/tenants/replay-b/clients/${app.json.client_id}/api-key`, {}],
      ['/tenants/replay-b/users', { username: 'registered-by-ref', password: PASSWORD }],
      [`/tenants/replay-b/users/${user.json.id}/lock`, undefined],
      [`/tenants/replay-b/users/${user.json.id}/login`, { client_id: app.json.client_id }],
    ];
    const send = (i: number) => api('POST', requests[i]![0], requests[i]![1], { 'idempotency-ref': `replay-${i}` }, bound);
    // A client of both tenants, its secret rotated through the one that stays: a change of it needs
    // reach over both, so its reply too.
    const shared = await createClient(srv, { tenants: ['replay-a', 'replay-b'] });
    const rotateShared = () => api('POST', `/tenants/replay-a/clients/${shared.client_id}/secret`, {}, { 'idempotency-ref': 'replay-shared' }, bound);
    expect((await rotateShared()).status).toBe(200);
    for (let i = 0; i < requests.length; i += 1) {
      // The lock first unlocked (DELETE is no POST), so that the admin login after it finds the user active.
      const first = await send(i);
      expect([requests[i]![0], first.status]).toEqual([requests[i]![0], i === 0 || i === 3 ? 201 : 200]);
      if (i === 4) expect((await api('DELETE', `/tenants/replay-b/users/${user.json.id}/lock`, undefined, {}, bound)).status).toBe(200);
    }
    const status = async (to: 'active' | 'disabled') => {
      const etag = (await api('GET', '/tenants/replay-b')).headers.get('etag')!;
      expect((await api('PATCH', '/tenants/replay-b', { status: to }, { 'if-match': etag })).status).toBe(200);
    };
    await status('disabled');
    for (let i = 0; i < requests.length; i += 1) {
      const replay = await send(i);
      expect([requests[i]![0], replay.status, replay.headers.get('idempotent-replayed'), replay.json]).toEqual([requests[i]![0], 404, null, { message: 'Tenant not found', code: 'NOT_FOUND' }]);
    }
    const sharedReplay = await rotateShared();
    expect([sharedReplay.status, sharedReplay.headers.get('idempotent-replayed'), sharedReplay.json.code]).toEqual([403, null, 'FORBIDDEN']);
    await status('active');
    // The token from before the disabling does not reach the tenant again; a new one of the same
    // admin client (the same caller) is replayed the stored reply.
    expect((await send(0)).status).toBe(404);
    const boundAgain = (await form(srv, '/token', { grant_type: 'client_credentials', scope: 'admin', tenant: 'replay-a' }, { authorization: basic(admin) })).json.access_token as string;
    const again = await api('POST', requests[0]![0], requests[0]![1], { 'idempotency-ref': 'replay-0' }, boundAgain);
    expect([again.status, again.headers.get('idempotent-replayed')]).toEqual([201, 'true']);
  });

  test('a body nested thousands of levels deep is a 400, never a stack overflow (a 500)', async () => {
    await api('POST', '/tenants', { id: 'deep-bank' });
    const nested = (n: number) => `{"name":${'['.repeat(n)}${']'.repeat(n)}}`;
    const send = async (path: string, body: string, auth: boolean) => {
      const r = await fetch(`${srv.base}${path}`, {
        method: path.startsWith('/admin/tenants/deep-bank') ? 'PATCH' : 'POST',
        headers: { 'content-type': 'application/json', 'if-match': '*', ...(auth ? { authorization: `Bearer ${token}` } : {}), 'idempotency-ref': `deep-${Math.random()}` },
        body,
      });
      return { status: r.status, json: (await r.json()) as { syntaxErrors?: { invalidFields?: unknown } } };
    };
    const tooDeep = [{ fieldName: 'body', error: 'must not nest more than 32 levels deep' }];
    // The admin API, and a route that needs no token (a device's answer), 5,000 levels in 10 kB.
    for (const [path, auth] of [['/admin/tenants/deep-bank', true], ['/device/challenges/00000000-0000-0000-0000-000000000000', false]] as const) {
      const r = await send(path, nested(5000), auth);
      expect([path, r.status, r.json.syntaxErrors?.invalidFields]).toEqual([path, 400, tooDeep]);
    }
    // 31 levels under the body's own object are read (and refused for what they say, not how deep).
    expect((await send('/admin/tenants/deep-bank', nested(31), true)).json.syntaxErrors?.invalidFields).not.toEqual(tooDeep);
    expect((await send('/admin/tenants/deep-bank', nested(32), true)).json.syntaxErrors?.invalidFields).toEqual(tooDeep);
    expect((await api('GET', '/tenants/deep-bank')).json.name).toBe('deep-bank');
  });

  test('a stored policy key that does not apply is left out alone and shown; the next change drops a bad value and keeps an unknown key', async () => {
    await api('POST', '/tenants', { id: 'odd-bank', name: 'O' });
    const etag = (await api('GET', '/tenants/odd-bank/policy')).headers.get('etag')!;
    expect((await api('PATCH', '/tenants/odd-bank/policy', { requireApiKey: true, accessTokenTtlSeconds: 900 }, { 'if-match': etag })).status).toBe(200);
    // What a newer release, or a hand edit, may leave in the row.
    const knex = srv.running.app.database.knex;
    await knex('tenants').where({ id: 'odd-bank' }).update({ policy: JSON.stringify({ requireApiKey: true, accessTokenTtlSeconds: 900, newFutureKey: 5, lockoutThreshold: 2 }) });
    srv.running.app.services.caches.changed('tenant', 'odd-bank');
    const read = await api('GET', '/tenants/odd-bank/policy');
    expect(read.json.policy).toMatchObject({ requireApiKey: true, accessTokenTtlSeconds: 900, lockoutThreshold: 10 });
    expect(read.json.ignored).toEqual(['newFutureKey', 'lockoutThreshold']);
    const c = await api('POST', '/tenants/odd-bank/clients', {});
    const cc = await form(srv, '/token', { grant_type: 'client_credentials' }, { authorization: basic({ client_id: c.json.client_id, client_secret: c.json.client_secret }) });
    expect(cc.json.expires_in).toBe(900);
    const changed = await api('PATCH', '/tenants/odd-bank/policy', { otpTtlSeconds: 120 }, { 'if-match': read.headers.get('etag')! });
    expect(changed.status).toBe(200);
    // The out-of-range value goes; the key a newer release wrote stays, for that release.
    expect(changed.json).toEqual({
      policy: expect.objectContaining({ requireApiKey: true, otpTtlSeconds: 120 }),
      overrides: { requireApiKey: true, accessTokenTtlSeconds: 900, otpTtlSeconds: 120, newFutureKey: 5 },
      ignored: ['newFutureKey'],
    });
    expect((await api('GET', '/tenants/odd-bank/policy')).json.ignored).toEqual(['newFutureKey']);

    // Overrides that are not an object at all: set aside, never a 500; the next change starts afresh.
    for (const raw of ['"a string"', '[true, {"requireApiKey": true}]']) {
      await knex.raw('update tenants set policy = ?::jsonb where id = ?', [raw, 'odd-bank']);
      srv.running.app.services.caches.changed('tenant', 'odd-bank');
      const odd = await api('GET', '/tenants/odd-bank/policy');
      expect([raw, odd.status, odd.json.ignored, odd.json.policy.requireApiKey]).toEqual([raw, 200, ['(the stored policy is not an object)'], false]);
      const fixed = await api('PATCH', '/tenants/odd-bank/policy', { requireApiKey: true }, { 'if-match': odd.headers.get('etag')! });
      expect([raw, fixed.status, fixed.json.overrides]).toEqual([raw, 200, { requireApiKey: true }]);
    }
  });

  test('an If-Match naming no version, however it is written, is a 412', async () => {
    await api('POST', '/tenants', { id: 'etag-bank', name: 'E' });
    const c = await api('POST', '/tenants/etag-bank/clients', {});
    for (const etag of ['"2147483648"', '"99999999999999999999999"', '"01"', 'W/"01"', '"1 "']) {
      for (const path of ['/tenants/etag-bank', '/tenants/etag-bank/policy', `/tenants/etag-bank/clients/${c.json.client_id}`]) {
        const r = await api('PATCH', path, path.endsWith('policy') ? { otpTtlSeconds: 300 } : path.includes('/clients/') ? { disabled: false } : { name: 'Changed' }, { 'if-match': etag });
        expect([etag, path, r.status, r.json]).toEqual([etag, path, 412, { message: 'The resource has changed; fetch it again', code: 'PRECONDITION_FAILED' }]);
      }
    }
    expect((await api('PATCH', '/tenants/etag-bank', { name: 'Changed' }, { 'if-match': '"1"' })).status).toBe(200);
    // A list of tags (RFC 9110 §13.1.1): one naming the current version will do; a list of something else will not.
    expect((await api('PATCH', '/tenants/etag-bank', { name: 'Listed' }, { 'if-match': 'W/"0", W/"2"' })).status).toBe(200);
    expect((await api('PATCH', '/tenants/etag-bank', { name: 'Listed' }, { 'if-match': 'W/"1", W/"2"' })).status).toBe(412);
    expect((await api('PATCH', '/tenants/etag-bank', { name: 'Listed' }, { 'if-match': 'W/"3" x' })).status).toBe(412);
    expect((await api('PATCH', '/tenants/etag-bank', { name: 'Empty elements' }, { 'if-match': ' , W/"3",' })).status).toBe(200); // RFC 9110 §5.6.1
  });

  test('non-admin tokens are refused', async () => {
    await api('POST', '/tenants', { id: 'bank-n' });
    const plain = await createClient(srv, { tenants: ['bank-n'], scope: 'admin' });
    const t = (await form(srv, '/token', { grant_type: 'client_credentials' }, { authorization: basic(plain) })).json.access_token as string;
    expect((await api('GET', '/tenants', undefined, {}, t)).status).toBe(403);
    expect((await json(srv, 'GET', '/admin/tenants')).status).toBe(401);
  });

  test('a rotated client secret: old and new during the overlap, only the new after it', async () => {
    await api('POST', '/tenants', { id: 'bank-r' });
    const c = await api('POST', '/tenants/bank-r/clients', {});
    const old = { client_id: c.json.client_id, client_secret: c.json.client_secret };
    const rot = await api('POST', `/tenants/bank-r/clients/${old.client_id}/secret`, { overlap_seconds: 3600 });
    expect(rot.status).toBe(200);
    const fresh = { client_id: old.client_id, client_secret: rot.json.client_secret };
    const cc = (x: typeof old) => form(srv, '/token', { grant_type: 'client_credentials' }, { authorization: basic(x) });
    expect((await cc(old)).status).toBe(200);
    expect((await cc(fresh)).status).toBe(200);
    await srv.running.app.database.knex('clients').where({ id: old.client_id }).update({ previous_secret_expires_at: new Date(Date.now() - 1000) });
    srv.running.app.services.caches.changed('client', old.client_id); // a write behind the repository's back must say so
    expect((await cc(old)).status).toBe(401);
    expect((await cc(fresh)).status).toBe(200);
  });

  test('disabling a client makes its outstanding tokens introspect inactive', async () => {
    await api('POST', '/tenants', { id: 'bank-d' });
    const c = await api('POST', '/tenants/bank-d/clients', {});
    const rs = await createClient(srv, { tenants: ['bank-d'], introspection: true });
    const tok = (await form(srv, '/token', { grant_type: 'client_credentials' }, { authorization: basic({ client_id: c.json.client_id, client_secret: c.json.client_secret }) })).json.access_token as string;
    expect((await introspect(srv, rs, tok)).json.active).toBe(true);
    const get = await api('GET', `/tenants/bank-d/clients/${c.json.client_id}`);
    const off = await api('PATCH', `/tenants/bank-d/clients/${c.json.client_id}`, { disabled: true }, { 'if-match': get.headers.get('etag')! });
    expect(off.json.disabled).toBe(true);
    expect((await introspect(srv, rs, tok)).json).toEqual({ active: false });
  });

  test('a client PATCH is held to the rules of its creation: refresh_token alone is refused', async () => {
    await api('POST', '/tenants', { id: 'patch-rules' });
    const c = await api('POST', '/tenants/patch-rules/clients', { grant_types: ['client_credentials'] });
    expect((await api('POST', '/tenants/patch-rules/clients', { grant_types: ['refresh_token'] })).status).toBe(400);
    const r = await api('PATCH', `/tenants/patch-rules/clients/${c.json.client_id}`, { grant_types: ['refresh_token'] }, { 'if-match': c.headers.get('etag')! });
    expect([r.status, r.json.syntaxErrors?.invalidFields]).toEqual([400, [{ fieldName: 'grant_types', error: 'refresh_token needs a grant that issues refresh tokens (password)' }]]);
    expect((await api('GET', `/tenants/patch-rules/clients/${c.json.client_id}`)).json.grant_types).toEqual(['client_credentials']);
  });

  test('two concurrent PATCHes with the same ETag: one succeeds, one 412', async () => {
    await api('POST', '/tenants', { id: 'bank-e', name: 'E' });
    const etag = (await api('GET', '/tenants/bank-e')).headers.get('etag')!;
    const [a, b] = await Promise.all([
      api('PATCH', '/tenants/bank-e', { name: 'E one' }, { 'if-match': etag }),
      api('PATCH', '/tenants/bank-e', { name: 'E two' }, { 'if-match': etag }),
    ]);
    expect([a.status, b.status].sort()).toEqual([200, 412]);
    expect((await api('PATCH', '/tenants/bank-e', { name: 'E three' }, { 'if-match': etag })).status).toBe(412);
    // If-Match: * is any current version (RFC 9110 §13.1.1): the change is made, the version moves on.
    const star = await api('PATCH', '/tenants/bank-e', { name: 'E four' }, { 'if-match': '*' });
    expect([star.status, star.json.name]).toEqual([200, 'E four']);
    expect(star.headers.get('etag')).not.toBe(etag);
    expect((await api('PATCH', '/tenants/bank-e', { name: 'E five' })).status).toBe(428); // still required
  });

  test('a login still evaluating its password when the user is locked, or all their sessions ended, gets no session', async () => {
    await api('POST', '/tenants', { id: 'racing', name: 'Racing', mode: 'sandbox' });
    const c = await api('POST', '/tenants/racing/clients', { grant_types: ['password'], token_endpoint_auth_method: 'client_secret_basic' });
    const app: ClientCreds = { client_id: c.json.client_id, client_secret: c.json.client_secret, api_key: c.json.api_key };
    const r = await api('POST', '/tenants/racing/clients', { grant_types: ['client_credentials'], introspection: true, token_endpoint_auth_method: 'client_secret_basic' });
    const rs: ClientCreds = { client_id: r.json.client_id, client_secret: r.json.client_secret, api_key: r.json.api_key };
    const u = (await api('POST', '/tenants/racing/users', { username: 'racer', password: PASSWORD })).json;
    const { hasher } = srv.running.app.services;
    /** A login whose password is found right, then held until `meanwhile` is done. */
    const heldLogin = async (meanwhile: () => Promise<void>) => {
      const verify = hasher.verify.bind(hasher);
      let evaluated!: () => void;
      const atVerify = new Promise<void>((r) => (evaluated = r));
      let release!: () => void;
      const released = new Promise<void>((r) => (release = r));
      const spy = jest.spyOn(hasher, 'verify').mockImplementationOnce(async (...args) => {
        const right = await verify(...args);
        evaluated();
        await released;
        return right;
      });
      try {
        const answer = passwordLogin(srv, app, 'racer', PASSWORD);
        await atVerify;
        await meanwhile();
        release();
        return await answer;
      } finally {
        spy.mockRestore();
      }
    };
    const sessions = async () => (await api('GET', `/tenants/racing/users/${u.id}/sessions`)).json.sessions as unknown[];

    // Locked and unlocked while the login was under way: no session comes back with the unlock.
    const locked = await heldLogin(async () => {
      expect((await api('POST', `/tenants/racing/users/${u.id}/lock`)).status).toBe(200);
      expect((await api('DELETE', `/tenants/racing/users/${u.id}/lock`)).status).toBe(200);
    });
    expect([locked.status, locked.json]).toEqual([400, { error: 'invalid_grant', error_description: 'invalid username or password' }]);
    expect(await sessions()).toEqual([]);
    // Every session ended while it was under way: the same.
    const before = await login(srv, app, 'racer', PASSWORD);
    const ended = await heldLogin(async () => {
      expect((await api('DELETE', `/tenants/racing/users/${u.id}/sessions`)).status).toBe(204);
    });
    expect(ended.status).toBe(400);
    expect(await sessions()).toEqual([]);
    expect((await introspect(srv, rs, before.access_token)).json.active).toBe(false);
    // The user is not held against: the next login works, and is the only session.
    const after = await login(srv, app, 'racer', PASSWORD);
    expect(await sessions()).toHaveLength(1);
    expect(after.refresh_token).toEqual(expect.any(String));
  });

  test("an admin's login on a user's behalf that a lock overtakes stores no session, and none comes back with the unlock", async () => {
    await api('POST', '/tenants', { id: 'racing-admin', mode: 'sandbox' });
    const c = await api('POST', '/tenants/racing-admin/clients', { grant_types: ['password'] });
    const u = (await api('POST', '/tenants/racing-admin/users', { username: 'overtaken', password: PASSWORD })).json;
    const { users } = srv.running.app.services;
    const findById = users.findById.bind(users);
    // The route reads the user (active), then the lock commits before the session is stored.
    const spy = jest.spyOn(users, 'findById').mockImplementationOnce(async (...args) => {
      const found = await findById(...args);
      expect((await api('POST', `/tenants/racing-admin/users/${u.id}/lock`)).status).toBe(200);
      return found;
    });
    let byAdmin: Reply;
    try {
      byAdmin = await api('POST', `/tenants/racing-admin/users/${u.id}/login`, { client_id: c.json.client_id });
    } finally {
      spy.mockRestore();
    }
    expect([byAdmin.status, byAdmin.json.code]).toEqual([409, 'USER_LOCKED']);
    const sessions = async () => (await api('GET', `/tenants/racing-admin/users/${u.id}/sessions`)).json.sessions as unknown[];
    expect(await sessions()).toEqual([]);
    expect((await api('DELETE', `/tenants/racing-admin/users/${u.id}/lock`)).status).toBe(200);
    expect(await sessions()).toEqual([]);
    // After the unlock an admin login works as before.
    expect((await api('POST', `/tenants/racing-admin/users/${u.id}/login`, { client_id: c.json.client_id })).status).toBe(200);
  });

  test('an admin edits a user: identifiers normalised and unique, one always kept, a new mobile removes the SMS factor, audited by field name', async () => {
    await api('POST', '/tenants', { id: 'edits', mode: 'sandbox' });
    const app = (await api('POST', '/tenants/edits/clients', { grant_types: ['password'] })).json;
    const creds: ClientCreds = { client_id: app.client_id, client_secret: app.client_secret, api_key: app.api_key };
    const ann = (await api('POST', '/tenants/edits/users', { email: 'ann@edits.test', mobile: '+447911123458', password: PASSWORD })).json;
    const bee = (await api('POST', '/tenants/edits/users', { username: 'bee', password: PASSWORD })).json;
    // Ann enrols SMS (a sandbox: the code is 123456).
    const annToken = (await login(srv, creds, 'ann@edits.test', PASSWORD)).access_token;
    expect((await json(srv, 'POST', '/authentication_factors/otp/SMS', undefined, bearer(annToken))).status).toBe(204);
    expect((await json(srv, 'POST', '/authentication_factors/otp/SMS/verify', { verificationCode: '123456' }, bearer(annToken))).status).toBe(204);
    const factors = async () => (await json(srv, 'GET', '/authentication_factors', undefined, bearer(annToken))).json.factors as Array<{ channel: string; status: string }>;
    expect(await factors()).toEqual([expect.objectContaining({ channel: 'SMS', status: 'ACTIVE' })]);

    const edited = await api('PATCH', `/tenants/edits/users/${ann.id}`, { email: ' Ann.New@Edits.TEST ', profile: { firstName: 'Ann' }, group: 'retail', mfaRequired: true });
    expect(edited.status).toBe(200);
    expect(edited.json).toMatchObject({ id: ann.id, email: 'ann.new@edits.test', mobile: '+447911123458', profile: { firstName: 'Ann' }, group: 'retail', mfaRequired: true });
    expect((await api('GET', `/tenants/edits/users/${ann.id}`)).json).toMatchObject({ email: 'ann.new@edits.test', mfaRequired: true });
    expect((await passwordLogin(srv, creds, 'ann@edits.test', PASSWORD)).status).toBe(400); // the old email no longer signs in
    expect((await passwordLogin(srv, creds, 'ann.new@edits.test', PASSWORD)).status).toBe(200);
    expect(await factors()).toHaveLength(1); // the mobile did not change: the factor stays

    // Refusals change nothing: another user's identifier, no identifier left, a malformed one, an unknown field.
    const taken = await api('PATCH', `/tenants/edits/users/${ann.id}`, { username: 'bee', group: 'private' });
    expect([taken.status, taken.json.code]).toEqual([409, 'IDENTIFIER_TAKEN']);
    const none = await api('PATCH', `/tenants/edits/users/${bee.id}`, { username: null });
    expect([none.status, none.json.syntaxErrors.invalidFields[0].fieldName]).toEqual([400, 'email']);
    const bad = await api('PATCH', `/tenants/edits/users/${ann.id}`, { mobile: '07911 123459', email: 'nope' });
    expect(bad.status).toBe(400);
    expect(bad.json.syntaxErrors.invalidFields.map((f: { fieldName: string }) => f.fieldName).sort()).toEqual(['email', 'mobile']);
    expect((await api('PATCH', `/tenants/edits/users/${ann.id}`, { password: 'x' })).status).toBe(400);
    const unchanged = (await api('GET', `/tenants/edits/users/${ann.id}`)).json;
    expect([unchanged.group, unchanged.username, unchanged.mobile]).toEqual(['retail', undefined, '+447911123458']);
    expect((await api('GET', `/tenants/edits/users/${bee.id}`)).json.username).toBe('bee');
    expect((await api('PATCH', '/tenants/edits/users/00000000-0000-4000-8000-000000000000', { group: 'x' })).status).toBe(404);
    await api('POST', '/tenants', { id: 'edits-other', mode: 'sandbox' });
    expect((await api('PATCH', `/tenants/edits-other/users/${ann.id}`, { group: 'x' })).status).toBe(404); // another tenant's user

    // A new mobile number: the SMS factor goes (its codes would reach a number not yet shown to be
    // hers), and so does every open SMS challenge: a step-up's code sent to the old number, and a
    // pending enrolment's of another user whose number changes.
    expect((await json(srv, 'POST', '/stepup/challenges/otp/SMS', {}, bearer(annToken))).status).toBe(204);
    const cat = (await api('POST', '/tenants/edits/users', { username: 'cat', mobile: '+447911123460', password: PASSWORD })).json;
    const catToken = (await login(srv, creds, 'cat', PASSWORD)).access_token;
    expect((await json(srv, 'POST', '/authentication_factors/otp/SMS', undefined, bearer(catToken))).status).toBe(204);
    const moved = await api('PATCH', `/tenants/edits/users/${ann.id}`, { mobile: '+447911123459' });
    expect([moved.status, moved.json.mobile]).toEqual([200, '+447911123459']);
    expect(await factors()).toEqual([]);
    expect((await json(srv, 'POST', '/stepup/challenges/otp/SMS/verify', { verificationCode: '123456' }, bearer(annToken))).status).toBe(403);
    expect((await api('PATCH', `/tenants/edits/users/${cat.id}`, { mobile: '+447911123461' })).status).toBe(200);
    expect((await json(srv, 'POST', '/authentication_factors/otp/SMS/verify', { verificationCode: '123456' }, bearer(catToken))).status).toBe(403);
    expect((await json(srv, 'GET', '/authentication_factors', undefined, bearer(catToken))).json.factors).toEqual([]);
    // Removing the mobile while another identifier remains is allowed.
    expect((await api('PATCH', `/tenants/edits/users/${ann.id}`, { mobile: null })).json.mobile).toBeUndefined();

    const records = (await api('GET', '/audit?tenant=edits&type=user.updated')).json.items as Array<{ target: string; details: Record<string, unknown> }>;
    expect(records.map((r) => r.details)).toEqual(expect.arrayContaining([
      { fields: expect.arrayContaining(['email', 'group', 'mfaRequired', 'profile']) },
      { fields: ['mobile'], smsFactorRemoved: true },
      { fields: ['mobile'] },
    ]));
    expect(records).toHaveLength(4); // Ann's three and Cat's one: the refusals recorded nothing
    expect(JSON.stringify(records)).not.toMatch(/edits\.test|\+4479/); // names of fields, never their values
  });

  test("an admin resets a forgotten password: the tenant's policy applies, the old one stops, and every session ends", async () => {
    await api('POST', '/tenants', { id: 'resets', mode: 'sandbox' });
    const app = (await api('POST', '/tenants/resets/clients', { grant_types: ['password', 'refresh_token'] })).json;
    const creds: ClientCreds = { client_id: app.client_id, client_secret: app.client_secret, api_key: app.api_key };
    const rs = await createClient(srv, { tenants: ['resets'], introspection: true });
    const rita = (await api('POST', '/tenants/resets/users', { username: 'rita', password: PASSWORD })).json;
    const before = await login(srv, creds, 'rita', PASSWORD);
    const NEW = 'a brand new passphrase for rita';

    // Refused as at registration, and nothing changes: too short, too common, the tenant's own minimum.
    for (const [password, error] of [['short', /at least 8/], ['iloveyou', /too common/]] as const) {
      const r = await api('PATCH', `/tenants/resets/users/${rita.id}`, { password, group: 'x' });
      expect([r.status, r.json.syntaxErrors.invalidFields]).toEqual([400, [{ fieldName: 'password', error: expect.stringMatching(error) }]]);
    }
    const pol = await api('GET', '/tenants/resets/policy');
    await api('PATCH', '/tenants/resets/policy', { passwordMinLength: 40 }, { 'if-match': pol.headers.get('etag')! });
    expect((await api('PATCH', `/tenants/resets/users/${rita.id}`, { password: NEW })).json.syntaxErrors.invalidFields[0].error).toMatch(/at least 40/);
    const pol2 = await api('GET', '/tenants/resets/policy');
    await api('PATCH', '/tenants/resets/policy', { passwordMinLength: 8 }, { 'if-match': pol2.headers.get('etag')! });
    expect((await introspect(srv, rs, before.access_token)).json.active).toBe(true);
    expect((await api('GET', `/tenants/resets/users/${rita.id}`)).json.group).toBeUndefined();

    const reset = await api('PATCH', `/tenants/resets/users/${rita.id}`, { password: NEW });
    expect(reset.status).toBe(200);
    expect(JSON.stringify(reset.json)).not.toMatch(/password|\$2[aby]\$/);
    // The old password may be what leaked: what was signed in with it ends, refresh tokens too.
    expect((await introspect(srv, rs, before.access_token)).json.active).toBe(false);
    expect((await refresh(srv, creds, before.refresh_token!)).json.error).toBe('invalid_grant');
    expect((await api('GET', `/tenants/resets/users/${rita.id}/sessions`)).json.sessions).toEqual([]);
    expect((await passwordLogin(srv, creds, 'rita', PASSWORD)).json.error).toBe('invalid_grant');
    const after = await login(srv, creds, 'rita', NEW);
    expect((await introspect(srv, rs, after.access_token)).json).toMatchObject({ active: true, sub: rita.id });

    const records = (await api('GET', '/audit?tenant=resets&type=user.updated')).json.items as Array<{ target: string; details: Record<string, unknown> }>;
    expect(records.map((r) => [r.target, r.details])).toEqual([[rita.id, { fields: ['password'], sessionsEnded: true }]]);
    expect(JSON.stringify(records)).not.toContain(NEW);
  });

  test('deleting a user erases them: their tokens stop at once, their factors, challenges, stored replies and messages go; the audit log stays', async () => {
    await api('POST', '/tenants', { id: 'erase', mode: 'live' });
    const app = (await api('POST', '/tenants/erase/clients', { grant_types: ['password', 'refresh_token'] })).json;
    const creds: ClientCreds = { client_id: app.client_id, client_secret: app.client_secret, api_key: app.api_key };
    const rs = await createClient(srv, { tenants: ['erase'], introspection: true });
    const { knex } = srv.running.app.database;
    const zed = (await api('POST', '/tenants/erase/users', { username: 'zed', mobile: '+447911123490', password: PASSWORD })).json;
    const yan = (await api('POST', '/tenants/erase/users', { username: 'yan', mobile: '+447911123491', password: PASSWORD })).json;
    const traces = async (id: string, mobile: string) => ({
      user: Number((await knex('users').where({ id }).count({ n: '*' }))[0]!.n),
      factors: Number((await knex('factors').where({ user_id: id }).count({ n: '*' }))[0]!.n),
      challenges: Number((await knex('challenges').where({ user_id: id }).count({ n: '*' }))[0]!.n),
      tokens: Number((await knex('oidc_payloads').where({ account_id: id }).count({ n: '*' }))[0]!.n),
      replies: Number((await knex('idempotency_records').where('caller', 'like', `${id}/%`).count({ n: '*' }))[0]!.n),
      messages: (await outbox(srv, 'sms', mobile)).length,
    });
    const zedTokens = await login(srv, creds, 'zed', PASSWORD);
    const yanTokens = await login(srv, creds, 'yan', PASSWORD);
    for (const [u, t] of [[zed, zedTokens], [yan, yanTokens]] as const) {
      const sent = await json(srv, 'POST', '/authentication_factors/otp/SMS', undefined, bearer(t.access_token, { 'idempotency-ref': 'enrol-1' }));
      expect(sent.status).toBe(204);
      const code = await lastCode(srv, u.mobile);
      expect((await json(srv, 'POST', '/authentication_factors/otp/SMS/verify', { verificationCode: code }, bearer(t.access_token))).status).toBe(204);
    }
    const present = { user: 1, factors: 1, challenges: 1, tokens: expect.any(Number), replies: 1, messages: 1 };
    expect(await traces(zed.id, zed.mobile)).toEqual(present);

    expect((await api('DELETE', `/tenants/erase-other/users/${zed.id}`)).status).toBe(404); // no such tenant
    await api('POST', '/tenants', { id: 'erase-other', mode: 'sandbox' });
    expect((await api('DELETE', `/tenants/erase-other/users/${zed.id}`)).status).toBe(404); // another tenant's user
    const deleted = await api('DELETE', `/tenants/erase/users/${zed.id}`);
    expect(deleted.status).toBe(204);
    expect(await traces(zed.id, zed.mobile)).toEqual({ user: 0, factors: 0, challenges: 0, tokens: 0, replies: 0, messages: 0 });
    expect((await introspect(srv, rs, zedTokens.access_token)).json).toEqual({ active: false });
    expect((await json(srv, 'GET', '/users/me', undefined, bearer(zedTokens.access_token))).status).toBe(401);
    expect((await refresh(srv, creds, zedTokens.refresh_token!)).json.error).toBe('invalid_grant');
    expect((await passwordLogin(srv, creds, 'zed', PASSWORD)).json.error).toBe('invalid_grant');
    expect((await api('GET', `/tenants/erase/users/${zed.id}`)).status).toBe(404);
    expect((await api('DELETE', `/tenants/erase/users/${zed.id}`)).status).toBe(404);
    // Another user of the tenant keeps everything; the name is free again.
    expect(await traces(yan.id, yan.mobile)).toEqual(present);
    expect((await introspect(srv, rs, yanTokens.access_token)).json.active).toBe(true);
    expect((await api('POST', '/tenants/erase/users', { username: 'zed', mobile: '+447911123490', password: PASSWORD })).status).toBe(201);
    // The audit log keeps its records of the deleted user (their id, never their identifiers) and the deletion.
    const records = (await api('GET', '/audit?tenant=erase')).json.items as Array<{ type: string; target: string; details: unknown }>;
    expect(records.filter((r) => r.target === zed.id).map((r) => r.type)).toEqual(expect.arrayContaining(['user.deleted', 'user.created', 'factor.enrolled']));
    expect(records.find((r) => r.type === 'user.deleted')).toMatchObject({ target: zed.id, details: {} });
  });

  test("a user's own request that raced their deletion fails as a revoked token does, and writes nothing for them", async () => {
    await api('POST', '/tenants', { id: 'erase-race', mode: 'sandbox' });
    const app = (await api('POST', '/tenants/erase-race/clients', { grant_types: ['password'] })).json;
    const creds: ClientCreds = { client_id: app.client_id, client_secret: app.client_secret, api_key: app.api_key };
    const { factors } = srv.running.app.services;
    const { knex } = srv.running.app.database;
    for (const [name, path] of [['una', '/authentication_factors/otp/SMS'], ['vic', '/authentication_factors/push/AUTHY']] as const) {
      const u = (await api('POST', '/tenants/erase-race/users', { username: name, mobile: name === 'una' ? '+447911123492' : '+447911123493', password: PASSWORD })).json;
      const t = (await login(srv, creds, name, PASSWORD)).access_token;
      // The request has read the user (its token authenticated) when an administrator deletes them.
      const list = factors.list.bind(factors);
      const spy = jest.spyOn(factors, 'list').mockImplementationOnce(async (...args) => {
        expect((await api('DELETE', `/tenants/erase-race/users/${u.id}`)).status).toBe(204);
        return list(...args);
      });
      const body = path.includes('push') ? { publicKey: (await newDevice()).publicJwk } : undefined;
      let raced: Reply;
      try {
        raced = await json(srv, 'POST', path, body, bearer(t));
      } finally {
        spy.mockRestore();
      }
      expect([path, raced.status, raced.json.code]).toEqual([path, 401, 'UNAUTHORIZED']);
      expect(raced.headers.get('www-authenticate')).toMatch(/error="invalid_token"/);
      expect(await knex('factors').where({ user_id: u.id })).toEqual([]);
      expect(await knex('challenges').where({ user_id: u.id })).toEqual([]);
    }
  });

  test('an admin action on a user deleted while it ran answers 404 and records nothing', async () => {
    await api('POST', '/tenants', { id: 'erase-admin', mode: 'sandbox' });
    const { users } = srv.running.app.services;
    for (const [method, suffix] of [['POST', '/lock'], ['DELETE', '/factors'], ['DELETE', '/sessions'], ['DELETE', '']] as const) {
      const u = (await api('POST', '/tenants/erase-admin/users', { username: `gone${suffix.replace('/', '-')}`, password: PASSWORD })).json;
      const findById = users.findById.bind(users);
      // The route has found the user when another administrator's deletion commits.
      const spy = jest.spyOn(users, 'findById').mockImplementationOnce(async (...args) => {
        const found = await findById(...args);
        expect((await api('DELETE', `/tenants/erase-admin/users/${u.id}`)).status).toBe(204);
        return found;
      });
      let r: Reply;
      try {
        r = await api(method, `/tenants/erase-admin/users/${u.id}${suffix}`);
      } finally {
        spy.mockRestore();
      }
      expect([method, suffix, r.status, r.json?.code]).toEqual([method, suffix, 404, 'NOT_FOUND']);
    }
    const types = ((await api('GET', '/audit?tenant=erase-admin')).json.items as Array<{ type: string }>).map((r) => r.type);
    expect(types.filter((t) => t !== 'user.created' && t !== 'tenant.created').sort()).toEqual(Array(4).fill('user.deleted'));
  });

  test('a code requested while an admin changes the mobile goes to no number the user does not hold, and nothing deadlocks', async () => {
    await api('POST', '/tenants', { id: 'edits-live', mode: 'live' });
    const app = (await api('POST', '/tenants/edits-live/clients', { grant_types: ['password'] })).json;
    const creds: ClientCreds = { client_id: app.client_id, client_secret: app.client_secret, api_key: app.api_key };
    const { factors } = srv.running.app.services;
    const { knex } = srv.running.app.database;
    const sent = async (mobile: string) => (await outbox(srv, 'sms', mobile)).length;

    // The edit commits after the enrolment request read the user, before its transaction: the
    // request refuses (409), no code goes to the old number, and sent again it goes to the new one.
    const dan = (await api('POST', '/tenants/edits-live/users', { username: 'dan', mobile: '+447911123470', password: PASSWORD })).json;
    const danToken = (await login(srv, creds, 'dan', PASSWORD)).access_token;
    const list = factors.list.bind(factors);
    const spy = jest.spyOn(factors, 'list').mockImplementationOnce(async (...args) => {
      expect((await api('PATCH', `/tenants/edits-live/users/${dan.id}`, { mobile: '+447911123471' })).status).toBe(200);
      return list(...args);
    });
    let raced: Reply;
    try {
      raced = await json(srv, 'POST', '/authentication_factors/otp/SMS', undefined, bearer(danToken));
    } finally {
      spy.mockRestore();
    }
    expect([raced.status, raced.json.code]).toEqual([409, 'MOBILE_CHANGED']);
    expect(await sent('+447911123470')).toBe(0);
    expect((await json(srv, 'POST', '/authentication_factors/otp/SMS', undefined, bearer(danToken))).status).toBe(204);
    const code = await lastCode(srv, '+447911123471');
    expect((await json(srv, 'POST', '/authentication_factors/otp/SMS/verify', { verificationCode: code }, bearer(danToken))).status).toBe(204);

    // The edit arrives while a re-enrolment (its factor pending) holds the user: it waits for it,
    // then removes the factor and cancels the code just sent, which then fails. On PostgreSQL the
    // edit used to lock the user's row against the challenge's foreign-key check: a deadlock, 500.
    const eve = (await api('POST', '/tenants/edits-live/users', { username: 'eve', mobile: '+447911123480', password: PASSWORD })).json;
    const eveToken = (await login(srv, creds, 'eve', PASSWORD)).access_token;
    expect((await json(srv, 'POST', '/authentication_factors/otp/SMS', undefined, bearer(eveToken))).status).toBe(204);
    const cancel = factors.cancelPending.bind(factors);
    let editing: Promise<Reply> | undefined;
    const spy2 = jest.spyOn(factors, 'cancelPending').mockImplementationOnce(async (...args) => {
      editing = api('PATCH', `/tenants/edits-live/users/${eve.id}`, { mobile: '+447911123481' });
      if (usingPostgres) {
        const waiting = async () => Number((await knex.raw('SELECT count(*) AS n FROM pg_locks WHERE NOT granted')).rows[0].n);
        for (let i = 0; i < 250 && (await waiting()) === 0; i += 1) await new Promise((r) => setImmediate(r));
      }
      return cancel(...args);
    });
    let again: Reply;
    try {
      again = await json(srv, 'POST', '/authentication_factors/otp/SMS', undefined, bearer(eveToken));
    } finally {
      spy2.mockRestore();
    }
    expect(again.status).toBe(204);
    expect((await editing!).status).toBe(200);
    const eveCode = await lastCode(srv, '+447911123480');
    expect((await json(srv, 'POST', '/authentication_factors/otp/SMS/verify', { verificationCode: eveCode }, bearer(eveToken))).status).toBe(403);
    expect((await json(srv, 'GET', '/authentication_factors', undefined, bearer(eveToken))).json.factors).toEqual([]);
  });

  test("an admin's login on behalf of a user removed while it was under way (a registration undone) answers 404, and stores nothing", async () => {
    await api('POST', '/tenants', { id: 'racing-admin-3', mode: 'sandbox' });
    const c = await api('POST', '/tenants/racing-admin-3/clients', { grant_types: ['password'] });
    const u = (await api('POST', '/tenants/racing-admin-3/users', { username: 'undone', password: PASSWORD })).json;
    const { users } = srv.running.app.services;
    const { knex } = srv.running.app.database;
    const findById = users.findById.bind(users);
    // The route reads the user, then the row goes (as undoRegistration removes it) before the session is stored.
    const spy = jest.spyOn(users, 'findById').mockImplementationOnce(async (...args) => {
      const found = await findById(...args);
      await knex('users').where({ tenant_id: 'racing-admin-3', id: u.id }).del();
      return found;
    });
    let byAdmin: Reply;
    try {
      byAdmin = await api('POST', `/tenants/racing-admin-3/users/${u.id}/login`, { client_id: c.json.client_id });
    } finally {
      spy.mockRestore();
    }
    expect([byAdmin.status, byAdmin.json.code]).toEqual([404, 'NOT_FOUND']);
    expect(await knex('oidc_payloads').where({ account_id: u.id }).select('type')).toEqual([]);
  });

  test("a lock that comes while an admin's login on the user's behalf stores its session waits for it, then ends that session too", async () => {
    await api('POST', '/tenants', { id: 'racing-admin-2', mode: 'sandbox' });
    const c = await api('POST', '/tenants/racing-admin-2/clients', { grant_types: ['password'] });
    const u = (await api('POST', '/tenants/racing-admin-2/users', { username: 'waited-for', password: PASSWORD })).json;
    const { knex } = srv.running.app.database;
    const { audit } = srv.running.app.services;
    const record = audit.record.bind(audit);
    let locking: Promise<Reply> | undefined;
    // The login's audit record is written after its session, in the same transaction: the lock
    // starts there. On PostgreSQL it must wait for the user's row (the embedded database's one
    // connection makes it wait for the whole transaction anyway).
    const spy = jest.spyOn(audit, 'record').mockImplementationOnce(async (...args) => {
      locking = api('POST', `/tenants/racing-admin-2/users/${u.id}/lock`);
      if (usingPostgres) {
        const waiting = async () => Number((await knex.raw('SELECT count(*) AS n FROM pg_locks WHERE NOT granted')).rows[0].n);
        for (let i = 0; i < 250 && (await waiting()) === 0; i += 1) await new Promise((r) => setImmediate(r));
      }
      return record(...args);
    });
    let byAdmin: Reply;
    try {
      byAdmin = await api('POST', `/tenants/racing-admin-2/users/${u.id}/login`, { client_id: c.json.client_id });
    } finally {
      spy.mockRestore();
    }
    expect(byAdmin.status).toBe(200);
    expect((await locking!).status).toBe(200);
    expect((await api('DELETE', `/tenants/racing-admin-2/users/${u.id}/lock`)).status).toBe(200);
    expect((await api('GET', `/tenants/racing-admin-2/users/${u.id}/sessions`)).json.sessions).toEqual([]);
    expect((await json(srv, 'GET', '/users/me', undefined, bearer(byAdmin.json.access_token as string))).status).toBe(401);
  });

  test('keys: list and rotate (platform admin)', async () => {
    const before = (await api('GET', '/keys')).json.keys as unknown[];
    const rot = await api('POST', '/keys/rotate');
    expect(rot.status).toBe(201);
    const after = (await api('GET', '/keys')).json.keys as Array<{ kid: string; publicJwk: Record<string, unknown> }>;
    expect(after.length).toBe(before.length + 1);
    expect(after.every((k) => k.publicJwk.d === undefined)).toBe(true);
    const jwks = (await (await fetch(`${srv.base}/jwks`)).json()) as { keys: Array<{ kid: string }> };
    expect(jwks.keys.map((k) => k.kid)).toContain(rot.json.kid);
  });

  (usingPostgres ? test : test.skip)('a policy change is honoured by a second server process on the same database within 5 s', async () => {
    await api('POST', '/tenants', { id: 'bank-p' });
    const c = await api('POST', '/tenants/bank-p/clients', {});
    const creds = { client_id: c.json.client_id, client_secret: c.json.client_secret };
    const second = await startTestServer({ store: srv.store });
    try {
      const ttl = async () => (await form(second, '/token', { grant_type: 'client_credentials' }, { authorization: basic(creds) })).json.expires_in;
      expect(await ttl()).toBe(1800);
      const etag = (await api('GET', '/tenants/bank-p/policy')).headers.get('etag')!;
      await api('PATCH', '/tenants/bank-p/policy', { accessTokenTtlSeconds: 900 }, { 'if-match': etag });
      const deadline = Date.now() + 5000;
      let seen = await ttl();
      while (seen !== 900 && Date.now() < deadline) seen = await ttl();
      expect(seen).toBe(900);
    } finally {
      await second.stop();
    }
  });
});
