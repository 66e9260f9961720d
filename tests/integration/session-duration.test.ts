/**
 * A tenant's session duration applies to the sessions already running, as the policy says now
 * (src/sessions/duration.ts): lowered, it ends those older than it, everywhere a session counts.
 */
import { startTestServer, type TestServer } from '../helpers/server';
import { bearer, createClient, createTenant, createUser, form, introspect, json, login, refresh, type ClientCreds } from '../helpers/flows';
import { dbLabel } from '../helpers/env';

const PASSWORD = 'a perfectly decent passphrase';

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
    srv = await startTestServer();
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
    const sessions = (await json(srv, 'GET', '/sessions', undefined, bearer(young.access_token))).json.sessions as Array<{ current: boolean }>;
    expect(sessions).toEqual([expect.objectContaining({ current: true })]);

    expect((await introspect(srv, rs, young.access_token)).json.active).toBe(true);
    expect(await me(young.access_token)).toBe(200);
    expect((await refresh(srv, app, young.refresh_token)).status).toBe(200);
    expect((await introspect(srv, rs, (await login(srv, app, 'dora', PASSWORD)).access_token)).json.active).toBe(true);
  });
});
