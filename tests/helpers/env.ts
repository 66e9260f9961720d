import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Client as PgClient } from 'pg';
import { loadConfig, type Config } from '../../src/config';

/** Tests run against PostgreSQL when DATABASE_URL is set, else against the embedded database. */
export const usingPostgres = !!process.env.DATABASE_URL;
export const dbLabel = usingPostgres ? 'postgresql' : 'embedded';

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

/**
 * A fresh place to keep data: a new PostgreSQL database (created beside DATABASE_URL's) or a new
 * temporary DATA_DIR for the embedded one. `cleanup` drops it.
 */
export interface TestStore {
  databaseUrl?: string;
  dataDir: string;
  cleanup(): Promise<void>;
}

export async function createTestStore(): Promise<TestStore> {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'portcullis-test-'));
  if (!usingPostgres) {
    return { dataDir, cleanup: async () => rmSync(dataDir, { recursive: true, force: true }) };
  }
  const base = new URL(process.env.DATABASE_URL!);
  const name = `pc_test_${randomBytes(6).toString('hex')}`;
  const admin = new PgClient({ connectionString: base.toString() });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = new URL(base.toString());
  url.pathname = `/${name}`;
  return {
    databaseUrl: url.toString(),
    dataDir,
    async cleanup() {
      const c = new PgClient({ connectionString: base.toString() });
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await c.end();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export function testConfig(store: TestStore, overrides: Record<string, unknown> = {}, port = 0): Config {
  const env: NodeJS.ProcessEnv = { NODE_ENV: 'test', PATH: process.env.PATH };
  return loadConfig(env, {
    port,
    publicUrl: `http://127.0.0.1:${port || 3000}`,
    dataDir: store.dataDir,
    ...(store.databaseUrl ? { databaseUrl: store.databaseUrl } : {}),
    ...overrides,
  });
}
