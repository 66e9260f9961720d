/**
 * Clients and tenants are cached (src/cache/lookups.ts) so that a token request costs one
 * statement; a change to either reaches every process at its commit; tokens are never cached.
 */
import net from 'node:net';
import { Client as PgClient } from 'pg';
import { startTestServer, type TestServer } from '../helpers/server';
import { basic, clientCredentialsToken, createClient, createTenant, form, introspect, json, bearer, statements, type ClientCreds } from '../helpers/flows';
import { dbLabel, usingPostgres } from '../helpers/env';

const ADMIN = { client_id: 'platform-admin', client_secret: 'platform-admin-secret-for-tests-0123456789' };
const pgOnly = usingPostgres ? test : test.skip;

async function until(what: string, check: () => Promise<boolean>, ms = 3000): Promise<number> {
  const t0 = Date.now();
  while (!(await check())) {
    if (Date.now() - t0 > ms) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return Date.now() - t0;
}

describe(`cached clients and tenants (${dbLabel})`, () => {
  let a: TestServer;
  let b: TestServer | undefined; // PostgreSQL: a second process on the same database
  let app: ClientCreds;
  let rs: ClientCreds;

  // A TTL far longer than any test: whatever is seen at once was told, not expired.
  const config = { clientCacheSeconds: 600, adminClientId: ADMIN.client_id, adminClientSecret: ADMIN.client_secret };

  beforeAll(async () => {
    a = await startTestServer({ config });
    if (usingPostgres) b = await startTestServer({ store: a.store, config });
    await createTenant(a, 'bank-c');
    app = await createClient(a, { tenants: ['bank-c'], grant_types: ['client_credentials'] });
    rs = await createClient(a, { tenants: ['bank-c'], introspection: true });
    for (const srv of [a, b]) {
      if (!srv) continue;
      await until('listening', async () => srv.running.app.services.caches.listening);
    }
  });
  afterAll(async () => {
    await b?.stop();
    await a?.close();
  });

  const admin = async (srv: TestServer) =>
    (await form(srv, '/token', { grant_type: 'client_credentials', scope: 'admin' }, { authorization: basic(ADMIN) })).json.access_token as string;

  test('warm: client_credentials is one statement (the token insert); introspection one (the token lookup)', async () => {
    const token = (await clientCredentialsToken(a, app)).access_token; // warms the client and tenant
    await introspect(a, rs, token);
    const cc = await statements(a, () => clientCredentialsToken(a, app));
    expect(cc).toHaveLength(1);
    expect(cc[0]!.sql).toMatch(/^\s*insert into "?oidc_payloads"?/i); // knex's INSERT, or the prepared one on PostgreSQL
    const intro = await statements(a, async () => expect((await introspect(a, rs, token)).json).toMatchObject({ active: true, tenant: 'bank-c' }));
    expect(intro).toHaveLength(1);
    expect(intro[0]!.sql).toMatch(/from "?oidc_payloads"?/i);
  });

  test('a JWT (no token row to read) is never introspected from memory alone: its tenant and client are read from the database', async () => {
    const jwtApp = await createClient(a, { tenants: ['bank-c'], grant_types: ['client_credentials'], token_format: 'jwt' });
    const jwt = (await clientCredentialsToken(a, jwtApp)).access_token;
    await introspect(a, rs, jwt); // warm
    const seen = await statements(a, async () => expect((await introspect(a, rs, jwt)).json).toMatchObject({ active: true, client_id: jwtApp.client_id }));
    expect(seen.some((q) => /from "tenants"/.test(q.sql))).toBe(true);
    expect(seen.some((q) => /from "clients"/.test(q.sql))).toBe(true);
  });

  test('tokens are never cached: a revoked token is inactive at once, on every process', async () => {
    const token = (await clientCredentialsToken(a, app)).access_token;
    for (const srv of [a, b]) if (srv) expect((await introspect(srv, rs, token)).json.active).toBe(true);
    expect((await form(a, '/token/revocation', { token }, { authorization: basic(app) })).status).toBe(200);
    for (const srv of [a, b]) if (srv) expect((await introspect(srv, rs, token)).json).toEqual({ active: false });
  });

  test('a client disabled through the admin API: refused at once here, and on the other process as soon as it commits', async () => {
    const c = await createClient(a, { tenants: ['bank-c'], grant_types: ['client_credentials'] });
    const token = (await clientCredentialsToken(a, c)).access_token;
    for (const srv of [a, b]) {
      if (!srv) continue;
      expect((await introspect(srv, rs, token)).json.active).toBe(true); // cached on both now
      expect((await form(srv, '/token', { grant_type: 'client_credentials' }, { authorization: basic(c) })).status).toBe(200);
    }
    const t = await admin(a);
    const cur = await json(a, 'GET', `/admin/tenants/bank-c/clients/${c.client_id}`, undefined, bearer(t));
    const off = await json(a, 'PATCH', `/admin/tenants/bank-c/clients/${c.client_id}`, { disabled: true }, bearer(t, { 'if-match': cur.headers.get('etag')! }));
    expect(off.status).toBe(200);
    expect((await introspect(a, rs, token)).json).toEqual({ active: false });
    expect((await form(a, '/token', { grant_type: 'client_credentials' }, { authorization: basic(c) })).status).toBe(401);
    if (b) {
      const ms = await until('the other process refuses the client', async () => (await introspect(b!, rs, token)).json.active === false);
      expect(ms).toBeLessThan(2000);
      expect((await form(b, '/token', { grant_type: 'client_credentials' }, { authorization: basic(c) })).status).toBe(401);
    }
  });

  test('a tenant disabled through the admin API: its tokens inactive on every process', async () => {
    await createTenant(a, 'bank-off');
    const c = await createClient(a, { tenants: ['bank-off'], grant_types: ['client_credentials'] });
    const r = await createClient(a, { tenants: ['bank-off'], introspection: true });
    const token = (await clientCredentialsToken(a, c)).access_token;
    for (const srv of [a, b]) if (srv) expect((await introspect(srv, r, token)).json.active).toBe(true);
    const t = await admin(a);
    const cur = await json(a, 'GET', '/admin/tenants/bank-off', undefined, bearer(t));
    expect((await json(a, 'PATCH', '/admin/tenants/bank-off', { status: 'disabled' }, bearer(t, { 'if-match': cur.headers.get('etag')! }))).status).toBe(200);
    expect((await introspect(a, r, token)).json).toEqual({ active: false });
    if (b) await until('the other process sees the tenant disabled', async () => (await introspect(b!, r, token)).json.active === false, 2000);
  });

  pgOnly('a process that stops hearing changes stops caching until it hears them again', async () => {
    const srv = b!;
    const token = (await clientCredentialsToken(srv, app)).access_token;
    await introspect(srv, rs, token); // warm
    expect(await statements(srv, () => introspect(srv, rs, token))).toHaveLength(1);

    const pg = new PgClient({ connectionString: a.store.databaseUrl });
    await pg.connect();
    try {
      // Cut every listener connection (both processes'), as a network fault or a restart would —
      // of this database only: test files running beside this one have listeners of their own.
      await pg.query("select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'portcullis-listener' and datname = current_database()");
      await until('caching off', async () => !srv.running.app.services.caches.listening, 2000);
      // Not listening: a change made behind the server's back (no notification at all) is seen at once.
      await pg.query("update tenants set status = 'disabled' where id = 'bank-c'");
      expect((await introspect(srv, rs, token)).json).toEqual({ active: false });
      await pg.query("update tenants set status = 'active' where id = 'bank-c'");
      expect((await introspect(srv, rs, token)).json.active).toBe(true);
      // It reconnects by itself, and caches again.
      await until('listening again', async () => srv.running.app.services.caches.listening, 5000);
      await introspect(srv, rs, token);
      expect(await statements(srv, () => introspect(srv, rs, token))).toHaveLength(1);
    } finally {
      await pg.end();
    }
  });

  pgOnly('a listener connection that goes silent (a partition: no reset, no answer) is noticed, and caching stops', async () => {
    // A TCP relay to PostgreSQL that can be frozen: bytes stop flowing both ways, sockets stay open.
    const target = new URL(a.store.databaseUrl!);
    const sockets: net.Socket[] = [];
    let frozen = false;
    const relay = net.createServer((inbound) => {
      const outbound = net.connect(Number(target.port || 5432), target.hostname);
      for (const [from, to] of [[inbound, outbound], [outbound, inbound]] as const) {
        from.on('data', (chunk) => {
          if (!frozen) to.write(chunk);
        });
        from.on('error', () => undefined);
        from.on('close', () => to.destroy());
      }
      sockets.push(inbound, outbound);
    });
    await new Promise<void>((r) => relay.listen(0, '127.0.0.1', () => r()));
    const viaRelay = new URL(a.store.databaseUrl!);
    viaRelay.host = `127.0.0.1:${(relay.address() as net.AddressInfo).port}`;
    const c = await startTestServer({ store: { ...a.store, databaseUrl: viaRelay.toString(), cleanup: async () => undefined }, config });
    try {
      await until('listening', async () => c.running.app.services.caches.listening);
      frozen = true;
      const ms = await until('caching off', async () => !c.running.app.services.caches.listening, 8000);
      expect(ms).toBeLessThan(6000); // the heartbeat: every 2 s, late after 2 s
    } finally {
      frozen = false;
      for (const s of sockets) s.destroy();
      await c.stop();
      await new Promise((r) => relay.close(r));
    }
  });
});
