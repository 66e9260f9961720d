/**
 * The client_credentials grant's fast path (src/oidc/fast-client-credentials.ts) answers exactly
 * as oidc-provider's token endpoint does: every request here is sent twice, with the fast path on
 * and off, and the two answers must match — status, headers and body, the token itself aside — and
 * so must the two tokens as stored and as introspected. The plain cases must be the fast path's own
 * (counted); everything else must reach the library, its body intact.
 */
import { startTestServer, type TestServer } from '../helpers/server';
import { basic, createClient, createTenant, type ClientCreds } from '../helpers/flows';
import { dbLabel } from '../helpers/env';
import { storedTokenId } from '../../src/oidc/adapter';
import { header, post, type RawAnswer } from '../helpers/raw-http';
import { hashSecret } from '../../src/crypto/secrets';

/** Stored members that differ between any two tokens issued a moment apart. */
const PER_TOKEN = new Set(['jti', 'iat', 'exp']);

describe(`client_credentials fast path (${dbLabel})`, () => {
  let srv: TestServer;
  let app: ClientCreds;
  let broad: ClientCreds;
  let multi: ClientCreds;
  let untenanted: ClientCreds;
  let scopeless: ClientCreds;
  let jwtApp: ClientCreds;
  let postApp: ClientCreds;
  let passwordOnly: ClientCreds;
  let rs: ClientCreds;

  beforeAll(async () => {
    srv = await startTestServer();
    await createTenant(srv, 'bank-p');
    await createTenant(srv, 'bank-q');
    await srv.running.app.services.tenants.setPolicy('bank-q', { accessTokenTtlSeconds: 600 });
    app = await createClient(srv, { tenants: ['bank-p'], grant_types: ['client_credentials'], scope: 'accounts payments' });
    broad = await createClient(srv, { tenants: ['bank-p'], grant_types: ['client_credentials', 'password', 'refresh_token'], scope: 'payments accounts' });
    multi = await createClient(srv, { tenants: ['bank-p', 'bank-q'], grant_types: ['client_credentials'], scope: 'accounts' });
    untenanted = await createClient(srv, { tenants: [], grant_types: ['client_credentials'], admin: true }); // a platform admin
    scopeless = await createClient(srv, { tenants: ['bank-p'], grant_types: ['client_credentials'] });
    jwtApp = await createClient(srv, { tenants: ['bank-p'], grant_types: ['client_credentials'], token_format: 'jwt' });
    postApp = await createClient(srv, { tenants: ['bank-p'], grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_post' });
    passwordOnly = await createClient(srv, { tenants: ['bank-p'], grant_types: ['password'] });
    rs = await createClient(srv, { tenants: ['bank-p', 'bank-q'], introspection: true });
  });
  afterAll(async () => {
    await srv?.close();
  });

  const fast = () => srv.running.app.fastClientCredentials;

  const send = (path: string, body: string, headers: Record<string, string>, hold?: () => Promise<void>) => post(`${srv.base}${path}`, body, headers, hold);

  const tokenOf = (a: RawAnswer) => (a.body as { access_token?: string }).access_token;
  const withoutToken = (a: RawAnswer) => ({ ...a, body: typeof a.body === 'object' && a.body ? { ...a.body, access_token: tokenOf(a) ? 'issued' : undefined } : a.body });

  async function stored(token: string) {
    const row = await srv.running.app.database.knex('oidc_payloads').where({ id: storedTokenId(token) }).first();
    expect(row).toBeDefined();
    const payload = (typeof row.payload === 'string' ? JSON.parse(row.payload) : row.payload) as Record<string, unknown>;
    return {
      type: row.type as string,
      grantId: row.grant_id as string | null,
      accountId: row.account_id as string | null,
      lifetime: (payload.exp as number) - (payload.iat as number),
      // The row expires with the token: stamped at the INSERT, within a second or two of `iat`.
      rowExpiresWithToken: Math.abs(new Date(row.expires_at as string).getTime() / 1000 - (payload.exp as number)) < 2,
      payload: Object.fromEntries(Object.entries(payload).filter(([k]) => !PER_TOKEN.has(k))),
    };
  }

  async function introspected(token: string) {
    const answer = await send('/token/introspection', new URLSearchParams({ token }).toString(), { ...FORM, authorization: basic(rs) });
    const { jti: _jti, iat: _iat, exp, ...rest } = answer.body as Record<string, unknown>;
    return { ...answer, body: { ...rest, lifetime: typeof exp === 'number' ? exp - (_iat as number) : undefined } };
  }

  /** The same request on both paths; returns the fast path's answer and whether it served it. */
  async function both(body: string, headers: Record<string, string>, path = '/token'): Promise<RawAnswer & { served: boolean }> {
    const before = fast().served;
    const quick = await send(path, body, headers);
    const served = fast().served > before;
    let library: RawAnswer;
    // The reference: the library alone, the body streamed to it (no fast path reads it first).
    fast().enabled = false;
    srv.running.app.fastPassword.enabled = false;
    try {
      library = await send(path, body, headers);
    } finally {
      fast().enabled = true;
      srv.running.app.fastPassword.enabled = true;
    }
    expect(withoutToken(quick)).toEqual(withoutToken(library));
    // The same members in the same order: a JSON answer is read as text by some parsers.
    if (typeof quick.body === 'object' && quick.body !== null) expect(Object.keys(quick.body)).toEqual(Object.keys(library.body as object));
    const [a, b] = [tokenOf(quick), tokenOf(library)];
    if (a && b) {
      expect(a).not.toBe(b);
      const opaque = /^[A-Za-z0-9_-]{43}$/;
      expect(opaque.test(a)).toBe(opaque.test(b));
      if (opaque.test(a)) expect(await stored(a)).toEqual(await stored(b));
      // oidc-provider reads the clock twice for a token (now + lifetime for exp, then iat): across a
      // second's boundary a token lives a second less, on either path. The lifetimes agree within it.
      const [ia, ib] = [await introspected(a), await introspected(b)];
      expect(typeof ia.body.lifetime).toBe(typeof ib.body.lifetime);
      if (typeof ia.body.lifetime === 'number') expect(Math.abs(ia.body.lifetime - Number(ib.body.lifetime))).toBeLessThanOrEqual(1);
      expect({ ...ia, body: { ...ia.body, lifetime: ib.body.lifetime } }).toEqual(ib);
    }
    return { ...quick, served };
  }

  const FORM = { 'content-type': 'application/x-www-form-urlencoded' };
  const as = (c: ClientCreds) => ({ ...FORM, authorization: basic(c) });
  const q = (o: Record<string, string>) => new URLSearchParams(o).toString();

  test('a plain grant: the same answer and the same token, from the fast path', async () => {
    const r = await both(q({ grant_type: 'client_credentials' }), as(app));
    expect(r).toMatchObject({ served: true, status: 200, body: { token_type: 'Bearer', scope: 'accounts payments', expires_in: 1800 } });
    expect(header(r, 'cache-control')).toBe('no-store');
    const token = tokenOf(r)!;
    const row = await stored(token);
    expect(row).toMatchObject({ type: 'ClientCredentials', lifetime: 1800, payload: { clientId: app.client_id, extra: { tenant: 'bank-p', sub: app.client_id } } });
    expect((await introspected(token)).body).toMatchObject({ active: true, client_id: app.client_id, sub: app.client_id, tenant: 'bank-p', scope: 'accounts payments' });
  });

  test('scopes: requested, reordered, repeated, empty, or none — as the library grants them', async () => {
    for (const scope of ['accounts', 'payments accounts', 'accounts accounts', '', 'payments']) {
      const r = await both(q({ grant_type: 'client_credentials', scope }), as(app));
      expect({ scope, served: r.served, status: r.status }).toEqual({ scope, served: true, status: 200 });
    }
    expect((await both(q({ grant_type: 'client_credentials' }), as(broad))).body).toMatchObject({ scope: 'payments accounts' });
    // A scope stored with a repeat (the admin API's PATCH keeps it as given): granted once.
    const repeating = await createClient(srv, { tenants: ['bank-p'], grant_types: ['client_credentials'], scope: 'accounts' });
    await srv.running.app.database.knex('clients').where({ id: repeating.client_id }).update({ scope: 'accounts payments accounts' });
    srv.running.app.services.caches.changed('client', repeating.client_id);
    for (const scope of [undefined, 'accounts']) {
      const r = await both(q({ grant_type: 'client_credentials', ...(scope ? { scope } : {}) }), as(repeating));
      expect(r).toMatchObject({ served: true, status: 200, body: { scope: scope ?? 'accounts payments' } });
    }
    const none = await both(q({ grant_type: 'client_credentials' }), as(scopeless));
    expect(none).toMatchObject({ served: true, status: 200 });
    expect(none.body).not.toHaveProperty('scope');
  });

  test('tenants: named by header or form, one of several, none at all, and the tenant’s token lifetime', async () => {
    for (const [body, headers] of [
      [q({ grant_type: 'client_credentials', tenant: 'bank-q' }), as(multi)],
      [q({ grant_type: 'client_credentials' }), { ...as(multi), di_fiid: 'bank-q' }],
      [q({ grant_type: 'client_credentials' }), { ...as(multi), institutionId: 'bank-p' }],
      [q({ grant_type: 'client_credentials', tenant: 'bank-p' }), { ...as(multi), di_fiid: 'bank-p' }],
      [q({ grant_type: 'client_credentials', tenant: '' }), as(app)],
      [q({ grant_type: 'client_credentials' }), { ...as(app), 'content-type': 'application/x-www-form-urlencoded; charset=UTF-8' }],
    ] as const) {
      const r = await both(body, headers);
      expect({ body, served: r.served, status: r.status }).toEqual({ body, served: true, status: 200 });
    }
    const q600 = await both(q({ grant_type: 'client_credentials', tenant: 'bank-q' }), as(multi));
    expect(q600.body).toMatchObject({ expires_in: 600 });
    expect(await stored(tokenOf(q600)!)).toMatchObject({ lifetime: 600, rowExpiresWithToken: true, payload: { extra: { tenant: 'bank-q' } } });
    const free = await both(q({ grant_type: 'client_credentials' }), as(untenanted));
    expect(free.body).toMatchObject({ scope: 'admin' });
    expect((await stored(tokenOf(free)!)).payload.extra).toEqual({ sub: untenanted.client_id });
  });

  test('every other request reaches the library, with its body', async () => {
    const cc = { grant_type: 'client_credentials' };
    const cases: Array<[string, Record<string, string>, number]> = [
      [q(cc), { ...FORM, authorization: basic({ ...app, client_secret: 'wrong' }) }, 401],
      [q(cc), { ...FORM, authorization: basic({ ...app, client_id: 'nobody' }) }, 401],
      [q(cc), FORM, 401],
      [q({ ...cc, client_id: postApp.client_id, client_secret: postApp.client_secret }), FORM, 200], // client_secret_post
      [q(cc), as(postApp), 200], // Basic for a client registered for post: the library takes either
      [q({ ...cc, client_id: app.client_id }), as(app), 200],
      [q(cc), as(jwtApp), 200], // a JWT access token
      [q(cc), as(passwordOnly), 400], // a grant the client may not use
      [q({ grant_type: 'password', username: 'x', password: 'y' }), as(app), 400],
      [q({ grant_type: 'refresh_token', refresh_token: 'x' }), as(broad), 400],
      ['', as(app), 400],
      ['grant_type=client_credentials&grant_type=client_credentials', as(app), 400],
      ['grant_type=client_credentials&scope=accounts&scope=payments', as(app), 400],
      [q({ ...cc, scope: 'admin' }), as(app), 400], // not allowed
      [q({ ...cc, scope: 'accounts  payments' }), as(app), 400], // not the scope syntax
      [q({ ...cc, scope: 'acc"ounts' }), as(app), 400],
      [q({ ...cc, resource: srv.base }), as(app), 200],
      [q({ ...cc, resource: 'https://elsewhere.example' }), as(app), 400],
      [`${q(cc)}&resource=${encodeURIComponent(srv.base)}&resource=${encodeURIComponent(srv.base)}`, as(app), 400], // the audience twice: one resource only
      [`${q(cc)}&resource=${encodeURIComponent(srv.base)}&resource=${encodeURIComponent('https://elsewhere.example')}`, as(app), 400],
      [q({ ...cc, audience: 'x' }), as(app), 200], // a parameter the library ignores
      [q(cc), as(multi), 400], // several tenants, none named
      [q({ ...cc, tenant: 'bank-q' }), as(app), 400], // a tenant the client does not serve
      [q({ ...cc, tenant: 'no-such-bank' }), as(app), 400],
      [q({ ...cc, tenant: 'bank-p' }), { ...as(multi), di_fiid: 'bank-q' }, 400], // two tenants named
      ['grant_type=client_credentials&tenant=bank-p&tenant=bank-p', as(app), 400],
      [q(cc), { ...as(app), dpop: 'not-a-proof' }, 200], // DPoP is not offered: the header is ignored
      [q(cc), { ...as(app), 'oauth-client-attestation': '' }, 400],
      [q(cc), { authorization: basic(app), 'content-type': 'application/json' }, 400],
      [q(cc), { ...as(app), 'content-type': 'application/x-www-form-urlencoded; charset=iso-8859-1' }, 200],
      [q({ ...cc, pad: 'a'.repeat(60000) }), as(app), 413], // beyond the library's 56 KiB: refused before either path
      [q(cc), { ...FORM, authorization: `Basic ${Buffer.from(`${app.client_id}:${app.client_secret}`).toString('base64').replace(/=+$/, '')}` }, 200],
    ];
    for (const [body, headers, status] of cases) {
      const r = await both(body, headers);
      const request = { body: body.slice(0, 120), headers: { ...headers, authorization: headers.authorization?.slice(0, 12) } };
      expect({ request, status: r.status, served: r.served, answer: r.status === status ? undefined : r.body }).toEqual({ request, status, served: false, answer: undefined });
    }
  });

  test('the token endpoint’s other paths are served alike', async () => {
    for (const path of ['/v1/oauth/token', '/v1/token', '/token?grant_type=password&scope=admin']) {
      const r = await both(q({ grant_type: 'client_credentials' }), as(app), path);
      expect(r).toMatchObject({ served: true, status: 200 });
    }
  });

  test('a disabled client or tenant gets no token on either path', async () => {
    const { knex } = srv.running.app.database;
    const { caches } = srv.running.app.services;
    await createTenant(srv, 'bank-r');
    const gone = await createClient(srv, { tenants: ['bank-r'], grant_types: ['client_credentials'] });
    expect(await both(q({ grant_type: 'client_credentials' }), as(gone))).toMatchObject({ served: true, status: 200 });
    await knex('tenants').where({ id: 'bank-r' }).update({ status: 'disabled' });
    caches.changed('tenant', 'bank-r');
    expect(await both(q({ grant_type: 'client_credentials' }), as(gone))).toMatchObject({ served: false, status: 400, body: { error: 'invalid_request' } });
    await knex('clients').where({ id: gone.client_id }).update({ disabled: true });
    caches.changed('client', gone.client_id);
    expect(await both(q({ grant_type: 'client_credentials' }), as(gone))).toMatchObject({ served: false, status: 401, body: { error: 'invalid_client' } });
  });

  test('a secret rotation: the previous secret until its overlap ends, then neither path', async () => {
    const { knex } = srv.running.app.database;
    const { caches } = srv.running.app.services;
    const rotating = await createClient(srv, { tenants: ['bank-p'], grant_types: ['client_credentials'], scope: 'accounts' });
    const rotate = async (expiresAt: Date) => {
      await knex('clients')
        .where({ id: rotating.client_id })
        .update({ secret_hash: hashSecret('a-brand-new-secret-0123456789abcdef'), previous_secret_hash: hashSecret(rotating.client_secret), previous_secret_expires_at: expiresAt });
      caches.changed('client', rotating.client_id);
    };
    await rotate(new Date(Date.now() + 60_000));
    expect(await both(q({ grant_type: 'client_credentials' }), as(rotating))).toMatchObject({ served: true, status: 200 });
    await rotate(new Date(Date.now() - 1_000));
    expect(await both(q({ grant_type: 'client_credentials' }), as(rotating))).toMatchObject({ served: false, status: 401, body: { error: 'invalid_client' } });
    const renewed = { ...rotating, client_secret: 'a-brand-new-secret-0123456789abcdef' };
    expect(await both(q({ grant_type: 'client_credentials' }), as(renewed))).toMatchObject({ served: true, status: 200 });
  });

  test('a request whose body comes slowly is judged on the client as it is when the body has arrived', async () => {
    const { knex } = srv.running.app.database;
    const { caches } = srv.running.app.services;
    const changing = await createClient(srv, { tenants: ['bank-p', 'bank-q'], grant_types: ['client_credentials'], scope: 'accounts payments' });
    // The headers and half the body are in; the server waits for the rest while the client changes.
    const slowly = (body: string, change: () => Promise<unknown>) =>
      send('/token', body, as(changing), async () => {
        await new Promise((r) => setTimeout(r, 100));
        await change();
        caches.changed('client', changing.client_id);
      });
    const scoped = await slowly(q({ grant_type: 'client_credentials', scope: 'payments' }), () => knex('clients').where({ id: changing.client_id }).update({ scope: 'accounts' }));
    expect(scoped).toMatchObject({ status: 400, body: { error: 'invalid_scope' } });
    const tenanted = await slowly(q({ grant_type: 'client_credentials', tenant: 'bank-q' }), () =>
      knex('client_tenants').where({ client_id: changing.client_id, tenant_id: 'bank-q' }).del(),
    );
    expect(tenanted).toMatchObject({ status: 400, body: { error: 'invalid_request' } });
    const rekeyed = await slowly(q({ grant_type: 'client_credentials' }), () =>
      knex('clients').where({ id: changing.client_id }).update({ secret_hash: hashSecret('another-secret-0123456789abcdef0123') }),
    );
    expect(rekeyed).toMatchObject({ status: 401, body: { error: 'invalid_client' } });
  });

  test('tokens from the fast path are counted like the library’s', async () => {
    const metrics = await (await fetch(`${srv.base}/metrics`)).text();
    const issued = (text: string) => Number(/portcullis_tokens_issued_total\{grant="client_credentials",tenant="bank-p"\} (\d+)/.exec(text)?.[1] ?? 0);
    const before = issued(metrics);
    expect((await both(q({ grant_type: 'client_credentials' }), as(app))).served).toBe(true);
    expect(issued(await (await fetch(`${srv.base}/metrics`)).text())).toBe(before + 2);
  });

  test('random mixes of parameters, tenants, clients and headers: both paths answer alike', async () => {
    // A fixed seed: the same 150 requests on every run (mulberry32).
    let seed = 0x5eed;
    const random = () => {
      seed = (seed + 0x6d2b79f5) | 0;
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]!;
    const clients = [app, app, app, broad, multi, untenanted, scopeless, jwtApp, postApp, passwordOnly];
    const grants = ['client_credentials', 'client_credentials', 'client_credentials', 'client_credentials', 'client_credentials', 'password', 'refresh_token', 'urn:x', ''];
    const scopes = [undefined, undefined, '', 'accounts', 'payments', 'payments accounts', 'admin', 'accounts accounts', ' accounts', 'x'];
    const tenants = [undefined, undefined, undefined, undefined, '', 'bank-p', 'bank-p', 'bank-q', 'bank-r', 'nope'];
    const extras: Array<Record<string, string> | undefined> = [...Array<undefined>(7).fill(undefined), { resource: srv.base }, { audience: 'a' }, { client_id: app.client_id }];
    let served = 0;
    for (let i = 0; i < 150; i++) {
      const client = pick(clients);
      const form = new URLSearchParams();
      const grant = pick(grants);
      if (grant) form.append('grant_type', grant);
      const scope = pick(scopes);
      if (scope !== undefined) form.append('scope', scope);
      const tenant = pick(tenants);
      if (tenant !== undefined) form.append('tenant', tenant);
      for (const [k, v] of Object.entries(pick(extras) ?? {})) form.append(k, v);
      if (random() < 0.05) form.append('grant_type', 'client_credentials'); // a repeated parameter
      const headers: Record<string, string> = { ...as(random() < 0.05 ? { ...client, client_secret: 'wrong' } : client) };
      const header = pick([...Array<undefined>(6).fill(undefined), 'di_fiid', 'institutionId']);
      if (header) headers[header] = pick(['bank-p', 'bank-q', 'nope']);
      const r = await both(form.toString(), headers);
      if (r.served) served += 1;
    }
    expect(served).toBeGreaterThan(5); // the plain ones among them (12 when written)
  });

  test('switched off, every token request is the library’s', async () => {
    fast().enabled = false;
    try {
      const before = fast().served;
      const r = await send('/token', q({ grant_type: 'client_credentials' }), as(app));
      expect(r.status).toBe(200);
      expect(fast().served).toBe(before);
    } finally {
      fast().enabled = true;
    }
  });
});
