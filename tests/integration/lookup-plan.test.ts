import { KnexAdapter, LOOKUP } from '../../src/oidc/adapter';
import type { Database } from '../../src/db/knex';
import { fixedDb } from '../../src/db/tx';
import { usingPostgres } from '../helpers/env';
import { useTestDatabase } from '../helpers/database';

// The token lookup runs as a named prepared statement on PostgreSQL (src/db/prepared.ts). A
// connection may settle on a generic plan for it, made once and kept until the table's statistics
// change: one made while the table is small and never analyzed (a new server, a database without
// autovacuum) must still search the primary key by id, or every lookup reads every token.
const describePg = usingPostgres ? describe : describe.skip;

describePg('the prepared token lookup searches by id even when planned on a small, never-analyzed table', () => {
  let db: Database;
  // One connection in the main pool: the SET below, the adapter's lookups and the EXPLAIN share it.
  useTestDatabase({ config: { dbPoolMax: 1 } }, (opened) => (db = opened));

  /** The index conditions and filters of the plan the connection uses for the lookup. */
  const plan = async (): Promise<string> => {
    const explained = (await db.knex.raw(`EXPLAIN (FORMAT JSON) EXECUTE ${LOOKUP.name}('{no-such-token}')`)) as { rows: Array<{ 'QUERY PLAN': unknown }> };
    return JSON.stringify(explained.rows[0]!['QUERY PLAN']);
  };

  test('a generic plan made on an almost empty table still finds tokens by id once the table is large', async () => {
    // What PostgreSQL may pick by itself after five runs, forced from the first.
    await db.knex.raw('SET plan_cache_mode = force_generic_plan');
    const cc = new KnexAdapter(fixedDb(db.knex), 'ClientCredentials');
    await cc.upsert('first-token', { jti: 'first-token', kind: 'ClientCredentials' }, 600);
    expect(await cc.find('first-token')).toMatchObject({ jti: 'first-token' });
    const stats = (await db.knex.raw("SELECT reltuples FROM pg_class WHERE relname = 'oidc_payloads'")) as { rows: Array<{ reltuples: number }> };
    expect(stats.rows[0]!.reltuples).toBeLessThan(100); // the table was small, or never analyzed, when planned

    await db.knex.raw(`INSERT INTO oidc_payloads (type, id, payload, expires_at)
                       SELECT 'ClientCredentials', rtrim(translate(encode(sha256(convert_to('bulk-' || i, 'UTF8')), 'base64'), '+/', '-_'), '='), '{}'::jsonb, now() + interval '10 minutes' FROM generate_series(1, 20000) i`);
    expect(await cc.find('bulk-12345')).toBeDefined();

    const used = await plan();
    expect(used).toContain('Index Cond');
    // The id is one of the index's conditions, not a filter applied to every row of those types.
    expect(used).toMatch(/"Index Cond":"\([^"]*\bid = ANY \(\$1\)/);
    expect(used).not.toMatch(/"Filter":"[^"]*\bid = ANY/);
  });
});
