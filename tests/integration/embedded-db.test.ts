import { chmodSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig } from '../../src/config';
import { openDatabase } from '../../src/db/knex';
import { batchGatherOf } from '../../src/db/batch';

// The embedded database whatever DATABASE_URL says: it is what `npm start` runs on a fresh machine.
describe('the embedded database (PGlite)', () => {
  const dirs: string[] = [];
  afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
  const config = (env: Record<string, string> = {}) => {
    const dataDir = mkdtempSync(path.join(os.tmpdir(), 'portcullis-embedded-'));
    dirs.push(dataDir);
    return loadConfig({ NODE_ENV: 'test', DATA_DIR: dataDir, ...env });
  };
  const sharedBuffers = async (db: Awaited<ReturnType<typeof openDatabase>>) =>
    ((await db.knex.raw('SHOW shared_buffers')) as { rows: Array<{ shared_buffers: string }> }).rows[0]!.shared_buffers;

  test('runs with 32 MB of shared_buffers by default, not PostgreSQL’s 128 MB, in memory as in DATA_DIR', async () => {
    const memory = await openDatabase(config(), { inMemory: true });
    try {
      expect(memory.kind).toBe('embedded');
      expect(await sharedBuffers(memory)).toBe('32MB');
    } finally {
      await memory.close();
    }
  });

  test('BATCH_WAIT_MS reaches its token batches (1 ms by default)', async () => {
    for (const [env, ms] of [[{}, 1], [{ BATCH_WAIT_MS: '0' }, 0], [{ BATCH_WAIT_MS: '5' }, 5]] as const) {
      const db = await openDatabase(config(env), { inMemory: true });
      try {
        expect(batchGatherOf(db.knex)).toBe(ms);
      } finally {
        await db.close();
      }
    }
  });

  test("the database's directory is its owner's alone, also one an older release left open", async () => {
    const fresh = config();
    const open = config();
    mkdirSync(path.join(open.dataDir, 'pgdata'), { mode: 0o777 });
    chmodSync(path.join(open.dataDir, 'pgdata'), 0o777);
    for (const c of [fresh, open]) {
      const db = await openDatabase(c);
      try {
        expect(statSync(path.join(c.dataDir, 'pgdata')).mode & 0o777).toBe(0o700);
      } finally {
        await db.close();
      }
    }
    // Two on-disk databases created: 7 s alone, over 30 s while another suite shared the two cores.
  }, 90_000);

  test('EMBEDDED_SHARED_BUFFERS_MB sets it; the data in DATA_DIR outlives a restart with another size', async () => {
    const first = config({ EMBEDDED_SHARED_BUFFERS_MB: '16' });
    const db = await openDatabase(first);
    try {
      expect(await sharedBuffers(db)).toBe('16MB');
      await db.knex.raw('CREATE TABLE kept (v text)');
      await db.knex('kept').insert({ v: 'still here' });
    } finally {
      await db.close();
    }
    const again = await openDatabase(loadConfig({ NODE_ENV: 'test', DATA_DIR: first.dataDir, EMBEDDED_SHARED_BUFFERS_MB: '48' }));
    try {
      expect(await sharedBuffers(again)).toBe('48MB');
      expect(await again.knex('kept').select('v')).toEqual([{ v: 'still here' }]);
    } finally {
      await again.close();
    }
  });
});
