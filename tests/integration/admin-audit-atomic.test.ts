import { startTestServer, type TestServer } from '../helpers/server';
import { basic, bearer, createUser, form, introspect, json, login, type ClientCreds } from '../helpers/flows';
import { SANDBOX_CODE } from '../../src/factors/codes';
import { dbLabel } from '../helpers/env';

// Every admin change is audited: the change and its audit record commit together or not at all.
// The audit log is made to refuse inserts (a CHECK constraint that no row passes, added NOT VALID
// so the rows already there stay), and each change must then fail whole: 500, nothing changed.

const PASSWORD = 'a perfectly decent passphrase';
const ADMIN = { client_id: 'platform-admin', client_secret: 'platform-admin-secret-for-tests-0123456789' };
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Reply = { status: number; headers: Headers; json: any };

describe(`admin changes commit with their audit record or not at all (${dbLabel})`, () => {
  let srv: TestServer;
  let token: string;
  let app: ClientCreds;
  let rs: ClientCreds;

  const api = (method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Reply> =>
    json(srv, method, `/admin${path}`, body, bearer(token, headers));
  const knex = () => srv.running.app.database.knex;

  /** Runs `fn` while the audit log refuses every insert; the log is mended afterwards, whatever happens. */
  async function auditRefusing<T>(fn: () => Promise<T>): Promise<T> {
    await knex().raw('ALTER TABLE audit_log ADD CONSTRAINT audit_refuses_for_test CHECK (false) NOT VALID');
    try {
      return await fn();
    } finally {
      await knex().raw('ALTER TABLE audit_log DROP CONSTRAINT audit_refuses_for_test');
    }
  }

  /** The request fails (500); the caller checks that nothing changed. */
  async function failsWhole(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<void> {
    expect((await auditRefusing(() => api(method, path, body, headers))).status).toBe(500);
  }

  const sessionsOf = async (userId: string) => (await api('GET', `/tenants/atom/users/${userId}/sessions`)).json.sessions as Array<{ id: string }>;
  const active = async (t: string) => (await introspect(srv, rs, t)).json.active as boolean;

  beforeAll(async () => {
    srv = await startTestServer({ config: { adminClientId: ADMIN.client_id, adminClientSecret: ADMIN.client_secret } });
    token = (await form(srv, '/token', { grant_type: 'client_credentials', scope: 'admin' }, { authorization: basic(ADMIN) })).json.access_token as string;
    expect((await api('POST', '/tenants', { id: 'atom', name: 'Atom Bank', mode: 'sandbox' })).status).toBe(201);
    const c = await api('POST', '/tenants/atom/clients', { client_name: 'Atom app', grant_types: ['password', 'client_credentials'], scope: 'accounts' });
    app = { client_id: c.json.client_id, client_secret: c.json.client_secret, api_key: c.json.api_key };
    const r = await api('POST', '/tenants/atom/clients', { client_name: 'Atom API', introspection: true });
    rs = { client_id: r.json.client_id, client_secret: r.json.client_secret, api_key: r.json.api_key };
  });
  afterAll(async () => srv?.close());

  test('creating a tenant, a client or a user', async () => {
    await failsWhole('POST', '/tenants', { id: 'never', name: 'Never' });
    expect((await api('GET', '/tenants/never')).status).toBe(404);

    const clients = (await api('GET', '/tenants/atom/clients')).json.items.length as number;
    await failsWhole('POST', '/tenants/atom/clients', { client_name: 'Never' });
    expect((await api('GET', '/tenants/atom/clients')).json.items).toHaveLength(clients);

    await failsWhole('POST', '/tenants/atom/users', { username: 'never', password: PASSWORD, mfaRequired: true });
    expect((await api('GET', '/tenants/atom/users?q=never')).json.items).toHaveLength(0);
    // The same request once the log accepts records again: nothing half-made is in its way.
    const made = await api('POST', '/tenants/atom/users', { username: 'never', password: PASSWORD, mfaRequired: true });
    expect(made.status).toBe(201);
    expect((await api('GET', `/tenants/atom/users/${made.json.id}`)).json.mfaRequired).toBe(true);
  });

  test('the same creations with an idempotency-ref, and their retries', async () => {
    await failsWhole('POST', '/tenants', { id: 'retried', name: 'Retried' }, { 'idempotency-ref': 'retried-1' });
    expect((await api('GET', '/tenants/retried')).status).toBe(404);
    expect((await api('POST', '/tenants', { id: 'retried', name: 'Retried' }, { 'idempotency-ref': 'retried-1' })).status).toBe(201);

    const clients = (await api('GET', '/tenants/atom/clients')).json.items.length as number;
    await failsWhole('POST', '/tenants/atom/clients', { client_name: 'Retried' }, { 'idempotency-ref': 'retried-2' });
    expect((await api('GET', '/tenants/atom/clients')).json.items).toHaveLength(clients);
    expect((await api('POST', '/tenants/atom/clients', { client_name: 'Retried' }, { 'idempotency-ref': 'retried-2' })).status).toBe(201);
  });

  test('a refusal inside a change stays a refusal, with or without an idempotency-ref, and is not audited', async () => {
    const audited = async () => (await api('GET', '/audit?tenant=atom&limit=100')).json.items.length as number;
    const before = await audited();
    // A duplicate id: the unique violation happens inside the change's transaction.
    expect((await api('POST', '/tenants', { id: 'atom', name: 'Again' })).status).toBe(409);
    expect((await api('POST', '/tenants', { id: 'atom', name: 'Again' }, { 'idempotency-ref': 'dup-1' })).status).toBe(409);
    await createUser(srv, 'atom', { username: 'taken', password: PASSWORD });
    expect((await api('POST', '/tenants/atom/users', { username: 'taken', password: PASSWORD }, { 'idempotency-ref': 'dup-2' })).status).toBe(409);
    // A stale If-Match and an unknown session, found inside the change's transaction.
    const t = await api('GET', '/tenants/atom');
    expect((await api('PATCH', '/tenants/atom', { name: 'Atom Bank' }, { 'if-match': t.headers.get('etag')! })).status).toBe(200);
    expect((await api('PATCH', '/tenants/atom', { name: 'Stale' }, { 'if-match': t.headers.get('etag')! })).status).toBe(412);
    const u = await createUser(srv, 'atom', { username: 'sessionless', password: PASSWORD });
    expect((await api('DELETE', `/tenants/atom/users/${u.id}/sessions/no-such-session`)).status).toBe(404);
    expect(await audited()).toBe(before + 1); // the one PATCH that went through
  });

  test('changing a tenant, its policy or a client', async () => {
    const t = await api('GET', '/tenants/atom');
    await failsWhole('PATCH', '/tenants/atom', { name: 'Renamed' }, { 'if-match': t.headers.get('etag')! });
    const after = await api('GET', '/tenants/atom');
    expect(after.json.name).toBe('Atom Bank');
    expect(after.headers.get('etag')).toBe(t.headers.get('etag'));

    const pol = await api('GET', '/tenants/atom/policy');
    await failsWhole('PATCH', '/tenants/atom/policy', { accessTokenTtlSeconds: 600 }, { 'if-match': pol.headers.get('etag')! });
    expect((await api('GET', '/tenants/atom/policy')).json).toEqual(pol.json);
    // Served from the tenant cache too: a token still gets the old lifetime.
    expect((await form(srv, '/token', { grant_type: 'client_credentials' }, { authorization: basic(app) })).json.expires_in).toBe(pol.json.policy.accessTokenTtlSeconds);

    const c = await api('GET', `/tenants/atom/clients/${app.client_id}`);
    await failsWhole('PATCH', `/tenants/atom/clients/${app.client_id}`, { disabled: true }, { 'if-match': c.headers.get('etag')! });
    expect((await api('GET', `/tenants/atom/clients/${app.client_id}`)).json).toEqual(c.json);
    expect((await form(srv, '/token', { grant_type: 'client_credentials' }, { authorization: basic(app) })).status).toBe(200);
  });

  test("rotating a client's secret", async () => {
    await failsWhole('POST', `/tenants/atom/clients/${app.client_id}/secret`, { overlap_seconds: 0 });
    expect((await api('GET', `/tenants/atom/clients/${app.client_id}`)).json).not.toHaveProperty('previous_secret_expires_at');
    // With no overlap, a rotation that had stuck would have ended the old secret at once.
    expect((await form(srv, '/token', { grant_type: 'client_credentials' }, { authorization: basic(app) })).status).toBe(200);
  });

  test("locking and unlocking a user, ending a user's sessions, an admin login", async () => {
    const u = await createUser(srv, 'atom', { username: 'locky', password: PASSWORD });
    const tokens = await login(srv, app, 'locky', PASSWORD);
    const [session] = await sessionsOf(u.id);

    await failsWhole('POST', `/tenants/atom/users/${u.id}/lock`);
    expect((await api('GET', `/tenants/atom/users/${u.id}`)).json.status).toBe('active');
    expect(await active(tokens.access_token)).toBe(true);

    await failsWhole('DELETE', `/tenants/atom/users/${u.id}/sessions`);
    await failsWhole('DELETE', `/tenants/atom/users/${u.id}/sessions/${session!.id}`);
    expect(await sessionsOf(u.id)).toHaveLength(1);
    expect(await active(tokens.access_token)).toBe(true);

    await failsWhole('POST', `/tenants/atom/users/${u.id}/login`, { client_id: app.client_id });
    expect(await sessionsOf(u.id)).toHaveLength(1);

    expect((await api('POST', `/tenants/atom/users/${u.id}/lock`)).status).toBe(200);
    await failsWhole('DELETE', `/tenants/atom/users/${u.id}/lock`);
    expect((await api('GET', `/tenants/atom/users/${u.id}`)).json.status).toBe('locked');
    expect((await form(srv, '/token', { grant_type: 'password', username: 'locky', password: PASSWORD }, { authorization: basic(app) })).status).toBe(400);
  });

  test("resetting a user's factors", async () => {
    const u = await createUser(srv, 'atom', { username: 'factory', mobile: '+447911123499', password: PASSWORD });
    const t = (await login(srv, app, 'factory', PASSWORD)).access_token;
    expect((await json(srv, 'POST', '/authentication_factors/otp/SMS', undefined, bearer(t))).status).toBe(204);
    // A sandbox tenant: the code is the sandbox's.
    expect((await json(srv, 'POST', '/authentication_factors/otp/SMS/verify', { verificationCode: SANDBOX_CODE }, bearer(t))).status).toBe(204);
    const factors = async () => (await json(srv, 'GET', '/authentication_factors', undefined, bearer(t))).json;
    const before = await factors();
    expect(JSON.stringify(before)).toContain('ACTIVE');

    await failsWhole('DELETE', `/tenants/atom/users/${u.id}/factors`);
    expect(await factors()).toEqual(before);

    // An edit of the mobile number, which removes the SMS factor: neither sticks.
    const user = (await api('GET', `/tenants/atom/users/${u.id}`)).json;
    await failsWhole('PATCH', `/tenants/atom/users/${u.id}`, { mobile: '+447911123498', group: 'moved' });
    expect((await api('GET', `/tenants/atom/users/${u.id}`)).json).toEqual(user);
    expect(await factors()).toEqual(before);
  });

  test('rotating the signing keys', async () => {
    const keys = (await api('GET', '/keys')).json.keys as Array<{ kid: string }>;
    const jwks = async () => (await fetch(`${srv.base}/jwks`)).json();
    const published = await jwks();
    await failsWhole('POST', '/keys/rotate');
    expect((await api('GET', '/keys')).json.keys).toEqual(keys);
    expect(await jwks()).toEqual(published);

    // With an idempotency-ref the rotation runs in the request's transaction, and is replayed.
    const rot = await api('POST', '/keys/rotate', undefined, { 'idempotency-ref': 'rotate-1' });
    expect(rot.status).toBe(201);
    const again = await api('POST', '/keys/rotate', undefined, { 'idempotency-ref': 'rotate-1' });
    expect(again.json.kid).toBe(rot.json.kid);
    expect((await api('GET', '/keys')).json.keys).toHaveLength(keys.length + 1);
  });

  test("a user's own ending of a session, and one through an admin's login on their behalf: audited with who did it, or not done", async () => {
    const u = await createUser(srv, 'atom', { username: 'ender', password: PASSWORD });
    const own = await login(srv, app, 'ender', PASSWORD);
    const spare = await login(srv, app, 'ender', PASSWORD);
    const onBehalf = (await api('POST', `/tenants/atom/users/${u.id}/login`, { client_id: app.client_id })).json.access_token as string;
    const idOf = async (t: string) =>
      ((await json(srv, 'GET', '/sessions', undefined, bearer(t))).json.sessions as Array<{ id: string; current: boolean }>).find((s) => s.current)!.id;
    const [spareId, ownId] = [await idOf(spare.access_token), await idOf(own.access_token)];
    const end = (t: string, id: string) => json(srv, 'DELETE', `/sessions/${id}`, undefined, bearer(t));

    // The audit log refusing: the session is not ended either.
    expect((await auditRefusing(() => end(own.access_token, spareId))).status).toBe(500);
    expect(await active(spare.access_token)).toBe(true);

    expect((await end(own.access_token, spareId)).status).toBe(204);
    expect((await end(onBehalf, ownId)).status).toBe(204);
    expect([await active(spare.access_token), await active(own.access_token)]).toEqual([false, false]);
    const entries = (await api('GET', `/audit?tenant=atom&type=session.revoked`)).json.items as Array<{ actor: string; target: string; details: unknown }>;
    expect(entries.slice(0, 2).map(({ actor, target, details }) => ({ actor, target, details }))).toEqual([
      { actor: ADMIN.client_id, target: u.id, details: { session: ownId } },
      { actor: u.id, target: u.id, details: { session: spareId } },
    ]);
  });
});
