import type { TestServer } from './server';

export interface ClientCreds {
  client_id: string;
  client_secret: string;
  api_key: string;
}

export const basic = (c: { client_id: string; client_secret: string }) =>
  `Basic ${Buffer.from(`${encodeURIComponent(c.client_id)}:${encodeURIComponent(c.client_secret)}`).toString('base64')}`;

export async function createTenant(srv: TestServer, id: string, mode: 'sandbox' | 'live' = 'sandbox') {
  return srv.running.app.services.tenantService.create({ id, mode });
}

export async function createClient(srv: TestServer, input: Parameters<TestServer['running']['app']['services']['clientService']['create']>[0]): Promise<ClientCreds> {
  const created = await srv.running.app.services.clientService.create(input);
  return { client_id: created.client.id, client_secret: created.clientSecret, api_key: created.apiKey };
}

export async function form(
  srv: TestServer,
  path: string,
  body: Record<string, string | string[]>,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: Headers; json: Record<string, unknown> }> {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(body)) for (const one of Array.isArray(v) ? v : [v]) params.append(k, one);
  const res = await fetch(`${srv.base}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
    body: params.toString(),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, json: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
}

export async function clientCredentialsToken(srv: TestServer, c: ClientCreds, extra: Record<string, string> = {}, headers: Record<string, string> = {}) {
  const res = await form(srv, '/token', { grant_type: 'client_credentials', ...extra }, { authorization: basic(c), ...headers });
  if (res.status !== 200) throw new Error(`token request failed: ${res.status} ${JSON.stringify(res.json)}`);
  return res.json as { access_token: string; expires_in: number; scope?: string; token_type: string };
}

export async function introspect(srv: TestServer, rs: ClientCreds, token: string) {
  return form(srv, '/token/introspection', { token }, { authorization: basic(rs) });
}

export async function json(
  srv: TestServer,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: Headers; json: Record<string, unknown> }> {
  const res = await fetch(`${srv.base}${path}`, {
    method,
    headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let parsed: Record<string, unknown>;
  try {
    parsed = text ? (JSON.parse(text) as Record<string, unknown>) : {};
  } catch {
    parsed = { raw: text };
  }
  return { status: res.status, headers: res.headers, json: parsed };
}

export async function createUser(
  srv: TestServer,
  tenantId: string,
  input: { email?: string; mobile?: string; username?: string; password: string },
) {
  const tenant = await srv.running.app.services.tenants.find(tenantId);
  if (!tenant) throw new Error(`no tenant ${tenantId}`);
  return srv.running.app.services.userService.register(tenant, { ...input, acceptedTerms: true });
}

export interface UserTokens {
  access_token: string;
  refresh_token: string;
  expires_in: number;
  member_id: string;
  scope?: string;
}

export async function passwordLogin(
  srv: TestServer,
  c: ClientCreds,
  username: string,
  password: string,
  extra: Record<string, string> = {},
): Promise<{ status: number; json: Record<string, unknown>; headers: Headers }> {
  return form(srv, '/token', { grant_type: 'password', username, password, ...extra }, { authorization: basic(c) });
}

export async function login(srv: TestServer, c: ClientCreds, username: string, password: string, extra: Record<string, string> = {}): Promise<UserTokens> {
  const res = await passwordLogin(srv, c, username, password, extra);
  if (res.status !== 200) throw new Error(`login failed: ${res.status} ${JSON.stringify(res.json)}`);
  return res.json as unknown as UserTokens;
}

export async function refresh(srv: TestServer, c: ClientCreds, refreshToken: string) {
  return form(srv, '/token', { grant_type: 'refresh_token', refresh_token: refreshToken }, { authorization: basic(c) });
}

/** A clock the test moves instead of sleeping. */
export function testClock(start = Date.now()) {
  let offset = 0;
  return {
    now: () => new Date(start + offset + (Date.now() - start)),
    advance(seconds: number) {
      offset += seconds * 1000;
    },
  };
}

export const bearer = (token: string, extra: Record<string, string> = {}) => ({ authorization: `Bearer ${token}`, ...extra });

/** What the `log` senders wrote to the development outbox, oldest first. */
export async function outbox(srv: TestServer, kind: 'sms' | 'push', recipient?: string): Promise<Array<Record<string, unknown>>> {
  const q = srv.running.app.database.knex('outbox').where({ kind }).orderBy('id');
  if (recipient) q.andWhere({ recipient });
  const rows = await q;
  return rows.map((r: { payload: unknown }) => (typeof r.payload === 'string' ? JSON.parse(r.payload) : r.payload) as Record<string, unknown>);
}

/** The last code texted to a number (live tenants). */
export async function lastCode(srv: TestServer, mobile: string): Promise<string> {
  const msgs = await outbox(srv, 'sms', mobile);
  const text = String(msgs[msgs.length - 1]?.text ?? '');
  const m = /\b(\d{6,10})\b/.exec(text);
  if (!m) throw new Error(`no code texted to ${mobile}`);
  return m[1]!;
}

/**
 * The SQL statements `fn` made the server run (on its main pool and its access-token pool), each
 * with its bindings (knex's; a prepared statement's values).
 */
export async function statements(srv: TestServer, fn: () => Promise<unknown>): Promise<Array<{ sql: string; bindings?: unknown[] }>> {
  const seen: Array<{ sql: string; bindings?: unknown[] }> = [];
  const onQuery = (q: { sql: string; bindings?: unknown[] }) => seen.push({ sql: q.sql, bindings: q.bindings });
  const { knex, asyncCommit } = srv.running.app.database;
  const pools = asyncCommit ? [knex, asyncCommit] : [knex];
  for (const pool of pools) pool.on('query', onQuery);
  try {
    await fn();
  } finally {
    for (const pool of pools) pool.off('query', onQuery);
  }
  return seen;
}
