import { createHash } from 'node:crypto';
import { startTestServer, type TestServer } from '../helpers/server';
import { basic, createClient, createTenant, form, introspect, json, passwordLogin, refresh, type ClientCreds } from '../helpers/flows';
import { dbLabel } from '../helpers/env';

const PASSWORD = 'a long and unusual passphrase';

describe(`registration (${dbLabel})`, () => {
  let srv: TestServer;
  let app: ClientCreds;
  let rs: ClientCreds;
  let ccToken: string;

  const userCount = async () => Number((await srv.running.app.database.knex('users').count({ n: '*' }).first())?.n);
  const register = (body: unknown, headers: Record<string, string> = { 'api-key': app.api_key }) => json(srv, 'POST', '/users', body, headers);

  beforeAll(async () => {
    srv = await startTestServer();
    await createTenant(srv, 'bank-a');
    await createTenant(srv, 'bank-b');
    app = await createClient(srv, { tenants: ['bank-a'], grant_types: ['password', 'client_credentials'] });
    rs = await createClient(srv, { tenants: ['bank-a'], introspection: true });
    ccToken = (await form(srv, '/token', { grant_type: 'client_credentials' }, { authorization: basic(app) })).json.access_token as string;
  });
  afterAll(async () => srv?.close());

  test('registration with the API key → 201 with the user and a working token pair', async () => {
    const res = await register({
      tenant: 'bank-a',
      email: 'Carol@Example.com',
      password: PASSWORD,
      acceptedTerms: true,
      termsVersion: '2026-01',
      profile: { firstName: 'Carol', lastName: 'Smith', nationality: 'GB' },
      group: 'retail',
    });
    expect(res.status).toBe(201);
    const user = res.json.user as Record<string, unknown>;
    const token = res.json.token as Record<string, string>;
    expect(user).toMatchObject({ tenant: 'bank-a', email: 'carol@example.com', role: 'root', group: 'retail', status: 'active', termsVersion: '2026-01' });
    expect(user.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(JSON.stringify(res.json)).not.toContain(PASSWORD);
    expect(token.member_id).toBe(user.id);
    expect((await introspect(srv, rs, token.access_token!)).json).toMatchObject({ active: true, sub: user.id, tenant: 'bank-a', acr: 'urn:openbanking:psd2:ca' });
    expect((await refresh(srv, app, token.refresh_token!)).status).toBe(200);
    expect((await passwordLogin(srv, app, 'carol@example.com', PASSWORD)).status).toBe(200);
  });

  test('registration with a client token (tenant from the token) works too', async () => {
    const res = await register({ username: 'dave', password: PASSWORD, acceptedTerms: true }, { authorization: `Bearer ${ccToken}` });
    expect(res.status).toBe(201);
    expect((res.json.user as { tenant: string }).tenant).toBe('bank-a');
  });

  test.each([
    ['no acceptedTerms', { email: 'x1@example.com', password: PASSWORD }, 'acceptedTerms'],
    ['acceptedTerms false', { email: 'x2@example.com', password: PASSWORD, acceptedTerms: false }, 'acceptedTerms'],
    ['a bad email', { email: 'not-an-email', password: PASSWORD, acceptedTerms: true }, 'email'],
    ['a bad mobile', { mobile: '07700 900123', password: PASSWORD, acceptedTerms: true }, 'mobile'],
    ['no identifier', { password: PASSWORD, acceptedTerms: true }, 'email'],
    ['a breached password', { email: 'x3@example.com', password: 'password1', acceptedTerms: true }, 'password'],
    ['a breached password in capitals', { email: 'x3@example.com', password: 'BASEBALL1', acceptedTerms: true }, 'password'],
    ['a short password', { email: 'x4@example.com', password: 'Zq9!x', acceptedTerms: true }, 'password'],
    ['a password with a lone surrogate', { email: 'x6@example.com', password: `${PASSWORD}\ud800`, acceptedTerms: true }, 'password'],
    ['an unknown field', { email: 'x5@example.com', password: PASSWORD, acceptedTerms: true, isAdmin: true }, ''],
  ])('%s → 400 in the documented shape, nothing stored', async (_name, body, field) => {
    const before = await userCount();
    const res = await register({ tenant: 'bank-a', ...body });
    expect(res.status).toBe(400);
    expect(res.json.message).toEqual(expect.any(String));
    const fields = (res.json.syntaxErrors as { invalidFields: Array<{ fieldName: string; error: string }> }).invalidFields;
    expect(fields.length).toBeGreaterThan(0);
    if (field) expect(fields.map((f) => f.fieldName)).toContain(field);
    expect(await userCount()).toBe(before);
  });

  test("every field's problem comes in one answer, whichever check finds it", async () => {
    const before = await userCount();
    const names = async (body: Record<string, unknown>) => {
      const res = await register({ tenant: 'bank-a', ...body });
      expect(res.status).toBe(400);
      return (res.json.syntaxErrors as { invalidFields: Array<{ fieldName: string }> }).invalidFields.map((f) => f.fieldName).sort();
    };
    expect(await names({ email: 'notanemail', password: '123', acceptedTerms: false })).toEqual(['acceptedTerms', 'email', 'password']);
    expect(await names({})).toEqual(['acceptedTerms', 'email', 'password']);
    expect(await names({ mobile: '12', username: 'a', password: 42, acceptedTerms: true })).toEqual(['mobile', 'password', 'username']);
    expect(await userCount()).toBe(before);
  });

  test('a breached password is refused with a generic reason', async () => {
    const res = await register({ tenant: 'bank-a', email: 'y@example.com', password: 'iloveyou', acceptedTerms: true });
    const fields = (res.json.syntaxErrors as { invalidFields: Array<{ fieldName: string; error: string }> }).invalidFields;
    expect(fields).toEqual([{ fieldName: 'password', error: 'is too common; choose another' }]);
  });

  test('a duplicate identifier → 409, nothing stored', async () => {
    await register({ tenant: 'bank-a', mobile: '+447911123400', password: PASSWORD, acceptedTerms: true });
    const before = await userCount();
    const res = await register({ tenant: 'bank-a', mobile: '+447911123400', password: PASSWORD, acceptedTerms: true });
    expect(res.status).toBe(409);
    expect(res.json).toEqual({ message: 'mobile is already registered', code: 'IDENTIFIER_TAKEN' });
    expect(await userCount()).toBe(before);
    // With an idempotency-ref the insert runs in the request's transaction: the duplicate is still
    // a 409 (it once aborted that transaction, and the reply became a 500), and the ref is free again.
    const headers = { 'api-key': app.api_key, 'idempotency-ref': 'dup-mobile-1' };
    const again = await register({ tenant: 'bank-a', mobile: '+447911123400', password: PASSWORD, acceptedTerms: true }, headers);
    expect(again.status).toBe(409);
    expect(again.json).toEqual({ message: 'mobile is already registered', code: 'IDENTIFIER_TAKEN' });
    expect(await userCount()).toBe(before);
    expect((await register({ tenant: 'bank-a', mobile: '+447911123401', password: PASSWORD, acceptedTerms: true }, headers)).status).toBe(201);
  });

  test('malformed JSON, a wrong content type and an oversized body are refused', async () => {
    expect((await register('{"email":')).status).toBe(400);
    expect((await register('{"email":')).json).toEqual({ message: 'Request is invalid', syntaxErrors: { invalidFields: [{ fieldName: 'body', error: 'is not valid JSON' }] } });
    // Valid JSON with a "__proto__" key, anywhere: refused (prototype poisoning), and told why.
    const poisoned = await register(`{"tenant":"bank-a","email":"proto@example.com","password":"${PASSWORD}","acceptedTerms":true,"profile":{"__proto__":{"admin":true}}}`);
    expect([poisoned.status, poisoned.json]).toEqual([400, { message: 'Request is invalid', syntaxErrors: { invalidFields: [{ fieldName: 'body', error: 'must not contain a "__proto__" key' }] } }]);
    const wrongType = await fetch(`${srv.base}/users`, { method: 'POST', headers: { 'content-type': 'text/plain', 'api-key': app.api_key }, body: 'hello' });
    expect(wrongType.status).toBe(415);
    const body = JSON.stringify({ tenant: 'bank-a', email: 'utf16@example.com', password: PASSWORD, acceptedTerms: true });
    const utf16 = await fetch(`${srv.base}/users`, { method: 'POST', headers: { 'content-type': 'application/json; charset=utf-16', 'api-key': app.api_key }, body });
    expect([utf16.status, await utf16.json()]).toEqual([415, { message: 'Request body must be application/json in UTF-8', code: 'UNSUPPORTED_MEDIA_TYPE' }]);
    const utf8 = await fetch(`${srv.base}/users`, { method: 'POST', headers: { 'content-type': 'application/json; charset=UTF-8', 'api-key': app.api_key }, body });
    expect(utf8.status).toBe(201);
    const big = await register({ tenant: 'bank-a', email: 'big@example.com', password: PASSWORD, acceptedTerms: true, pad: 'x'.repeat(200_000) });
    expect(big.status).toBe(413);
    expect((await register('[1,2]')).status).toBe(400);
    for (const body of ['null', '42', '"x"', '""', '[1,2]']) {
      expect([body, (await register(body)).json]).toEqual([body, { message: 'Request is invalid', syntaxErrors: { invalidFields: [{ fieldName: 'body', error: 'must be a JSON object' }] } }]);
    }
  });

  test('account authentication: none → 401, a wrong API key → 401, another tenant → 403', async () => {
    expect((await register({ tenant: 'bank-a', email: 'z@example.com', password: PASSWORD, acceptedTerms: true }, {})).status).toBe(401);
    expect((await register({ tenant: 'bank-a', email: 'z@example.com', password: PASSWORD, acceptedTerms: true }, { 'api-key': 'nope' })).status).toBe(401);
    const other = await register({ tenant: 'bank-b', email: 'z@example.com', password: PASSWORD, acceptedTerms: true });
    expect(other.status).toBe(403);
    expect(other.json.code).toBe('TENANT_NOT_ALLOWED');
  });

  test('a client token and an API key shown together must be the same client', async () => {
    const other = await createClient(srv, { tenants: ['bank-a'], grant_types: ['password'] });
    const before = await userCount();
    const mismatched = await register({ username: 'mallory', password: PASSWORD, acceptedTerms: true }, { authorization: `Bearer ${ccToken}`, 'api-key': other.api_key });
    expect(mismatched.status).toBe(401);
    expect(mismatched.headers.get('www-authenticate')).toBe('ApiKey header="api-key"');
    const unreadable = await register({ username: 'mallory', password: PASSWORD, acceptedTerms: true }, { authorization: 'Basic bm90OnVzZWQ=', 'api-key': app.api_key });
    expect(unreadable.status).toBe(401);
    expect(unreadable.headers.get('www-authenticate')).toBe(`Bearer realm="${srv.running.app.config.publicUrl}"`); // no bearer token sent: no error code
    expect(await userCount()).toBe(before);
    const both = await register({ username: 'mallory', password: PASSWORD, acceptedTerms: true }, { authorization: `Bearer ${ccToken}`, 'api-key': app.api_key });
    expect(both.status).toBe(201);
  });

  test('a tenant that requires the API key requires it for registration, beside a client token too', async () => {
    await createTenant(srv, 'bank-k');
    await srv.running.app.services.tenants.setPolicy('bank-k', { requireApiKey: true });
    const k = await createClient(srv, { tenants: ['bank-k'], grant_types: ['password', 'client_credentials'] });
    const kToken = (await form(srv, '/token', { grant_type: 'client_credentials' }, { authorization: basic(k) })).json.access_token as string;
    const before = await userCount();
    const tokenOnly = await register({ username: 'kim', password: PASSWORD, acceptedTerms: true }, { authorization: `Bearer ${kToken}` });
    expect(tokenOnly.status).toBe(401);
    expect(tokenOnly.json).toEqual({ message: 'An api-key header is required', code: 'UNAUTHORIZED' });
    expect(tokenOnly.headers.get('www-authenticate')).toBe('ApiKey header="api-key"');
    expect(await userCount()).toBe(before);
    expect((await register({ username: 'kim', password: PASSWORD, acceptedTerms: true }, { authorization: `Bearer ${kToken}`, 'api-key': k.api_key })).status).toBe(201);
    expect((await register({ username: 'kit', password: PASSWORD, acceptedTerms: true }, { 'api-key': k.api_key })).status).toBe(201);
    // A stored reply is no way round it: the same body and ref with the token alone is refused, not replayed.
    const body = { username: 'kip', password: PASSWORD, acceptedTerms: true };
    expect((await register(body, { 'api-key': k.api_key, 'idempotency-ref': 'kip-1' })).status).toBe(201);
    const replay = await register(body, { authorization: `Bearer ${kToken}`, 'idempotency-ref': 'kip-1' });
    expect([replay.status, replay.headers.get('idempotent-replayed')]).toEqual([401, null]);
  });

  test('an idempotency-ref of a registration by API key is scoped to the tenant it names', async () => {
    await createTenant(srv, 'bank-c');
    await createTenant(srv, 'bank-d');
    const multi = await createClient(srv, { tenants: ['bank-c', 'bank-d'], grant_types: ['password', 'client_credentials'] });
    const headers = { 'api-key': multi.api_key, 'idempotency-ref': 'reg-per-tenant' };
    const inC = await register({ tenant: 'bank-c', username: 'sam', password: PASSWORD, acceptedTerms: true }, headers);
    expect(inC.status).toBe(201);
    const inD = await register({ tenant: 'bank-d', username: 'sam', password: PASSWORD, acceptedTerms: true }, headers);
    expect(inD.status).toBe(201);
    expect((inD.json.user as { id: string }).id).not.toBe((inC.json.user as { id: string }).id);
    const again = await register({ tenant: 'bank-c', username: 'sam', password: PASSWORD, acceptedTerms: true }, headers);
    expect(again.status).toBe(201);
    expect(again.headers.get('idempotent-replayed')).toBe('true');
    expect((again.json.user as { id: string }).id).toBe((inC.json.user as { id: string }).id);
    // A client token bound to bank-c may not register in bank-d: nor may it collect the reply of a
    // registration there by its ref.
    const cToken = (await form(srv, '/token', { grant_type: 'client_credentials', tenant: 'bank-c' }, { authorization: basic(multi) })).json.access_token as string;
    const crossed = await register({ tenant: 'bank-d', username: 'sam', password: PASSWORD, acceptedTerms: true }, { authorization: `Bearer ${cToken}`, 'idempotency-ref': 'reg-per-tenant' });
    expect([crossed.status, crossed.json.code, crossed.headers.get('idempotent-replayed')]).toEqual([403, 'TENANT_NOT_ALLOWED', null]);
  });

  test("with an idempotency-ref, the session is saved one statement at a time on the ref's transaction", async () => {
    // A transaction has one connection; a statement sent while another runs there is queued by the
    // pg driver only as a deprecated courtesy. Counted from knex's query events.
    const knex = srv.running.app.database.knex;
    type Q = { __knexUid?: string; sql?: string };
    // Statements in flight, by connection (outside a transaction knex gives each its own); knex
    // reports no response to its own BEGIN, SAVEPOINT, RELEASE and COMMIT, so those are left out.
    const counted = (q: Q | undefined) => !!q?.__knexUid && !/^\s*(begin|commit|rollback|savepoint|release)\b/i.test(q.sql ?? '');
    const running = new Map<string, number>();
    let most = 0;
    const started = (q: Q) => {
      if (!counted(q)) return;
      const n = (running.get(q.__knexUid!) ?? 0) + 1;
      running.set(q.__knexUid!, n);
      most = Math.max(most, n);
    };
    const ended = (_err: unknown, q: Q) => {
      if (counted(q)) running.set(q.__knexUid!, (running.get(q.__knexUid!) ?? 1) - 1);
    };
    knex.on('query', started).on('query-response', (_r: unknown, q: Q) => ended(undefined, q)).on('query-error', ended);
    try {
      const res = await register({ tenant: 'bank-a', username: 'one-at-a-time', password: PASSWORD, acceptedTerms: true }, { 'api-key': app.api_key, 'idempotency-ref': 'reg-in-turn' });
      expect(res.status).toBe(201);
      expect(res.json.token).toMatchObject({ refresh_token: expect.any(String) });
    } finally {
      knex.removeAllListeners('query').removeAllListeners('query-response').removeAllListeners('query-error');
    }
    expect(running.size).toBeGreaterThan(0);
    expect(most).toBe(1);
  });

  test("an idempotency record keeps no plain digest of its request: a registration's password cannot be tried against it", async () => {
    const body = { tenant: 'bank-a', username: 'digest-free', password: PASSWORD, acceptedTerms: true };
    const headers = { 'api-key': app.api_key, 'idempotency-ref': 'no-plain-digest' };
    expect((await register(body, headers)).status).toBe(201);
    const records = srv.running.app.database.knex('idempotency_records').where({ ref: 'no-plain-digest' });
    const stored = ((await records.clone().first('request_hash')) as { request_hash: string }).request_hash;
    // What the record held before: SHA-256 of the method, path and the body's keys in order.
    const text = `POST /users\n{${Object.keys(body).sort().map((k) => `${JSON.stringify(k)}:${JSON.stringify(body[k as keyof typeof body])}`).join(',')}}`;
    const plain = createHash('sha256').update(text).digest('base64url');
    expect(stored).not.toContain(plain);
    expect(stored).toMatch(/^h1\./);
    // It still tells the same request from another.
    const replay = await register(body, headers);
    expect([replay.status, replay.headers.get('idempotent-replayed')]).toEqual([201, 'true']);
    expect((await register({ ...body, password: `${PASSWORD} but another` }, headers)).status).toBe(409);

    // A record stored before the change (a plain digest) still gets its request's reply.
    await records.clone().update({ request_hash: plain });
    const old = await register(body, headers);
    expect([old.status, old.headers.get('idempotent-replayed')]).toEqual([201, 'true']);
    expect((await register({ ...body, password: `${PASSWORD} but another` }, headers)).status).toBe(409);
  });

  test('a tenant may close registration', async () => {
    await srv.running.app.services.tenants.setPolicy('bank-b', { registrationOpen: false });
    const b = await createClient(srv, { tenants: ['bank-b'], grant_types: ['password'] });
    const res = await register({ tenant: 'bank-b', email: 'w@example.com', password: PASSWORD, acceptedTerms: true }, { 'api-key': b.api_key });
    expect(res.status).toBe(403);
    expect(res.json.code).toBe('REGISTRATION_CLOSED');
  });
});
