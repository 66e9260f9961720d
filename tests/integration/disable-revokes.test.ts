/**
 * Disabling a client or a tenant ends every token issued to it so far, for good: enabling it again
 * brings back none of them (src/oidc/not-before.ts). A client disabled because its secret leaked
 * must not, once its secret is rotated and it is enabled again, revive the tokens taken with it.
 */
import bcrypt from 'bcrypt';
import { startTestServer, type TestServer } from '../helpers/server';
import { bearer, clientCredentialsToken, createClient, createTenant, createUser, form, introspect, json, login, refresh, type ClientCreds } from '../helpers/flows';
import { dbLabel } from '../helpers/env';

const PASSWORD = 'a perfectly decent passphrase';
const ADMIN = { client_id: 'platform-admin', client_secret: 'platform-admin-secret-for-tests-0123456789', api_key: '' };

describe(`disabling a client or a tenant revokes its tokens (${dbLabel})`, () => {
  let srv: TestServer;
  let adminToken: string;

  const api = (method: string, path: string, body?: unknown, headers: Record<string, string> = {}, t = adminToken) =>
    json(srv, method, `/admin${path}`, body, bearer(t, headers));
  /** PATCH with the ETag just read. */
  const patch = async (path: string, body: unknown, t = adminToken) => {
    const etag = (await api('GET', path, undefined, {}, t)).headers.get('etag')!;
    const r = await api('PATCH', path, body, { 'if-match': etag }, t);
    expect([path, body, r.status]).toEqual([path, body, 200]);
    return r;
  };
  const me = async (token: string) => (await json(srv, 'GET', '/users/me', undefined, bearer(token))).status;
  /** Introspection by the library's pipeline (client_secret_post), beside the fast path's (Basic). */
  const introspectPost = async (rs: ClientCreds, token: string) =>
    (await form(srv, '/token/introspection', { token, client_id: rs.client_id, client_secret: rs.client_secret })).json;

  beforeAll(async () => {
    srv = await startTestServer({ config: { adminClientId: ADMIN.client_id, adminClientSecret: ADMIN.client_secret } });
    adminToken = (await clientCredentialsToken(srv, ADMIN, { scope: 'admin' })).access_token;
  });
  afterAll(async () => srv?.close());

  test('a client disabled and enabled again: its earlier tokens and sessions stay ended, new ones work', async () => {
    await createTenant(srv, 'bank-c');
    const rs = await createClient(srv, { tenants: ['bank-c'], introspection: true });
    const machine = await createClient(srv, { tenants: ['bank-c'], grant_types: ['client_credentials'] });
    const jwtMachine = await createClient(srv, { tenants: ['bank-c'], grant_types: ['client_credentials'], token_format: 'jwt' });
    const app = await createClient(srv, { tenants: ['bank-c'], grant_types: ['password', 'refresh_token'] });
    const user = await createUser(srv, 'bank-c', { username: 'carla', password: PASSWORD });

    const cc = (await clientCredentialsToken(srv, machine)).access_token;
    const jwt = (await clientCredentialsToken(srv, jwtMachine)).access_token;
    const session = await login(srv, app, 'carla', PASSWORD);
    // Not a mark of the client's: another client's token is untouched by its disabling.
    const bystander = (await clientCredentialsToken(srv, rs)).access_token;
    for (const t of [cc, jwt, session.access_token]) expect((await introspect(srv, rs, t)).json.active).toBe(true);
    expect(await me(session.access_token)).toBe(200);

    for (const c of [machine, jwtMachine, app]) await patch(`/tenants/bank-c/clients/${c.client_id}`, { disabled: true });
    for (const c of [machine, jwtMachine, app]) await patch(`/tenants/bank-c/clients/${c.client_id}`, { disabled: false });

    for (const t of [cc, jwt, session.access_token]) {
      expect((await introspect(srv, rs, t)).json).toEqual({ active: false });
      expect(await introspectPost(rs, t)).toEqual({ active: false });
    }
    expect(await me(session.access_token)).toBe(401);
    const refused = await refresh(srv, app, session.refresh_token);
    expect([refused.status, refused.json]).toEqual([400, { error: 'invalid_grant', error_description: 'grant request is invalid' }]);
    expect((await api('GET', `/tenants/bank-c/users/${user.id}/sessions`)).json).toEqual({ sessions: [] });
    expect((await introspect(srv, rs, bystander)).json.active).toBe(true);

    // Enabled again at once (within the second of the disabling, most often): what is issued now works.
    const cc2 = (await clientCredentialsToken(srv, machine)).access_token;
    const jwt2 = (await clientCredentialsToken(srv, jwtMachine)).access_token;
    const session2 = await login(srv, app, 'carla', PASSWORD);
    for (const t of [cc2, jwt2, session2.access_token]) expect((await introspect(srv, rs, t)).json.active).toBe(true);
    expect(await me(session2.access_token)).toBe(200);
    const refreshed = await refresh(srv, app, session2.refresh_token);
    expect(refreshed.status).toBe(200);
    expect(await me(refreshed.json.access_token as string)).toBe(200);
    const listed = (await json(srv, 'GET', '/sessions', undefined, bearer(refreshed.json.access_token as string))).json.sessions as unknown[];
    expect(listed).toHaveLength(1);
  });

  test('a change other than disabling ends no token', async () => {
    await createTenant(srv, 'bank-n');
    const rs = await createClient(srv, { tenants: ['bank-n'], introspection: true });
    const machine = await createClient(srv, { tenants: ['bank-n'], grant_types: ['client_credentials'] });
    const cc = (await clientCredentialsToken(srv, machine)).access_token;
    await patch(`/tenants/bank-n/clients/${machine.client_id}`, { client_name: 'renamed', disabled: false });
    await patch('/tenants/bank-n', { name: 'Bank N', status: 'active' });
    expect((await introspect(srv, rs, cc)).json.active).toBe(true);
  });

  test("a tenant disabled and enabled again: its earlier tokens, sessions and admins' tokens stay ended", async () => {
    await createTenant(srv, 'bank-t');
    const rs = await createClient(srv, { tenants: ['bank-t'], introspection: true });
    const machine = await createClient(srv, { tenants: ['bank-t'], grant_types: ['client_credentials'] });
    const app = await createClient(srv, { tenants: ['bank-t'], grant_types: ['password', 'refresh_token'] });
    const tenantAdmin = await createClient(srv, { tenants: ['bank-t'], admin: true });
    await createUser(srv, 'bank-t', { username: 'tess', password: PASSWORD });

    const cc = (await clientCredentialsToken(srv, machine)).access_token;
    const session = await login(srv, app, 'tess', PASSWORD);
    const adminOfTenant = (await clientCredentialsToken(srv, tenantAdmin, { scope: 'admin' })).access_token;
    expect((await api('GET', '/tenants/bank-t', undefined, {}, adminOfTenant)).status).toBe(200);

    await patch('/tenants/bank-t', { status: 'disabled' });
    await patch('/tenants/bank-t', { status: 'active' });

    for (const t of [cc, session.access_token]) {
      expect((await introspect(srv, rs, t)).json).toEqual({ active: false });
      expect(await introspectPost(rs, t)).toEqual({ active: false });
    }
    expect(await me(session.access_token)).toBe(401);
    expect((await refresh(srv, app, session.refresh_token)).status).toBe(400);
    expect((await api('GET', '/tenants/bank-t', undefined, {}, adminOfTenant)).status).not.toBe(200);

    const cc2 = (await clientCredentialsToken(srv, machine)).access_token;
    const session2 = await login(srv, app, 'tess', PASSWORD);
    const adminOfTenant2 = (await clientCredentialsToken(srv, tenantAdmin, { scope: 'admin' })).access_token;
    for (const t of [cc2, session2.access_token]) expect((await introspect(srv, rs, t)).json.active).toBe(true);
    expect(await me(session2.access_token)).toBe(200);
    expect((await refresh(srv, app, session2.refresh_token)).status).toBe(200);
    expect((await api('GET', '/tenants/bank-t', undefined, {}, adminOfTenant2)).status).toBe(200);
  });

  test('enabling waits for a second to begin, and stamps the one before: what was issued while disabled stays ended', async () => {
    await createTenant(srv, 'bank-w');
    const machine = await createClient(srv, { tenants: ['bank-w'], grant_types: ['client_credentials'] });
    await patch(`/tenants/bank-w/clients/${machine.client_id}`, { disabled: true });
    const notBefore = async () => Number((await srv.running.app.database.knex('clients').where({ id: machine.client_id }).first('tokens_not_before')).tokens_not_before);
    const disabledAt = await notBefore();
    expect(Math.abs(disabledAt - Date.now() / 1000)).toBeLessThan(5);
    const t0 = Date.now();
    await patch(`/tenants/bank-w/clients/${machine.client_id}`, { disabled: false });
    const second = Math.floor(t0 / 1000);
    expect(Date.now()).toBeGreaterThanOrEqual((second + 1) * 1000);
    expect(await notBefore()).toBeGreaterThanOrEqual(Math.max(disabledAt, second));
    // Enabling what is enabled, or disabling nothing, stamps nothing.
    const stamped = await notBefore();
    await patch(`/tenants/bank-w/clients/${machine.client_id}`, { disabled: false });
    expect(await notBefore()).toBe(stamped);
  });

  test('a login under way when its client is disabled, finished while it is: its token stays ended after the enabling', async () => {
    await createTenant(srv, 'bank-f');
    const rs = await createClient(srv, { tenants: ['bank-f'], introspection: true });
    const app = await createClient(srv, { tenants: ['bank-f'], grant_types: ['password', 'refresh_token'] });
    await createUser(srv, 'bank-f', { username: 'flo', password: PASSWORD });
    // The password's check held until the test lets it go.
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const real = bcrypt.compare.bind(bcrypt) as (a: string, b: string) => Promise<boolean>;
    let started = false;
    const compare = jest.spyOn(bcrypt, 'compare').mockImplementation((async (data: string, encrypted: string) => {
      started = true;
      await held;
      return real(data, encrypted);
    }) as never);
    try {
      const pending = login(srv, app, 'flo', PASSWORD);
      while (!started) await new Promise((r) => setTimeout(r, 5));
      await patch(`/tenants/bank-f/clients/${app.client_id}`, { disabled: true });
      // Finished in a later second than the disabling's, while the client is disabled.
      await new Promise((r) => setTimeout(r, 1000 - (Date.now() % 1000) + 5));
      release();
      const late = await pending;
      expect((await introspect(srv, rs, late.access_token)).json).toEqual({ active: false });
      await patch(`/tenants/bank-f/clients/${app.client_id}`, { disabled: false });
      expect((await introspect(srv, rs, late.access_token)).json).toEqual({ active: false });
      expect(await me(late.access_token)).toBe(401);
      expect((await refresh(srv, app, late.refresh_token)).status).toBe(400);
    } finally {
      compare.mockRestore();
    }
    expect((await introspect(srv, rs, (await login(srv, app, 'flo', PASSWORD)).access_token)).json.active).toBe(true);
  });

  test("an admin's login on a user's behalf ends with that admin client's disabling, for good", async () => {
    await createTenant(srv, 'bank-a');
    const rs = await createClient(srv, { tenants: ['bank-a'], introspection: true });
    const app = await createClient(srv, { tenants: ['bank-a'], grant_types: ['password', 'refresh_token'] });
    const tenantAdmin = await createClient(srv, { tenants: ['bank-a'], admin: true });
    const user = await createUser(srv, 'bank-a', { username: 'abe', password: PASSWORD });
    const adminOfTenant = (await clientCredentialsToken(srv, tenantAdmin, { scope: 'admin' })).access_token;
    const onBehalf = async () => (await api('POST', `/tenants/bank-a/users/${user.id}/login`, { client_id: app.client_id }, {}, adminOfTenant)).json.access_token as string;
    const acted = await onBehalf();
    const own = await login(srv, app, 'abe', PASSWORD);
    expect((await introspect(srv, rs, acted)).json.active).toBe(true);
    expect(await me(acted)).toBe(200);

    await patch(`/tenants/bank-a/clients/${tenantAdmin.client_id}`, { disabled: true });
    expect((await introspect(srv, rs, acted)).json).toEqual({ active: false });
    expect(await introspectPost(rs, acted)).toEqual({ active: false });
    expect(await me(acted)).toBe(401);
    await patch(`/tenants/bank-a/clients/${tenantAdmin.client_id}`, { disabled: false });
    expect((await introspect(srv, rs, acted)).json).toEqual({ active: false });
    expect(await me(acted)).toBe(401);
    // The user's own session is the app's, untouched; a new login on their behalf works.
    expect(await me(own.access_token)).toBe(200);
    const adminAgain = (await clientCredentialsToken(srv, tenantAdmin, { scope: 'admin' })).access_token;
    const acted2 = (await api('POST', `/tenants/bank-a/users/${user.id}/login`, { client_id: app.client_id }, {}, adminAgain)).json.access_token as string;
    expect((await introspect(srv, rs, acted2)).json.active).toBe(true);
    expect(await me(acted2)).toBe(200);
  });
});
