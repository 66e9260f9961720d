/**
 * Introspection's fast path (src/oidc/fast-introspection.ts) answers exactly as oidc-provider's
 * endpoint does: every request here is sent twice, with the fast path on and off, and the two
 * answers must match — status, body and headers. The plain cases must be the fast path's own
 * (counted); everything else must reach the library, its body intact.
 */
import { connect } from 'node:net';
import { startTestServer, type TestServer } from '../helpers/server';
import { basic, clientCredentialsToken, createClient, createTenant, createUser, login, type ClientCreds } from '../helpers/flows';
import { dbLabel } from '../helpers/env';
import { storedTokenId } from '../../src/oidc/adapter';
import { header, post, type RawAnswer } from '../helpers/raw-http';
import { hashSecret } from '../../src/crypto/secrets';

describe(`introspection fast path (${dbLabel})`, () => {
  let srv: TestServer;
  let app: ClientCreds;
  let users: ClientCreds;
  let jwtApp: ClientCreds;
  let rs: ClientCreds;
  let rsElsewhere: ClientCreds;
  let postRs: ClientCreds;
  let token: string;

  beforeAll(async () => {
    srv = await startTestServer();
    await createTenant(srv, 'bank-f');
    await createTenant(srv, 'bank-g');
    app = await createClient(srv, { tenants: ['bank-f'], grant_types: ['client_credentials'], scope: 'accounts payments' });
    users = await createClient(srv, { tenants: ['bank-f'], grant_types: ['password', 'refresh_token'] });
    jwtApp = await createClient(srv, { tenants: ['bank-f'], grant_types: ['client_credentials'], token_format: 'jwt' });
    rs = await createClient(srv, { tenants: ['bank-f'], introspection: true });
    rsElsewhere = await createClient(srv, { tenants: ['bank-g'], introspection: true });
    postRs = await createClient(srv, { tenants: ['bank-f'], introspection: true, token_endpoint_auth_method: 'client_secret_post' });
    token = (await clientCredentialsToken(srv, app, { scope: 'accounts' })).access_token;
  });
  afterAll(async () => {
    await srv?.close();
  });

  const fast = () => srv.running.app.fastIntrospection;

  const send = (body: string, headers: Record<string, string>) => post(`${srv.base}/token/introspection`, body, headers);

  /** The same request on both paths; returns the answer and whether the fast path served it. */
  async function both(body: string, headers: Record<string, string>): Promise<RawAnswer & { served: boolean }> {
    const before = fast().served;
    const quick = await send(body, headers);
    const served = fast().served > before;
    fast().enabled = false;
    try {
      const library = await send(body, headers);
      expect(quick).toEqual(library);
      // The same members in the same order: a JSON answer is read as text by some parsers.
      if (typeof quick.body === 'object' && quick.body !== null) expect(Object.keys(quick.body)).toEqual(Object.keys(library.body as object));
    } finally {
      fast().enabled = true;
    }
    return { ...quick, served };
  }

  const FORM = { 'content-type': 'application/x-www-form-urlencoded' };
  const as = (c: ClientCreds) => ({ ...FORM, authorization: basic(c) });
  const q = (o: Record<string, string>) => new URLSearchParams(o).toString();

  test('an active client-credentials token: the same answer, from the fast path', async () => {
    const r = await both(q({ token }), as(rs));
    expect(r.served).toBe(true);
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ active: true, client_id: app.client_id, sub: app.client_id, tenant: 'bank-f', scope: 'accounts', token_type: 'Bearer' });
    expect(header(r, 'cache-control')).toBe('no-store');
    for (const hint of ['access_token', 'refresh_token', 'urn:ietf:params:oauth:token-type:access_token', 'no-such-hint']) {
      expect((await both(q({ token, token_type_hint: hint }), as(rs))).served).toBe(true);
    }
    expect((await both(q({ token }), { 'content-type': 'application/x-www-form-urlencoded; charset=UTF-8', authorization: basic(rs) })).served).toBe(true);
  });

  test('unknown, malformed and expired tokens are inactive on both paths', async () => {
    for (const t of ['no-such-token', 'x'.repeat(600), `${token}\u0000`]) {
      const r = await both(q({ token: t }), as(rs));
      expect(r.body).toEqual({ active: false });
    }
    const { knex } = srv.running.app.database;
    const past = (await clientCredentialsToken(srv, app)).access_token;
    await knex('oidc_payloads').where({ id: storedTokenId(past) }).update({ payload: knex.raw(`jsonb_set(payload, '{exp}', to_jsonb(?::int))`, [Math.floor(Date.now() / 1000) - 5]) });
    const stale = await both(q({ token: past }), as(rs));
    expect(stale).toMatchObject({ served: true, body: { active: false } });
    const gone = (await clientCredentialsToken(srv, app)).access_token;
    await knex('oidc_payloads').where({ id: storedTokenId(gone) }).update({ expires_at: new Date(Date.now() - 1000) });
    expect(await both(q({ token: gone }), as(rs))).toMatchObject({ served: true, body: { active: false } });
  });

  test('a revoked token is inactive at once on both paths', async () => {
    const t = (await clientCredentialsToken(srv, app)).access_token;
    expect((await both(q({ token: t }), as(rs))).body).toMatchObject({ active: true });
    const revoked = await fetch(`${srv.base}/token/revocation`, { method: 'POST', headers: as(app), body: q({ token: t }) });
    expect(revoked.status).toBe(200);
    expect(await both(q({ token: t }), as(rs))).toMatchObject({ served: true, body: { active: false } });
  });

  test('the policy holds: another tenant, a disabled issuer or tenant make a token inactive', async () => {
    expect(await both(q({ token }), as(rsElsewhere))).toMatchObject({ served: true, body: { active: false } });
    const { knex } = srv.running.app.database;
    const { caches } = srv.running.app.services;
    const other = await createClient(srv, { tenants: ['bank-f'], grant_types: ['client_credentials'] });
    const t = (await clientCredentialsToken(srv, other)).access_token;
    expect((await both(q({ token: t }), as(rs))).body).toMatchObject({ active: true });
    await knex('clients').where({ id: other.client_id }).update({ disabled: true });
    caches.changed('client', other.client_id);
    expect(await both(q({ token: t }), as(rs))).toMatchObject({ served: true, body: { active: false } });

    await createTenant(srv, 'bank-h');
    const hApp = await createClient(srv, { tenants: ['bank-h'], grant_types: ['client_credentials'] });
    const hRs = await createClient(srv, { tenants: ['bank-h'], introspection: true });
    const ht = (await clientCredentialsToken(srv, hApp)).access_token;
    expect((await both(q({ token: ht }), as(hRs))).body).toMatchObject({ active: true });
    await knex('tenants').where({ id: 'bank-h' }).update({ status: 'disabled' });
    caches.changed('tenant', 'bank-h');
    expect(await both(q({ token: ht }), as(hRs))).toMatchObject({ served: true, body: { active: false } });
  });

  test("a user's access token: the same claims; inactive once the user is locked; refresh tokens are the library's", async () => {
    await createUser(srv, 'bank-f', { username: 'fiona', password: 'correct horse battery staple 1' });
    const tokens = await login(srv, users, 'fiona', 'correct horse battery staple 1');
    const r = await both(q({ token: tokens.access_token }), as(rs));
    expect(r.served).toBe(true);
    expect(r.body).toMatchObject({ active: true, sub: tokens.member_id, client_id: users.client_id, tenant: 'bank-f' });
    const rt = await both(q({ token: tokens.refresh_token }), as(rs));
    expect(rt).toMatchObject({ served: false, status: 200, body: { active: false } }); // no tenant claim: not a resource server's business

    const { knex } = srv.running.app.database;
    // Its session ended (the Grant gone): inactive, though the token row is still there.
    const again = await login(srv, users, 'fiona', 'correct horse battery staple 1');
    const sid = ((await both(q({ token: again.access_token }), as(rs))).body as { sid: string }).sid;
    await knex('oidc_payloads').where({ type: 'Grant', id: sid }).del();
    expect(await both(q({ token: again.access_token }), as(rs))).toMatchObject({ served: true, body: { active: false } });

    await knex('users').where({ id: tokens.member_id }).update({ status: 'locked' });
    expect(await both(q({ token: tokens.access_token }), as(rs))).toMatchObject({ served: true, body: { active: false } });
  });

  test('JWTs, sender-constrained tokens and tokens with authorization details are left to the library', async () => {
    const jwt = (await clientCredentialsToken(srv, jwtApp)).access_token;
    expect(await both(q({ token: jwt }), as(rs))).toMatchObject({ served: false, status: 200, body: { active: true } });

    const { knex } = srv.running.app.database;
    const bound = (await clientCredentialsToken(srv, app)).access_token;
    await knex('oidc_payloads').where({ id: storedTokenId(bound) }).update({ payload: knex.raw(`jsonb_set(payload, '{jkt}', '"thumbprint"')`) });
    expect(await both(q({ token: bound }), as(rs))).toMatchObject({ served: false, body: { active: true, token_type: 'DPoP', cnf: { jkt: 'thumbprint' } } });

    const detailed = (await clientCredentialsToken(srv, app)).access_token;
    await knex('oidc_payloads').where({ id: storedTokenId(detailed) }).update({ payload: knex.raw(`jsonb_set(payload, '{rar}', '[{"type":"payment_initiation"}]')`) });
    expect(await both(q({ token: detailed }), as(rs))).toMatchObject({ served: false, body: { active: true, authorization_details: [{ type: 'payment_initiation' }] } });
  });

  test('every other request reaches the library, with its body', async () => {
    const cases: Array<[string, Record<string, string>, number]> = [
      [q({ token }), as(app), 403], // authenticated, but not a resource server
      [q({ token }), { ...FORM, authorization: basic({ ...rs, client_secret: 'wrong' }) }, 401],
      [q({ token, client_id: postRs.client_id, client_secret: postRs.client_secret }), FORM, 200], // client_secret_post
      [q({ token }), as(postRs), 200], // Basic for a client registered for post: the library takes either
      [`token=${token}&token=${token}`, as(rs), 400],
      [q({ token, client_id: rs.client_id }), as(rs), 200],
      [q({ token, client_id: 'someone-else' }), as(rs), 400],
      [q({ token, client_secret: rs.client_secret }), as(rs), 400],
      [q({ token: '' }), as(rs), 400],
      ['', as(rs), 400],
      [q({ token }), { authorization: basic(rs), 'content-type': 'application/json' }, 400],
      [q({ token }), { ...FORM, authorization: `Basic ${Buffer.from(`${rs.client_id}:${rs.client_secret}`).toString('base64').replace(/=+$/, '')}` }, 200],
      [q({ token }), { ...FORM }, 401],
      [q({ token, pad: 'a'.repeat(60000) }), as(rs), 413], // beyond the library's 56 KiB: refused before either path
      [q({ token }), { ...as(rs), 'oauth-client-attestation': '' }, 400],
      [q({ token }), { ...as(rs), 'content-type': 'application/x-www-form- urlencoded' }, 400],
      [q({ token }), { ...as(rs), 'content-type': 'application/x-www-form-\turlencoded' }, 400],
      [q({ token }), { ...as(rs), 'content-type': 'application/x-www-form-urlencoded; charset=iso-8859-1' }, 200],
      [q({ token, client_secret: 'x' }), { ...FORM, authorization: basic({ ...rs, client_id: 'nobody' }) }, 400],
    ];
    for (const [body, headers, status] of cases) {
      const r = await both(body, headers);
      expect({ body, status: r.status, served: r.served }).toEqual({ body, status, served: false });
    }
  });

  test('a client id naming no enabled client: the library’s 401, answered at once', async () => {
    for (const id of ['nobody', 'n'.repeat(300)]) {
      const r = await both(q({ token }), { ...FORM, authorization: basic({ ...rs, client_id: id }) });
      expect(r).toMatchObject({ served: true, status: 401, body: { error: 'invalid_client' } });
      expect(header(r, 'www-authenticate')).toContain('error="invalid_client"');
    }
  });

  test('extra claims cannot pose as the library’s cnf or authorization_details', async () => {
    const { knex } = srv.running.app.database;
    const t = (await clientCredentialsToken(srv, app)).access_token;
    await knex('oidc_payloads').where({ id: storedTokenId(t) }).update({ payload: knex.raw(`jsonb_set(payload, '{extra}', payload->'extra' || '{"cnf":{"jkt":"x"},"authorization_details":[{"type":"x"}]}')`) });
    const r = await both(q({ token: t }), as(rs));
    expect(r).toMatchObject({ served: true, body: { active: true } });
    expect(r.body).not.toHaveProperty('cnf');
    expect(r.body).not.toHaveProperty('authorization_details');
  });

  test('extra claims named like the answer’s own members: the token’s values win, in the library’s order', async () => {
    const { knex } = srv.running.app.database;
    const t = (await clientCredentialsToken(srv, app, { scope: 'accounts' })).access_token;
    // Computed, so that __proto__ is a member of the JSON (as JSON.parse makes it), not a prototype.
    const posing = {
      zeta: 1, scope: 'admin', active: false, client_id: 'someone-else', iss: 'https://elsewhere', jti: 'x', exp: 1, iat: 2, sid: 'sid-x',
      aud: 'elsewhere', sub: 'someone', token_type: 'none', ['__proto__']: 'x', alpha: 'a',
    };
    await knex('oidc_payloads').where({ id: storedTokenId(t) }).update({ payload: knex.raw(`jsonb_set(payload, '{extra}', payload->'extra' || ?::jsonb)`, [JSON.stringify(posing)]) });
    const r = await both(q({ token: t }), as(rs));
    expect(r.served).toBe(true);
    expect(r.body).toMatchObject({ active: true, client_id: app.client_id, scope: 'accounts', token_type: 'Bearer', iss: srv.base, zeta: 1, alpha: 'a' });
    const body = r.body as Record<string, unknown>;
    expect(body.exp).toBeGreaterThan(Math.floor(Date.now() / 1000));
    expect(body.jti).not.toBe('x');
  });

  test('a request whose body comes slowly is judged on the caller as it is when the body has arrived', async () => {
    const { knex } = srv.running.app.database;
    const { caches } = srv.running.app.services;
    const changing = await createClient(srv, { tenants: ['bank-f'], introspection: true });
    const slowly = (change: () => Promise<unknown>) =>
      post(`${srv.base}/token/introspection`, q({ token }), as(changing), async () => {
        await new Promise((r) => setTimeout(r, 100));
        await change();
        caches.changed('client', changing.client_id);
      });
    // The headers and half the body are in when the caller loses the permission, then its secret.
    expect(await slowly(() => knex('clients').where({ id: changing.client_id }).update({ introspection: false }))).toMatchObject({
      status: 403,
      body: { error: 'unauthorized_client' },
    });
    await knex('clients').where({ id: changing.client_id }).update({ introspection: true });
    caches.changed('client', changing.client_id);
    expect(await slowly(() => knex('clients').where({ id: changing.client_id }).update({ secret_hash: hashSecret('another-secret-0123456789abcdef0123') }))).toMatchObject({
      status: 401,
      body: { error: 'invalid_client' },
    });
  });

  test('a caller that goes away mid-body is counted as invalid_request, and nothing is left waiting', async () => {
    const failures = async () =>
      (await srv.running.app.services.metrics.failures.get()).values.find((v) => v.labels.endpoint === 'introspection' && v.labels.error === 'invalid_request')?.value ?? 0;
    const before = await failures();
    const url = new URL(srv.base);
    const body = q({ token });
    await new Promise<void>((resolve, reject) => {
      const socket = connect({ host: url.hostname, port: Number(url.port) }, () => {
        socket.write(
          `POST /token/introspection HTTP/1.1\r\nhost: ${url.host}\r\ncontent-type: application/x-www-form-urlencoded\r\n` +
            `authorization: ${basic(rs)}\r\ncontent-length: ${body.length}\r\n\r\n${body.slice(0, 10)}`,
        );
        setTimeout(() => {
          socket.destroy();
          resolve();
        }, 100);
      });
      socket.on('error', reject);
    });
    for (let i = 0; i < 100 && (await failures()) === before; i += 1) await new Promise((r) => setTimeout(r, 20));
    expect(await failures()).toBe(before + 1);
    // The server goes on answering, the fast path too.
    const served = fast().served;
    expect((await send(body, as(rs))).body).toMatchObject({ active: true });
    expect(fast().served).toBe(served + 1);
  });

  test('switched off, every introspection is the library’s', async () => {
    fast().enabled = false;
    try {
      const before = fast().served;
      const r = await send(q({ token }), as(rs));
      expect(r.body).toMatchObject({ active: true });
      expect(fast().served).toBe(before);
    } finally {
      fast().enabled = true;
    }
  });
});
