import { spawn } from 'node:child_process';
import { Readable } from 'node:stream';
import { writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { run } from '../../src/cli/main';
import { EmbeddedDatabaseBusyError, openDatabase } from '../../src/db/knex';
import { loadConfig } from '../../src/config';
import { createTestStore, dbLabel, usingPostgres, type TestStore } from '../helpers/env';

async function cli(store: TestStore, ...argv: string[]): Promise<{ code: number; out: string }> {
  return cliWithInput(store, '', ...argv);
}

async function cliWithInput(store: TestStore, input: string, ...argv: string[]): Promise<{ code: number; out: string }> {
  const chunks: string[] = [];
  const spy = jest.spyOn(process.stdout, 'write').mockImplementation((c: string | Uint8Array) => {
    chunks.push(String(c));
    return true;
  });
  try {
    const env = { NODE_ENV: 'test', DATA_DIR: store.dataDir, ...(store.databaseUrl ? { DATABASE_URL: store.databaseUrl } : {}) };
    const code = await run(argv, env, Readable.from([input]));
    return { code, out: chunks.join('') };
  } finally {
    spy.mockRestore();
  }
}

/** The audit log, read as the CLI opens the database. */
async function auditLog(store: TestStore): Promise<Array<{ type: string; tenant_id: string | null; actor: string; details: unknown }>> {
  const config = loadConfig({ NODE_ENV: 'test', DATA_DIR: store.dataDir, ...(store.databaseUrl ? { DATABASE_URL: store.databaseUrl } : {}) });
  const database = await openDatabase(config, { poolMax: 1 });
  try {
    return await database.knex('audit_log').select('type', 'tenant_id', 'actor', 'details').orderBy('id');
  } finally {
    await database.close();
  }
}

// Every CLI call opens the database as a real run does (the embedded one takes seconds to start).
jest.setTimeout(180_000);

describe(`CLI (${dbLabel})`, () => {
  let store: TestStore;
  beforeAll(async () => {
    store = await createTestStore();
  });
  afterAll(async () => store?.cleanup());

  test('migrate, tenant create, client create and keys rotate with --json print one JSON object', async () => {
    const m = await cli(store, 'migrate', '--json');
    expect(m.code).toBe(0);
    expect(JSON.parse(m.out)).toHaveProperty('applied');

    const t = await cli(store, 'tenant', 'create', 'acme', '--mode', 'live', '--name', 'Acme Bank', '--json');
    expect(JSON.parse(t.out)).toEqual({ id: 'acme', name: 'Acme Bank', mode: 'live' });

    const c = await cli(store, 'client', 'create', '--tenant', 'acme', '--grant', 'client_credentials', '--scope', 'accounts payments', '--introspection', '--token-format', 'jwt', '--json');
    expect(c.out.trim().split('\n')).toHaveLength(1);
    const created = JSON.parse(c.out) as Record<string, string>;
    expect(Object.keys(created).sort()).toEqual(['api_key', 'client_id', 'client_secret']);
    expect(Buffer.from(created.client_secret!, 'base64url').length).toBeGreaterThanOrEqual(32);

    const admin = await cli(store, 'client', 'create', '--admin', '--json');
    expect(JSON.parse(admin.out)).toHaveProperty('client_id');

    const u = await cli(store, 'user', 'create', '--tenant', 'acme', '--email', 'ops@acme.test', '--username', 'ops', '--password', 'a sturdy passphrase', '--role', 'authorised', '--json');
    expect(Object.keys(JSON.parse(u.out))).toEqual(['id']);
    await expect(cli(store, 'user', 'create', '--tenant', 'acme', '--password', 'a sturdy passphrase')).rejects.toMatchObject({
      invalidFields: [expect.objectContaining({ fieldName: 'email' })],
    });
    await expect(cli(store, 'user', 'create', '--tenant', 'acme', '--email', 'ops@acme.test', '--password', 'a sturdy passphrase')).rejects.toThrow(/already registered/);
    await expect(cli(store, 'user', 'create', '--tenant', 'acme', '--email', 'x@acme.test', '--password', 'password')).rejects.toMatchObject({
      invalidFields: [expect.objectContaining({ fieldName: 'password' })],
    });

    const k1 = await cli(store, 'keys', 'rotate', '--json');
    expect(JSON.parse(k1.out)).toHaveProperty('kid');
    const list = await cli(store, 'keys', 'list', '--json');
    expect((JSON.parse(list.out) as { keys: unknown[] }).keys).toHaveLength(2);

    // Each change is in the audit log, by the shell's user, naming no secret.
    const log = await auditLog(store);
    expect(log.map((e) => [e.type, e.tenant_id])).toEqual([
      ['tenant.created', 'acme'],
      ['client.created', 'acme'],
      ['client.created', null],
      ['user.created', 'acme'],
      ['key.rotated', null],
    ]);
    expect(new Set(log.map((e) => e.actor)).size).toBe(1);
    expect(log[0]!.actor).toMatch(/^cli/);
    expect(JSON.stringify(log)).not.toContain(created.client_secret);
  });

  test('bad input is a clear error, nothing written', async () => {
    const before = (await auditLog(store)).length;
    await expect(cli(store, 'tenant', 'create', 'bad id!', '--json')).rejects.toThrow('Request is invalid');
    await expect(cli(store, 'client', 'create', '--tenant', 'nope', '--json')).rejects.toThrow();
    await expect(cli(store, 'client', 'create', '--tenant', 'acme', '--grant', 'implicit')).rejects.toThrow();
    // A platform admin client serves no tenant: it has no users for the password grant.
    await expect(cli(store, 'client', 'create', '--admin', '--grant', 'password')).rejects.toMatchObject({ invalidFields: [{ fieldName: 'grant_types' }] });
    await expect(cli(store, 'client', 'create', '--bogus')).rejects.toThrow(/Unknown option/);
    await expect(cli(store, 'tenant', 'create', 'acme')).rejects.toThrow(/already exists/);
    await expect(cli(store, 'frobnicate')).rejects.toThrow(/unknown command/);
    // Nothing ignored: no command, or an argument a command does not take, is a usage error.
    await expect(cli(store)).rejects.toThrow(/a command is required/);
    await expect(cli(store, 'migrate', 'extra')).rejects.toThrow(/unexpected argument extra/);
    await expect(cli(store, 'keys', 'list', 'x')).rejects.toThrow(/unexpected argument x/);
    expect((await auditLog(store)).length).toBe(before);
  });

  test("a SECRETS_KEY that is not the one the database's keys were sealed with is refused before anything is written", async () => {
    const env = { NODE_ENV: 'test', DATA_DIR: store.dataDir, ...(store.databaseUrl ? { DATABASE_URL: store.databaseUrl } : {}) };
    expect((await cli(store, 'keys', 'rotate', '--json')).code).toBe(0); // a key sealed with the store's key exists
    const other = { ...env, SECRETS_KEY: randomBytes(32).toString('base64') };
    const before = { audit: (await auditLog(store)).length, keys: JSON.parse((await cli(store, 'keys', 'list', '--json')).out).keys.length as number };
    for (const argv of [['keys', 'rotate'], ['user', 'create', '--tenant', 'acme', '--username', 'wrong-key', '--password', 'a passphrase of some length'], ['tenant', 'create', 'wrong-key-bank']]) {
      await expect(run(argv, other, Readable.from(['']))).rejects.toThrow(/SECRETS_KEY is not the key this database's signing keys were sealed with/);
    }
    expect((await auditLog(store)).length).toBe(before.audit);
    expect(JSON.parse((await cli(store, 'keys', 'list', '--json')).out).keys).toHaveLength(before.keys);
  });

  test('user create takes the password from standard input, its line break dropped', async () => {
    await cli(store, 'tenant', 'create', 'stdin-bank');
    // The line break is not part of it: "password1" is refused as too common.
    await expect(cliWithInput(store, 'password1\n', 'user', 'create', '--tenant', 'stdin-bank', '--username', 'common', '--password-stdin')).rejects.toMatchObject({
      invalidFields: [{ fieldName: 'password', error: 'is too common; choose another' }],
    });
    const ok = await cliWithInput(store, 'a passphrase from a pipe\n', 'user', 'create', '--tenant', 'stdin-bank', '--username', 'piped', '--password-stdin', '--json');
    expect(JSON.parse(ok.out)).toEqual({ id: expect.any(String) });
    await expect(cliWithInput(store, 'x', 'user', 'create', '--tenant', 'stdin-bank', '--username', 'both', '--password', 'p', '--password-stdin')).rejects.toThrow(/not both/);
    // Bytes that are not UTF-8 would each become U+FFFD: refused.
    const run2 = () => run(['user', 'create', '--tenant', 'stdin-bank', '--username', 'bytes', '--password-stdin'], { NODE_ENV: 'test', DATA_DIR: store.dataDir, ...(store.databaseUrl ? { DATABASE_URL: store.databaseUrl } : {}) }, Readable.from([Buffer.from([0xff, 0xfe, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48])]));
    await expect(run2()).rejects.toThrow(/not UTF-8/);
  });

  test('--help on every command', async () => {
    for (const argv of [['--help'], ['migrate', '--help'], ['serve', '--help'], ['tenant', 'create', '--help'], ['client', 'create', '--help'], ['keys', 'rotate', '--help'], ['user', 'create', '--help']]) {
      const r = await cli(store, ...argv);
      expect(r.code).toBe(0);
      expect(r.out).toMatch(/Usage: portcullis/);
    }
  });

  (usingPostgres ? test.skip : test)('with the embedded database the CLI refuses to run beside a running server', async () => {
    const sleeper = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 20000)']);
    try {
      writeFileSync(path.join(store.dataDir, 'portcullis.lock'), String(sleeper.pid));
      await expect(cli(store, 'tenant', 'create', 'other')).rejects.toThrow(EmbeddedDatabaseBusyError);
      await expect(cli(store, 'tenant', 'create', 'other')).rejects.toThrow(/in use by process/);
    } finally {
      sleeper.kill();
    }
    await new Promise((r) => sleeper.once('exit', r));
    // a stale lock of a dead process does not block
    const ok = await cli(store, 'tenant', 'create', 'other', '--json');
    expect(JSON.parse(ok.out).id).toBe('other');
  });
});
