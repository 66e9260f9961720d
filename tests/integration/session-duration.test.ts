/**
 * A tenant's session duration applies to the sessions already running, as the policy says now
 * (src/sessions/duration.ts): lowered, it ends those older than it, everywhere a session counts.
 */
import { startTestServer, type TestServer } from '../helpers/server';
import { bearer, clientCredentialsToken, createClient, createTenant, createUser, form, introspect, json, login, refresh, statements, type ClientCreds } from '../helpers/flows';
import { dbLabel } from '../helpers/env';

const PASSWORD = 'a perfectly decent passphrase';
const ADMIN = { client_id: 'platform-admin', client_secret: 'platform-admin-secret-for-tests-0123456789', api_key: '' };

describe(`a lowered session duration ends the sessions older than it (${dbLabel})`, () => {
  let srv: TestServer;
  let app: ClientCreds;
  let jwtApp: ClientCreds;
  let rs: ClientCreds;
  let userId: string;

  const setDuration = async (seconds: number) => {
    expect(await srv.running.app.services.tenants.setPolicy('bank-d', { sessionDurationSeconds: seconds })).toBeDefined();
  };
  /** The user's sessions began `seconds` earlier than they did (their own expiry, 10 h on, unchanged). */
  const age = async (seconds: number) => {
    const knex = srv.running.app.database.knex;
    await knex('oidc_payloads')
      .where({ type: 'Grant', account_id: userId })
      .update({ payload: knex.raw("jsonb_set(payload, '{iat}', to_jsonb((payload->>'iat')::bigint - ?))", [seconds]) });
  };
  const me = async (token: string) => (await json(srv, 'GET', '/users/me', undefined, bearer(token))).status;
  const introspectPost = async (token: string) => (await form(srv, '/token/introspection', { token, client_id: rs.client_id, client_secret: rs.client_secret })).json;

  beforeAll(async () => {
    srv = await startTestServer({ config: { adminClientId: ADMIN.client_id, adminClientSecret: ADMIN.client_secret } });
    await createTenant(srv, 'bank-d');
    app = await createClient(srv, { tenants: ['bank-d'], grant_types: ['password', 'refresh_token'] });
    jwtApp = await createClient(srv, { tenants: ['bank-d'], grant_types: ['password', 'refresh_token'], token_format: 'jwt' });
    rs = await createClient(srv, { tenants: ['bank-d'], introspection: true });
    userId = (await createUser(srv, 'bank-d', { username: 'dora', password: PASSWORD })).id;
  });
  afterAll(async () => srv?.close());

  test('sessions older than the new duration end: introspection, our routes, refresh and the session list; younger ones and new ones go on', async () => {
    const old = await login(srv, app, 'dora', PASSWORD);
    const oldJwt = await login(srv, jwtApp, 'dora', PASSWORD);
    await age(700);
    const young = await login(srv, app, 'dora', PASSWORD);
    const jwtYoung = await login(srv, jwtApp, 'dora', PASSWORD);
    // Under the default duration (10 h) the aged sessions stand.
    for (const t of [old.access_token, oldJwt.access_token]) {
      expect((await introspect(srv, rs, t)).json.active).toBe(true);
      expect(await me(t)).toBe(200);
    }

    await setDuration(600);
    for (const t of [old.access_token, oldJwt.access_token]) {
      expect((await introspect(srv, rs, t)).json).toEqual({ active: false });
      expect(await introspectPost(t)).toEqual({ active: false });
      expect(await me(t)).toBe(401);
    }
    const refused = await refresh(srv, app, old.refresh_token);
    expect([refused.status, refused.json]).toEqual([400, { error: 'invalid_grant', error_description: 'grant request is invalid' }]);
    // Listed: the two young sessions, each with the end the policy gives it now.
    const sessions = (await json(srv, 'GET', '/sessions', undefined, bearer(young.access_token))).json.sessions as Array<{ current: boolean; createdAt: string; expiresAt: string }>;
    expect(sessions.map((x) => x.current).sort()).toEqual([false, true]);
    for (const x of sessions) expect(Date.parse(x.expiresAt) - Date.parse(x.createdAt)).toBe(600_000);

    expect((await introspect(srv, rs, young.access_token)).json.active).toBe(true);
    expect(await me(young.access_token)).toBe(200);
    // Its tokens live no longer than the session does now: at most the 600 s (not the 1800 s of
    // an access token), whatever the session's own expiry said at its start.
    const refreshed = await refresh(srv, app, young.refresh_token);
    expect(refreshed.status).toBe(200);
    expect(refreshed.json.expires_in).toBeLessThanOrEqual(600);
    const info = (await introspect(srv, rs, refreshed.json.access_token as string)).json;
    expect(info.exp as number).toBeLessThanOrEqual(Math.floor(Date.now() / 1000) + 600);
    const jwtRefreshed = await refresh(srv, jwtApp, jwtYoung.refresh_token);
    const claims = JSON.parse(Buffer.from((jwtRefreshed.json.access_token as string).split('.')[1]!, 'base64url').toString()) as { exp: number };
    expect(claims.exp).toBeLessThanOrEqual(Math.floor(Date.now() / 1000) + 600);
    expect((await introspect(srv, rs, (await login(srv, app, 'dora', PASSWORD)).access_token)).json.active).toBe(true);
  });

  test("a session list reads each client once, however many sessions name it", async () => {
    const many = await createUser(srv, 'bank-d', { username: 'many', password: PASSWORD });
    for (let i = 0; i < 6; i += 1) await login(srv, i % 2 ? app : jwtApp, 'many', PASSWORD);
    const admin = (await clientCredentialsToken(srv, ADMIN, { scope: 'admin' })).access_token;
    let listed: unknown[] = [];
    const seen = await statements(srv, async () => {
      listed = (await json(srv, 'GET', `/admin/tenants/bank-d/users/${many.id}/sessions`, undefined, bearer(admin))).json.sessions as unknown[];
    });
    expect(listed).toHaveLength(6);
    expect(seen.filter((q) => /from "clients"/i.test(q.sql)).length).toBe(2); // its two clients
  });
});
