/**
 * The password grant's fast path (src/oidc/fast-password.ts) answers exactly as oidc-provider's
 * token endpoint with our grant handler does: every request here is sent twice, with the fast path
 * on and off, and the two answers must match — status, headers (in their order) and body, the
 * tokens themselves aside — and so must what each left behind: the session and tokens as stored and
 * introspected, the user's failure count, the metrics. The plain cases must be the fast path's own
 * (counted); everything decided before a login begins must reach the library, its body intact.
 */
import { startTestServer, type TestServer } from '../helpers/server';
import { basic, bearer, createClient, createTenant, createUser, json, login, type ClientCreds } from '../helpers/flows';
import { dbLabel } from '../helpers/env';
import { storedTokenId } from '../../src/oidc/adapter';
import { header, post, type RawAnswer } from '../helpers/raw-http';
import { errors } from 'oidc-provider';

const PASSWORD = 'a perfectly ordinary passphrase';
const FORM = { 'content-type': 'application/x-www-form-urlencoded' };
const as = (c: ClientCreds) => ({ ...FORM, authorization: basic(c) });
const q = (o: Record<string, string>) => new URLSearchParams(o).toString();
const pw = (username: string, password = PASSWORD, extra: Record<string, string> = {}) => q({ grant_type: 'password', username, password, ...extra });

/** Introspection members that differ between any two logins a moment apart. */
const PER_LOGIN = new Set(['jti', 'iat', 'exp', 'sid', 'auth_time']);

function differential(srv: () => TestServer, rs: () => ClientCreds) {
  const fast = () => srv().running.app.fastPassword;
  const setFastPaths = (on: boolean) => {
    srv().running.app.fastPassword.enabled = on;
    srv().running.app.fastClientCredentials.enabled = on;
  };
  const send = (path: string, body: string, headers: Record<string, string>) => post(`${srv().base}${path}`, body, headers);
  const tokens = (a: RawAnswer) => a.body as { access_token?: string; refresh_token?: string };
  const withoutTokens = (a: RawAnswer) => {
    if (typeof a.body !== 'object' || a.body === null) return a;
    const { access_token: at, refresh_token: rt } = tokens(a);
    return { ...a, body: { ...a.body, ...(at ? { access_token: 'issued' } : {}), ...(rt ? { refresh_token: 'issued' } : {}) } };
  };

  async function introspected(token: string) {
    const answer = await send('/token/introspection', q({ token }), as(rs()));
    const body = answer.body as Record<string, unknown>;
    const rest = Object.fromEntries(Object.entries(body).filter(([k]) => !PER_LOGIN.has(k)));
    return { status: answer.status, body: { ...rest, lifetime: typeof body.exp === 'number' ? body.exp - (body.iat as number) : undefined } };
  }

  /** The session (Grant) a user token belongs to, and its tokens, as stored. */
  async function storedSession(accessToken: string) {
    const knex = srv().running.app.database.knex;
    const opaque = /^[A-Za-z0-9_-]{43}$/.test(accessToken);
    const sid = opaque
      ? ((await knex('oidc_payloads').where({ id: storedTokenId(accessToken) }).first()) as { grant_id: string }).grant_id
      : (JSON.parse(Buffer.from(accessToken.split('.')[1]!, 'base64url').toString()) as { sid: string }).sid;
    const rows = (await knex('oidc_payloads').where({ grant_id: sid }).orWhere({ id: sid })) as Array<{ type: string; payload: unknown; account_id: string | null }>;
    return rows
      .map((r) => {
        const p = (typeof r.payload === 'string' ? JSON.parse(r.payload) : r.payload) as Record<string, unknown>;
        return { type: r.type, account: r.account_id, lifetime: typeof p.exp === 'number' ? p.exp - (p.iat as number) : undefined, scope: p.scope, gty: p.gty, extraKeys: Object.keys((p.extra as object) ?? {}).sort() };
      })
      .sort((a, b) => a.type.localeCompare(b.type));
  }

  /** A user's counters and the address's throttle points, to compare what each path left. */
  async function counters(username: string | undefined) {
    const knex = srv().running.app.database.knex;
    const points = ((await knex('rate_limits').where('key', 'like', 'login_ip:%')) as Array<{ points: number }>).reduce((sum, r) => sum + Number(r.points), 0);
    const row = username
      ? ((await knex('users').where({ username }).first()) as { failed_login_count: number; lockout_count: number; locked_until: unknown } | undefined)
      : undefined;
    return { points, failed: row?.failed_login_count ?? 0, lockouts: row?.lockout_count ?? 0, locked: row ? row.locked_until !== null : false };
  }

  /**
   * The same request on both paths; the fast path's answer, whether it served it, and the change
   * each path made to `username`'s counters (must be the same).
   */
  async function both(body: string, headers: Record<string, string>, opts: { path?: string; username?: string } = {}): Promise<RawAnswer & { served: boolean }> {
    const path = opts.path ?? '/token';
    const before = fast().served;
    const c0 = await counters(opts.username);
    const quick = await send(path, body, headers);
    const served = fast().served > before;
    const c1 = await counters(opts.username);
    let library: RawAnswer;
    try {
      // The reference: the library alone, the body streamed to it (no fast path reads it first).
      setFastPaths(false);
      library = await send(path, body, headers);
    } finally {
      setFastPaths(true);
    }
    const c2 = await counters(opts.username);
    expect(fast().served).toBe(served ? before + 1 : before);
    expect(withoutTokens(quick)).toEqual(withoutTokens(library));
    // The same members in the same order: a JSON answer is read as text by some parsers.
    if (typeof quick.body === 'object' && quick.body !== null) expect(Object.keys(quick.body)).toEqual(Object.keys(library.body as object));
    // A login that succeeds resets the user's count on either path; one that fails counts alike.
    const change = (a: typeof c0, b: typeof c0) => ({
      points: b.points - a.points,
      failed: quick.status === 200 ? b.failed : b.failed - a.failed,
      lockouts: b.lockouts - a.lockouts,
      locked: b.locked,
    });
    expect(change(c0, c1)).toEqual(change(c1, c2));
    const [a, b] = [tokens(quick), tokens(library)];
    if (a.access_token && b.access_token) {
      expect(a.access_token).not.toBe(b.access_token);
      expect(await storedSession(a.access_token)).toEqual(await storedSession(b.access_token));
      expect(await introspected(a.access_token)).toEqual(await introspected(b.access_token));
    }
    if (a.refresh_token && b.refresh_token) expect(await introspected(a.refresh_token)).toEqual(await introspected(b.refresh_token));
    return { ...quick, served };
  }
  return { fast, send, both, setFastPaths, counters };
}

describe(`password grant fast path (${dbLabel})`, () => {
  let srv: TestServer;
  let app: ClientCreds;
  let multi: ClientCreds;
  let jwtApp: ClientCreds;
  let noRefresh: ClientCreds;
  let postApp: ClientCreds;
  let ccOnly: ClientCreds;
  let rs: ClientCreds;
  const { fast, send, both, setFastPaths } = differential(
    () => srv,
    () => rs,
  );

  beforeAll(async () => {
    // A window longer than the file: the address's points never start afresh between two sends.
    srv = await startTestServer({ config: { loginThrottle: { failuresPerWindow: 1000, windowSeconds: 3600 } } });
    await createTenant(srv, 'bank-p');
    await createTenant(srv, 'bank-q');
    await srv.running.app.services.tenants.setPolicy('bank-q', { accessTokenTtlSeconds: 600 });
    app = await createClient(srv, { tenants: ['bank-p'], grant_types: ['password', 'refresh_token'], scope: 'accounts payments' });
    multi = await createClient(srv, { tenants: ['bank-p', 'bank-q'], grant_types: ['password', 'refresh_token'], scope: 'accounts' });
    jwtApp = await createClient(srv, { tenants: ['bank-p'], grant_types: ['password', 'refresh_token'], token_format: 'jwt' });
    noRefresh = await createClient(srv, { tenants: ['bank-p'], grant_types: ['password'] });
    postApp = await createClient(srv, { tenants: ['bank-p'], grant_types: ['password'], token_endpoint_auth_method: 'client_secret_post' });
    ccOnly = await createClient(srv, { tenants: ['bank-p'], grant_types: ['client_credentials'] });
    rs = await createClient(srv, { tenants: ['bank-p', 'bank-q'], introspection: true });
    await createUser(srv, 'bank-p', { username: 'alice', email: 'alice@example.com', mobile: '+447911123456', password: PASSWORD });
    await createUser(srv, 'bank-q', { username: 'quentin', password: PASSWORD });
  });
  afterAll(async () => srv?.close());

  test('a plain login: the same answer, session and tokens, from the fast path', async () => {
    const r = await both(pw('alice'), as(app), { username: 'alice' });
    expect(r).toMatchObject({ served: true, status: 200, body: { token_type: 'Bearer', expires_in: 1800, scope: 'accounts payments' } });
    expect(r.body).toHaveProperty('refresh_token');
    expect(r.body).toHaveProperty('member_id');
    expect(header(r, 'cache-control')).toBe('no-store');
  });

  test('identifiers, scopes, tenants, token formats and clients without refresh: all served alike', async () => {
    const cases: Array<[string, Record<string, string>, string | undefined]> = [
      [pw('alice@example.com'), as(app), 'alice'],
      [pw('ALICE@example.com'), as(app), 'alice'],
      [pw('+447911123456'), as(app), 'alice'],
      [pw('alice', PASSWORD, { scope: 'accounts' }), as(app), 'alice'],
      [pw('alice', PASSWORD, { scope: 'payments accounts' }), as(app), 'alice'],
      [pw('alice', PASSWORD, { scope: 'accounts accounts' }), as(app), 'alice'],
      [pw('alice', PASSWORD, { scope: '' }), as(app), 'alice'],
      [pw('alice', PASSWORD, { tenant: 'bank-p' }), as(app), 'alice'],
      [pw('alice', PASSWORD, { tenant: '' }), as(app), 'alice'],
      [pw('alice', PASSWORD, { tenant: 'bank-p' }), as(multi), 'alice'],
      [pw('quentin'), { ...as(multi), di_fiid: 'bank-q' }, 'quentin'],
      [pw('quentin'), { ...as(multi), institutionId: 'bank-q' }, 'quentin'],
      [pw('alice'), as(jwtApp), 'alice'],
      [pw('alice'), as(noRefresh), 'alice'],
      [pw('alice'), { ...as(app), 'content-type': 'application/x-www-form-urlencoded; charset=UTF-8' }, 'alice'],
    ];
    for (const [body, headers, username] of cases) {
      const r = await both(body, headers, { username });
      expect({ body, served: r.served, status: r.status }).toEqual({ body, served: true, status: 200 });
    }
    const short = await both(pw('quentin', PASSWORD, { tenant: 'bank-q' }), as(multi), { username: 'quentin' });
    expect(short.body).toMatchObject({ expires_in: 600 });
  });

  test('refusals once the login has begun are the fast path’s, answered and counted as the library does', async () => {
    const user = await createUser(srv, 'bank-p', { username: 'bob', password: PASSWORD });
    const suspended = await createUser(srv, 'bank-p', { username: 'suspended', password: PASSWORD });
    await srv.running.app.database.knex('users').where({ id: suspended.id }).update({ status: 'locked' });
    const metric = async () => Number(/portcullis_oauth_failures_total\{endpoint="token",error="invalid_grant"\} (\d+)/.exec(await (await fetch(`${srv.base}/metrics`)).text())?.[1] ?? 0);
    const before = await metric();
    const cases: Array<[string, string | undefined]> = [
      [pw('bob', 'not the passphrase'), 'bob'],
      [pw('nobody-by-this-name'), undefined],
      [pw('suspended'), 'suspended'],
      [pw('!!'), undefined], // a name no user can have
      [pw('quentin'), 'quentin'], // a user of another tenant
    ];
    for (const [body, username] of cases) {
      const r = await both(body, as(app), { username });
      expect({ body, served: r.served, status: r.status, answer: r.body }).toEqual({
        body,
        served: true,
        status: 400,
        answer: { error: 'invalid_grant', error_description: 'invalid username or password' },
      });
    }
    expect(await metric()).toBe(before + 2 * cases.length);
    // Both paths counted bob's wrong password, and a right one on either resets the count.
    expect((await srv.running.app.database.knex('users').where({ id: user.id }).first()).failed_login_count).toBe(2);
    expect(await both(pw('bob'), as(app), { username: 'bob' })).toMatchObject({ served: true, status: 200 });
    expect((await srv.running.app.database.knex('users').where({ id: user.id }).first()).failed_login_count).toBe(0);
  });

  test('a login that must wait for its MFA challenge: the same pending answer', async () => {
    const user = await createUser(srv, 'bank-p', { username: 'carol', mobile: '+447911210001', password: PASSWORD });
    // An ACTIVE SMS factor (a sandbox tenant takes 123456), then MFA at every login.
    const t = await login(srv, app, 'carol', PASSWORD);
    await json(srv, 'POST', '/authentication_factors/otp/SMS', undefined, bearer(t.access_token));
    expect((await json(srv, 'POST', '/authentication_factors/otp/SMS/verify', { verificationCode: '123456' }, bearer(t.access_token))).status).toBe(204);
    await srv.running.app.services.users.setMfaRequired('bank-p', user.id, true);
    const r = await both(pw('carol'), as(app), { username: 'carol' });
    expect(r).toMatchObject({ served: true, status: 200, body: { mfa_required: true } });
    expect(r.body).not.toHaveProperty('refresh_token');
  });

  test('a lock reached on either path: the same answers, the same lock, counted once each', async () => {
    const lockouts = async () => Number(/portcullis_lockouts_total\{tenant="bank-p"\} (\d+)/.exec(await (await fetch(`${srv.base}/metrics`)).text())?.[1] ?? 0);
    await createUser(srv, 'bank-p', { username: 'eve-fast', password: PASSWORD });
    await createUser(srv, 'bank-p', { username: 'eve-library', password: PASSWORD });
    const attempts = async (username: string, on: boolean) => {
      const answers: RawAnswer[] = [];
      setFastPaths(on);
      try {
        // The default threshold of 10, then the right password while locked.
        for (let i = 0; i < 10; i += 1) answers.push(await send('/token', pw(username, `wrong ${i}`), as(app)));
        answers.push(await send('/token', pw(username), as(app)));
      } finally {
        setFastPaths(true);
      }
      const row = (await srv.running.app.database.knex('users').where({ username }).first()) as { failed_login_count: number; lockout_count: number; locked_until: string | null };
      return { answers, row: { failed: row.failed_login_count, lockouts: row.lockout_count, locked: row.locked_until !== null } };
    };
    const before = await lockouts();
    const servedBefore = fast().served;
    const quick = await attempts('eve-fast', true);
    expect(fast().served).toBe(servedBefore + 11);
    expect(await lockouts()).toBe(before + 1);
    const library = await attempts('eve-library', false);
    expect(fast().served).toBe(servedBefore + 11);
    expect(await lockouts()).toBe(before + 2);
    expect(quick).toEqual(library);
    expect(quick.row).toEqual({ failed: 10, lockouts: 1, locked: true });
  });

  test('a failure once the attempt is counted: the same answer, and the attempt given back, on both paths', async () => {
    const user = await createUser(srv, 'bank-p', { username: 'frank', password: PASSWORD });
    await srv.running.app.services.users.setMfaRequired('bank-p', user.id, true);
    // Login-time MFA reads the user's factors after the password was found right: fail it there.
    const { factors } = srv.running.app.services;
    const cases: Array<[string, () => Error, number]> = [
      ['the database away', () => Object.assign(new Error('Connection terminated unexpectedly'), { code: '57P01' }), 503],
      ['a bug', () => new Error('something unexpected'), 500],
      ['an exposed refusal', () => new errors.InvalidScope('requested scope is not allowed', 'payments'), 400],
      ['an unexposed error with a status', () => Object.assign(new Error('teapot'), { statusCode: 418 }), 418],
    ];
    for (const [name, error, status] of cases) {
      const list = jest.spyOn(factors, 'list').mockImplementation(async () => Promise.reject(error()));
      try {
        const r = await both(pw('frank'), as(app), { username: 'frank' });
        expect({ name, served: r.served, status: r.status }).toEqual({ name, served: true, status });
      } finally {
        list.mockRestore();
      }
    }
    expect((await srv.running.app.database.knex('users').where({ id: user.id }).first()).failed_login_count).toBe(0);
  });

  test('a refusal asked for as HTML, a disabled tenant, a disabled client', async () => {
    const { knex } = srv.running.app.database;
    const { caches } = srv.running.app.services;
    expect(await both(pw('alice', 'not the passphrase'), { ...as(app), accept: 'text/html' }, { username: 'alice' })).toMatchObject({ served: true, status: 400 });
    await createTenant(srv, 'bank-r');
    const gone = await createClient(srv, { tenants: ['bank-r'], grant_types: ['password'] });
    await createUser(srv, 'bank-r', { username: 'rita', password: PASSWORD });
    expect(await both(pw('rita'), as(gone), { username: 'rita' })).toMatchObject({ served: true, status: 200 });
    await knex('tenants').where({ id: 'bank-r' }).update({ status: 'disabled' });
    caches.changed('tenant', 'bank-r');
    expect(await both(pw('rita'), as(gone), { username: 'rita' })).toMatchObject({ served: false, status: 400, body: { error: 'invalid_request' } });
    await knex('clients').where({ id: gone.client_id }).update({ disabled: true });
    caches.changed('client', gone.client_id);
    expect(await both(pw('rita'), as(gone), { username: 'rita' })).toMatchObject({ served: false, status: 401, body: { error: 'invalid_client' } });
  });

  test('everything decided before a login begins reaches the library, with its body', async () => {
    const cases: Array<[string, Record<string, string>, number]> = [
      [pw('alice'), { ...FORM, authorization: basic({ ...app, client_secret: 'wrong' }) }, 401],
      [pw('alice'), { ...FORM, authorization: basic({ ...app, client_id: 'nobody' }) }, 401],
      [pw('alice'), FORM, 401],
      [pw('alice', PASSWORD, { client_id: postApp.client_id, client_secret: postApp.client_secret }), FORM, 200], // client_secret_post
      [pw('alice'), as(postApp), 200], // Basic for a client registered for post: the library takes either
      [pw('alice', PASSWORD, { client_id: app.client_id }), as(app), 200],
      [pw('alice'), as(ccOnly), 400], // a grant the client may not use
      [q({ grant_type: 'password', password: PASSWORD }), as(app), 400],
      [pw(''), as(app), 400],
      [pw('alice', ''), as(app), 400],
      [`${pw('alice')}&username=alice`, as(app), 400],
      [`${pw('alice')}&grant_type=password`, as(app), 400],
      [pw('alice', PASSWORD, { scope: 'admin' }), as(app), 400], // not allowed
      [pw('alice', PASSWORD, { scope: 'accounts  payments' }), as(app), 400], // not the scope syntax
      [pw('alice', PASSWORD, { resource: 'https://elsewhere.example' }), as(app), 400], // RFC 8707: not this server's resource
      [pw('alice', PASSWORD, { resource: srv.base }), as(app), 200], // its own
      [`${pw('alice', PASSWORD, { resource: srv.base })}&resource=${encodeURIComponent(srv.base)}`, as(app), 400], // one at most
      [pw('alice', PASSWORD, { audience: 'x' }), as(app), 200], // a parameter the library ignores
      [pw('alice'), as(multi), 400], // several tenants, none named
      [pw('alice', PASSWORD, { tenant: 'bank-q' }), as(app), 400], // a tenant the client does not serve
      [pw('alice', PASSWORD, { tenant: 'no-such-bank' }), as(app), 400],
      [pw('alice', PASSWORD, { tenant: 'bank-p' }), { ...as(multi), di_fiid: 'bank-q' }, 400], // two tenants named
      [pw('alice'), { ...as(app), dpop: 'not-a-proof' }, 200], // DPoP is the library's (our grant handler binds no token to it)
      [pw('alice'), { authorization: basic(app), 'content-type': 'application/json' }, 400],
      [pw('alice'), { ...as(app), 'content-type': 'application/x-www-form-urlencoded; charset=iso-8859-1' }, 200],
    ];
    for (const [body, headers, status] of cases) {
      const r = await both(body, headers, { username: 'alice' });
      const request = { body: body.slice(0, 120), headers: { ...headers, authorization: headers.authorization?.slice(0, 12) } };
      expect({ request, status: r.status, served: r.served, answer: r.status === status ? undefined : r.body }).toEqual({ request, status, served: false, answer: undefined });
    }
  });

  test('the token endpoint’s other paths are served alike', async () => {
    for (const path of ['/v1/oauth/token', '/v1/token']) {
      expect(await both(pw('alice'), as(app), { path, username: 'alice' })).toMatchObject({ served: true, status: 200 });
    }
  });

  test('switched off, every login goes through the library', async () => {
    fast().enabled = false;
    try {
      const before = fast().served;
      const r = await post(`${srv.base}/token`, pw('alice'), as(app));
      expect(r.status).toBe(200);
      expect(fast().served).toBe(before);
    } finally {
      fast().enabled = true;
    }
  });
});

/**
 * For a describe of a single case with its own configuration: a server of one tenant, a password
 * client, a resource server and one user, started before the describe's tests (`opts()` is read
 * then) and closed after them; `both` is the differential runner against it.
 */
function oneUserServer(opts: () => Parameters<typeof startTestServer>[0], username: string) {
  const s = {} as { srv: TestServer; app: ClientCreds; rs: ClientCreds };
  beforeAll(async () => {
    s.srv = await startTestServer(opts());
    await createTenant(s.srv, 'bank-p');
    s.app = await createClient(s.srv, { tenants: ['bank-p'], grant_types: ['password'] });
    s.rs = await createClient(s.srv, { tenants: ['bank-p'], introspection: true });
    await createUser(s.srv, 'bank-p', { username, password: PASSWORD });
  });
  afterAll(async () => s.srv?.close());
  const { both } = differential(
    () => s.srv,
    () => s.rs,
  );
  return { s, both };
}

describe(`password grant fast path: a throttled address (${dbLabel})`, () => {
  // A clock that stands still: Retry-After is the same whole number of seconds on both paths.
  const { s, both } = oneUserServer(() => {
    const frozen = new Date();
    return { clock: () => frozen, config: { loginThrottle: { failuresPerWindow: 2, windowSeconds: 60 } } };
  }, 'dave');

  test('over its budget: the same 429, Retry-After in its place, on both paths', async () => {
    const { srv, app } = s;
    // One wrong password on each path uses up the budget of two.
    expect(await both(pw('dave', 'not the passphrase'), as(app), { username: 'dave' })).toMatchObject({ served: true, status: 400 });
    const metric = async () =>
      Number(/portcullis_oauth_failures_total\{endpoint="token",error="temporarily_unavailable"\} (\d+)/.exec(await (await fetch(`${srv.base}/metrics`)).text())?.[1] ?? 0);
    const before = await metric();
    const r = await both(pw('dave'), as(app), { username: 'dave' });
    expect(r).toMatchObject({ served: true, status: 429, body: { error: 'temporarily_unavailable' } });
    expect(await metric()).toBe(before + 2);
    expect(Number(header(r, 'retry-after'))).toBeGreaterThan(0);
    expect(Number(header(r, 'retry-after'))).toBeLessThanOrEqual(60);
  });
});

describe(`password grant fast path: behind a trusted proxy (${dbLabel})`, () => {
  const { s, both } = oneUserServer(() => ({ config: { trustProxy: true, loginThrottle: { failuresPerWindow: 1000, windowSeconds: 3600 } } }), 'erin');

  test('both paths count the address the proxy appended, and only it', async () => {
    const { srv, app } = s;
    const points = async (ip: string) => Number(((await srv.running.app.database.knex('rate_limits').where({ key: `login_ip:${ip}` }).first()) as { points?: number } | undefined)?.points ?? 0);
    const headers = { ...as(app), 'x-forwarded-for': '198.51.100.23, 203.0.113.7' };
    expect(await both(pw('erin', 'not the passphrase'), headers, { username: 'erin' })).toMatchObject({ served: true, status: 400 });
    expect(await points('203.0.113.7')).toBe(2); // one wrong password on each path
    expect(await points('198.51.100.23')).toBe(0); // written by the client: not trusted
    expect(await both(pw('erin'), headers, { username: 'erin' })).toMatchObject({ served: true, status: 200 });
    expect(await points('203.0.113.7')).toBe(2); // a success gives its point back
  });
});
