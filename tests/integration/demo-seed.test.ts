import { chmodSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { seedDemo } from '../../src/seed/demo';
import { startTestServer, type TestServer } from '../helpers/server';
import { basic, form } from '../helpers/flows';
import { dbLabel } from '../helpers/env';

describe(`first start's demo tenant (${dbLabel})`, () => {
  let srv: TestServer;
  beforeAll(async () => {
    srv = await startTestServer(); // started without the demo, which each test seeds itself
  });
  afterAll(async () => srv?.close());

  const knex = () => srv.running.app.database.knex;
  const seed = () => seedDemo(srv.running.app.config, srv.running.app.services);

  test('a seed that fails half-way leaves nothing, so the next start seeds again', async () => {
    // The audit log refuses the user's record: the tenant and the first client were written by then.
    await knex().raw("ALTER TABLE audit_log ADD CONSTRAINT demo_refuses_for_test CHECK (type <> 'user.created') NOT VALID");
    try {
      await expect(seed()).rejects.toThrow();
    } finally {
      await knex().raw('ALTER TABLE audit_log DROP CONSTRAINT demo_refuses_for_test');
    }
    expect(Number((await knex()('tenants').count({ n: '*' }).first())?.n)).toBe(0);
    expect(Number((await knex()('clients').count({ n: '*' }).first())?.n)).toBe(0);
  });

  test('the demo works at once and its creation is audited', async () => {
    // A file left there before, readable by all: it gets the secrets, and is the owner's alone after.
    const file = path.join(srv.running.app.config.dataDir, 'demo-credentials.json');
    writeFileSync(file, '{}\n', { mode: 0o644 });
    chmodSync(file, 0o644);
    const creds = await seed();
    expect(creds).toBeDefined();
    const onDisk = JSON.parse(readFileSync(file, 'utf8')) as typeof creds;
    expect(onDisk).toEqual(creds);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const token = await form(srv, '/token', { grant_type: 'password', username: creds!.user.email, password: creds!.user.password }, { authorization: basic(creds!.client) });
    expect(token.status).toBe(200);

    const log = await knex()('audit_log').where({ actor: 'first-start' }).orderBy('id');
    expect(log.map((e: { type: string; tenant_id: string }) => [e.type, e.tenant_id])).toEqual([
      ['tenant.created', 'demo'],
      ['client.created', 'demo'],
      ['user.created', 'demo'],
      ['client.created', 'demo'],
    ]);
    expect(JSON.stringify(log)).not.toContain(creds!.client.client_secret);
    expect(await seed()).toBeUndefined(); // once only
  });
});
