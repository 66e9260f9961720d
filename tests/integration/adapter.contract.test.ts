import { closeLoginWithSession, KnexAdapter, storedTokenId, sweepExpired } from '../../src/oidc/adapter';
import { sweepRateLimits } from '../../src/users/throttle';
import { END_LOGIN, LoginSupersededError, loginEndValues } from '../../src/users/login-end';
import { createIdempotencyRepository } from '../../src/idempotency/repository';
import { createSealer } from '../../src/crypto/secrets';
import { openDatabase, type Database } from '../../src/db/knex';
import { createTxContext, fixedDb } from '../../src/db/tx';
import { preparedRunner, statementRunner } from '../../src/db/prepared';
import { claimSweep } from '../../src/db/sweep';
import { dbLabel, testConfig, usingPostgres, type TestStore } from '../helpers/env';
import { useTestDatabase } from '../helpers/database';

describe(`knex adapter contract (${dbLabel})`, () => {
  let store: TestStore;
  let db: Database;
  const adapter = () => new KnexAdapter(fixedDb(db.knex), 'AccessToken');

  useTestDatabase({}, (opened, its) => {
    db = opened;
    store = its;
  });

  test('upsert then find returns the payload; upsert again replaces it', async () => {
    const a = adapter();
    await a.upsert('t1', { jti: 't1', kind: 'AccessToken', grantId: 'g1', accountId: 'u1', extra: { tenant: 'x' } }, 60);
    expect(await a.find('t1')).toMatchObject({ jti: 't1', grantId: 'g1', accountId: 'u1', extra: { tenant: 'x' } });
    await a.upsert('t1', { jti: 't1', kind: 'AccessToken', grantId: 'g1', accountId: 'u2' }, 60);
    expect((await a.find('t1'))?.accountId).toBe('u2');
  });

  test('a token is stored under a hash of its value, never the value; a find gives the value back as its jti', async () => {
    const types = ['AccessToken', 'ClientCredentials', 'RefreshToken'].map((t) => new KnexAdapter(fixedDb(db.knex), t));
    const value = 'Zq3-secret-token-value_0123456789abcdefghijk';
    for (const [i, a] of types.entries()) await a.upsert(`${value}${i}`, { jti: `${value}${i}`, kind: 'x', grantId: 'hash-g' }, 60);
    const rows = (await db.knex('oidc_payloads').where({ grant_id: 'hash-g' }).select('id', db.knex.raw('payload::text as payload'))) as Array<{ id: string; payload: string }>;
    expect(rows).toHaveLength(3);
    expect(JSON.stringify(rows)).not.toContain(value);
    expect(rows.map((r) => r.id).sort()).toEqual([0, 1, 2].map((i) => storedTokenId(`${value}${i}`)).sort());
    for (const [i, a] of types.entries()) expect(await a.find(`${value}${i}`)).toMatchObject({ jti: `${value}${i}`, grantId: 'hash-g' });
    // Inside a transaction (not batched) too; the stored key itself is not a token.
    await db.knex.transaction(async (trx) => expect(await new KnexAdapter(fixedDb(trx), 'AccessToken').find(`${value}0`)).toMatchObject({ jti: `${value}0` }));
    expect(await types[0]!.find(storedTokenId(`${value}0`))).toBeUndefined();
    // Consumed and destroyed by value.
    await types[2]!.consume(`${value}2`);
    expect((await types[2]!.find(`${value}2`))?.consumed).toBeDefined();
    await types[0]!.destroy(`${value}0`);
    expect(await types[0]!.find(`${value}0`)).toBeUndefined();
  });

  test('find of an unknown id, or of another model type, is undefined', async () => {
    await adapter().upsert('t2', { jti: 't2' }, 60);
    expect(await adapter().find('nope')).toBeUndefined();
    expect(await new KnexAdapter(fixedDb(db.knex), 'RefreshToken').find('t2')).toBeUndefined();
  });

  test('token lookups and access-token inserts made together are batched: one statement, each caller its own row', async () => {
    const types = ['AccessToken', 'ClientCredentials', 'RefreshToken'].map((t) => new KnexAdapter(fixedDb(db.knex), t));
    await types[1]!.upsert('shared-1', { jti: 'shared-1', kind: 'ClientCredentials', extra: { tenant: 'x' } }, 60);
    await types[2]!.upsert('shared-2', { jti: 'shared-2', kind: 'RefreshToken' }, 60);
    const queries: string[] = [];
    const onQuery = (q: { sql: string }) => queries.push(q.sql);
    db.knex.on('query', onQuery);
    try {
      const [at, cc, rt] = await Promise.all(types.map((a) => a.find('shared-1')));
      expect(at).toBeUndefined();
      expect(cc).toMatchObject({ jti: 'shared-1', extra: { tenant: 'x' } });
      expect(rt).toBeUndefined();
      expect(queries.filter((q) => q.includes('oidc_payloads'))).toHaveLength(1);
      // Two callers of the same row get copies: one changing its payload does not change the other's.
      const [a, b] = await Promise.all([types[2]!.find('shared-2'), types[2]!.find('shared-2')]);
      a!.jti = 'changed';
      expect(b!.jti).toBe('shared-2');
      // Only a batch not yet sent is joined: a later find reads the table again.
      await types[1]!.destroy('shared-1');
      expect(await types[1]!.find('shared-1')).toBeUndefined();

      // Lookups of many tokens made together (concurrent requests): one statement.
      const access = types[0]!;
      for (let i = 0; i < 30; i += 1) await access.upsert(`many-${i}`, { jti: `many-${i}`, kind: 'AccessToken' }, 60);
      queries.length = 0;
      const found = await Promise.all(Array.from({ length: 30 }, (_, i) => access.find(i % 3 === 0 ? `missing-${i}` : `many-${i}`)));
      expect(found.map((p) => p?.jti)).toEqual(Array.from({ length: 30 }, (_, i) => (i % 3 === 0 ? undefined : `many-${i}`)));
      expect(queries.filter((q) => q.includes('oidc_payloads'))).toHaveLength(1);

      // Access tokens issued together (concurrent token requests): one INSERT, every row stored.
      queries.length = 0;
      const ins = new KnexAdapter(fixedDb(db.knex), 'ClientCredentials');
      await Promise.all(Array.from({ length: 25 }, (_, i) => ins.upsert(`batch-${i}`, { jti: `batch-${i}`, kind: 'ClientCredentials' }, 60)));
      expect(queries.filter((q) => /^\s*insert/i.test(q))).toHaveLength(1);
      const stored = await Promise.all(Array.from({ length: 25 }, (_, i) => ins.find(`batch-${i}`)));
      expect(stored.every((p, i) => p?.jti === `batch-${i}`)).toBe(true);

      // One row the database refuses (a NUL in JSON text) fails its own request only.
      const mixed = await Promise.allSettled(
        Array.from({ length: 6 }, (_, i) => ins.upsert(`mixed-${i}`, { jti: `mixed-${i}`, kind: 'ClientCredentials', ...(i === 2 ? { extra: { bad: 'a\u0000b' } } : {}) }, 60)),
      );
      expect(mixed.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled', 'rejected', 'fulfilled', 'fulfilled', 'fulfilled']);
      expect(await ins.find('mixed-2')).toBeUndefined();
      expect((await ins.find('mixed-5'))?.jti).toBe('mixed-5');
    } finally {
      db.knex.off('query', onQuery);
    }
  });

  test('on PostgreSQL the batched lookup and insert run as prepared statements; the embedded database keeps the query builder', async () => {
    if (!usingPostgres) {
      expect(preparedRunner(db.knex)).toBeUndefined();
      return;
    }
    expect(await db.knex.transaction(async (trx) => preparedRunner(trx) !== undefined)).toBe(false); // never inside a transaction
    // One connection, so the session that ran the statements is the one asked about them.
    const one = await openDatabase(testConfig(store), { poolMax: 1 });
    try {
      const tokens = new KnexAdapter(fixedDb(one.knex), 'ClientCredentials');
      await Promise.all(['p-1', 'p-2'].map((id) => tokens.upsert(id, { jti: id, kind: 'ClientCredentials', grantId: `g-${id}`, accountId: 'acct' }, 60)));
      expect((await tokens.find('p-2'))?.grantId).toBe('g-p-2');
      const named = (await one.knex.raw('select name from pg_prepared_statements order by name')) as { rows: Array<{ name: string }> };
      expect(named.rows.map((r) => r.name)).toEqual(['portcullis_token_insert_v1', 'portcullis_token_lookup_v2']);
      // Every column of the prepared insert lands: the grant id (revocation), the account, the expiry.
      const row = (await one.knex('oidc_payloads').where({ type: 'ClientCredentials', id: storedTokenId('p-1') }).first()) as Record<string, unknown>;
      expect(row).toMatchObject({ grant_id: 'g-p-1', account_id: 'acct', user_code: null, uid: null });
      expect(Math.abs(new Date(row.expires_at as string).getTime() - (Date.now() + 60_000))).toBeLessThan(10_000);
    } finally {
      await one.close();
    }
  });

  test('access tokens commit asynchronously outside a transaction (PostgreSQL); nothing else does, and a transaction keeps them', async () => {
    const tx = createTxContext(db.knex, db.asyncCommit);
    const viaAsync: string[] = [];
    const viaMain: string[] = [];
    // The type column: knex's INSERT binds columns in name order; the prepared one binds one array per column, type first.
    const typeOf = (q: { bindings?: unknown[] }) => String((Array.isArray(q.bindings?.[0]) ? q.bindings[0] : q.bindings?.[5]) ?? '');
    const isInsert = (q: { sql: string }) => /^\s*insert/i.test(q.sql);
    const onAsync = (q: { sql: string; bindings?: unknown[] }) => viaAsync.push(typeOf(q));
    const onMain = (q: { sql: string; bindings?: unknown[] }) => isInsert(q) && viaMain.push(typeOf(q));
    db.asyncCommit?.on('query', onAsync);
    db.knex.on('query', onMain);
    try {
      for (const type of ['AccessToken', 'ClientCredentials', 'RefreshToken', 'Grant']) {
        await new KnexAdapter(tx, type).upsert(`ac-${type}`, { jti: `ac-${type}` }, 60);
        expect(await new KnexAdapter(tx, type).find(`ac-${type}`)).toMatchObject({ jti: `ac-${type}` }); // visible at once
      }
      await tx.transaction(() => new KnexAdapter(tx, 'AccessToken').upsert('ac-in-tx', { jti: 'ac-in-tx' }, 60));
    } finally {
      db.asyncCommit?.off('query', onAsync);
      db.knex.off('query', onMain);
    }
    if (usingPostgres) {
      expect(viaAsync.sort()).toEqual(['AccessToken', 'ClientCredentials']);
      expect(viaMain.sort()).toEqual(['AccessToken', 'Grant', 'RefreshToken']); // the last AccessToken: inside the transaction
      const setting = (await db.asyncCommit!.raw('show synchronous_commit')) as { rows: Array<{ synchronous_commit: string }> };
      expect(setting.rows[0]!.synchronous_commit).toBe('off');
      const main = (await db.knex.raw('show synchronous_commit')) as { rows: Array<{ synchronous_commit: string }> };
      expect(main.rows[0]!.synchronous_commit).toBe('on');
    } else {
      expect(db.asyncCommit).toBeUndefined();
      expect(viaMain).toHaveLength(5);
    }
  });

  test('sessions stored together each close their login in their INSERT: counts reset, each address given back a point per login, never below zero, only to the window the point was taken in, while it runs', async () => {
    const k = db.knex;
    await k('tenants').insert({ id: 'login-end-bank', name: 'Login end bank' });
    const users = ['10000000-0000-4000-8000-000000000001', '10000000-0000-4000-8000-000000000002', '10000000-0000-4000-8000-000000000003', '10000000-0000-4000-8000-000000000004'];
    await k('users').insert(users.map((id, i) => ({ id, tenant_id: 'login-end-bank', username: `ender${i}`, password_hash: 'x', role: 'root', failed_login_count: 2, lockout_count: 1 })));
    const now = Date.now();
    await k('rate_limits').insert([
      { key: 'login_ip:a', points: 5, expire: now + 60_000 },
      { key: 'login_ip:b', points: 1, expire: now + 60_000 },
      { key: 'login_ip:c', points: 3, expire: now - 1 }, // its window has ended: nothing to give back
      { key: 'login_ip:d', points: 4, expire: now + 60_000 }, // a window begun after the login's point was taken: nothing either
    ]);
    const window = now + 60_000;
    const ends: Array<[string, string, number]> = [
      ['login_ip:a', users[0]!, window], ['login_ip:a', users[1]!, window], ['login_ip:b', users[2]!, window], ['login_ip:b', users[2]!, window],
      ['login_ip:c', users[3]!, now - 1], ['login_ip:d', users[3]!, now - 1],
    ];
    const grants = new KnexAdapter(fixedDb(k), 'Grant');
    const queries: string[] = [];
    const onQuery = (q: { sql: string }) => queries.push(q.sql);
    k.on('query', onQuery);
    try {
      // Saved in one turn, as concurrent logins' sessions are: one batch.
      await Promise.all(
        ends.map(([key, userId, windowEnd], i) => {
          const closing = { end: { tenantId: 'login-end-bank', userId, key, now, epoch: 0, windowEnd }, written: false };
          closeLoginWithSession(`le-${i}`, closing);
          return grants.upsert(`le-${i}`, { jti: `le-${i}`, accountId: userId }, 60).then(() => expect(closing.written).toBe(true));
        }),
      );
    } finally {
      k.off('query', onQuery);
    }
    // PostgreSQL: one statement per login, its session's INSERT closing it. The embedded database
    // binds no arrays: the INSERT and the closing statement, in one transaction.
    const statements = queries.filter((q) => !/^(BEGIN|COMMIT)\b/i.test(q.trim()));
    if (usingPostgres) {
      expect(statements).toHaveLength(ends.length);
      for (const q of statements) expect(q).toMatch(/UPDATE rate_limits[\s\S]*UPDATE users[\s\S]*INSERT INTO oidc_payloads/);
    } else {
      expect(statements).toHaveLength(2 * ends.length);
    }
    const counts = (await k('users').whereIn('id', users).select('failed_login_count', 'lockout_count')) as Array<Record<string, number>>;
    expect(counts).toEqual(users.map(() => ({ failed_login_count: 0, lockout_count: 0 })));
    const points = Object.fromEntries(((await k('rate_limits').whereIn('key', ['login_ip:a', 'login_ip:b', 'login_ip:c', 'login_ip:d'])) as Array<{ key: string; points: number }>).map((r) => [r.key, r.points]));
    expect(points).toEqual({ 'login_ip:a': 3, 'login_ip:b': 0, 'login_ip:c': 3, 'login_ip:d': 4 });
    expect(await k('oidc_payloads').where({ type: 'Grant' }).whereIn('id', ends.map((_, i) => `le-${i}`))).toHaveLength(ends.length);

    // A session that cannot be stored leaves its login counted as a failure; the rest of its batch is stored and closed.
    await k('users').whereIn('id', users).update({ failed_login_count: 2 });
    const good = { end: { tenantId: 'login-end-bank', userId: users[0]!, key: 'login_ip:a', now, epoch: 0, windowEnd: window }, written: false };
    const bad = { end: { tenantId: 'login-end-bank', userId: users[1]!, key: 'login_ip:a', now, epoch: 0, windowEnd: window }, written: false };
    closeLoginWithSession('le-good', good);
    closeLoginWithSession('le-bad\u0000', bad);
    const [stored, refused] = await Promise.allSettled([
      grants.upsert('le-good', { jti: 'le-good', accountId: users[0] }, 60),
      grants.upsert('le-bad\u0000', { jti: 'le-bad', accountId: users[1] }, 60),
    ]);
    expect(stored.status).toBe('fulfilled');
    expect(refused.status).toBe('rejected');
    expect([good.written, bad.written]).toEqual([true, false]);
    // A session stored with a token of it that fails: each row again on its own, the login's end with its session.
    await k('users').where({ id: users[2]! }).update({ failed_login_count: 2 });
    const both = { end: { tenantId: 'login-end-bank', userId: users[2]!, key: 'login_ip:a', now, epoch: 0, windowEnd: window }, written: false };
    closeLoginWithSession('le-both', both);
    const [session, token] = await Promise.allSettled([
      grants.upsert('le-both', { jti: 'le-both', accountId: users[2] }, 60),
      // A token's id is stored hashed, so its account is what PostgreSQL refuses here.
      new KnexAdapter(fixedDb(k), 'RefreshToken').upsert('le-rt', { jti: 'le-rt', grantId: 'le-both', accountId: 'bad\u0000' }, 60),
    ]);
    expect([session.status, token.status, both.written]).toEqual(['fulfilled', 'rejected', true]);
    expect((await k('users').where({ id: users[2]! }).first('failed_login_count')).failed_login_count).toBe(0);
    const after = (id: string) => k('users').where({ id }).first('failed_login_count') as Promise<{ failed_login_count: number }>;
    expect((await after(users[0]!)).failed_login_count).toBe(0);
    expect((await after(users[1]!)).failed_login_count).toBe(2);
    expect(((await k('rate_limits').where({ key: 'login_ip:a' }).first()) as { points: number }).points).toBe(1);

    // Inside a transaction (nothing batched there), the same: stored and closed together.
    const tx = createTxContext(k, db.asyncCommit);
    closeLoginWithSession('le-tx', { end: { tenantId: 'login-end-bank', userId: users[1]!, key: 'login_ip:a', now, epoch: 0, windowEnd: window }, written: false });
    await tx.transaction(() => new KnexAdapter(tx, 'Grant').upsert('le-tx', { jti: 'le-tx', accountId: users[1] }, 60));
    expect((await after(users[1]!)).failed_login_count).toBe(0);
    expect(((await k('rate_limits').where({ key: 'login_ip:a' }).first()) as { points: number }).points).toBe(0);

    // A login whose user's sessions were all ended since it began (sessions_epoch moved): nothing of
    // its session is stored, its tokens in the same batch neither, and the batch's other logins are.
    await k('users').where({ id: users[3]! }).update({ sessions_epoch: 1 });
    await k('rate_limits').where({ key: 'login_ip:a' }).update({ points: 5 });
    const stale = { end: { tenantId: 'login-end-bank', userId: users[3]!, key: 'login_ip:a', now, epoch: 0, windowEnd: window }, written: false };
    const fresh = { end: { tenantId: 'login-end-bank', userId: users[0]!, key: 'login_ip:a', now, epoch: 0, windowEnd: window }, written: false };
    closeLoginWithSession('le-stale', stale);
    closeLoginWithSession('le-fresh', fresh);
    const [staleGrant, staleToken, freshGrant] = await Promise.allSettled([
      grants.upsert('le-stale', { jti: 'le-stale', accountId: users[3] }, 60),
      new KnexAdapter(fixedDb(k), 'RefreshToken').upsert('le-stale-rt', { jti: 'le-stale-rt', grantId: 'le-stale', accountId: users[3] }, 60),
      grants.upsert('le-fresh', { jti: 'le-fresh', accountId: users[0] }, 60),
    ]);
    expect([staleGrant.status, staleToken.status, freshGrant.status, fresh.written]).toEqual(['rejected', 'rejected', 'fulfilled', true]);
    expect((staleGrant as PromiseRejectedResult).reason).toBeInstanceOf(LoginSupersededError);
    expect(await k('oidc_payloads').whereIn('id', ['le-stale', storedTokenId('le-stale-rt')])).toHaveLength(0);
    // Its caller closes it apart unless its end was stored with the statement (PostgreSQL's one
    // statement stores it; the embedded database's transaction rolled it back): its point is given
    // back once either way.
    if (!stale.written) await statementRunner(k)(END_LOGIN, loginEndValues(stale.end));
    expect(((await k('rate_limits').where({ key: 'login_ip:a' }).first()) as { points: number }).points).toBe(3);
    // The current count lets it through; in a transaction a superseded login rolls back with it.
    const current = { end: { ...stale.end, epoch: 1 }, written: false };
    closeLoginWithSession('le-current', current);
    await grants.upsert('le-current', { jti: 'le-current', accountId: users[3] }, 60);
    expect(current.written).toBe(true);
    const staleTx = { end: stale.end, written: false };
    closeLoginWithSession('le-stale-tx', staleTx);
    await expect(tx.transaction(() => new KnexAdapter(tx, 'Grant').upsert('le-stale-tx', { jti: 'le-stale-tx', accountId: users[3] }, 60))).rejects.toBeInstanceOf(LoginSupersededError);
    expect(await k('oidc_payloads').where({ id: 'le-stale-tx' })).toHaveLength(0);
    expect(staleTx.written).toBe(false); // its end rolled back with the transaction: its caller closes it apart
  });

  test('expired rows are not found, and the sweep deletes them', async () => {
    const a = adapter();
    await a.upsert('old', { jti: 'old' }, 60);
    await db.knex('oidc_payloads').where({ id: storedTokenId('old') }).update({ expires_at: new Date(Date.now() - 1000) });
    expect(await a.find('old')).toBeUndefined();
    expect(await sweepExpired(db.knex)).toBeGreaterThanOrEqual(1);
    expect(await db.knex('oidc_payloads').where({ id: storedTokenId('old') }).first()).toBeUndefined();
  });

  test('the sweep deletes in batches of its own statements; two sweeps at once take different rows and leave live ones', async () => {
    const a = adapter();
    await sweepExpired(db.knex); // earlier tests' expired rows
    const ids = Array.from({ length: 7 }, (_, i) => `batch-old-${i}`);
    const keys = ids.map(storedTokenId);
    for (const id of ids) await a.upsert(id, { jti: id }, 60);
    await a.upsert('batch-live', { jti: 'batch-live' }, 60);
    await db.knex('oidc_payloads').whereIn('id', keys).update({ expires_at: new Date(Date.now() - 1000) });
    // Alone, 7 rows 3 at a time: three DELETE statements (3, 3, 1), each its own commit.
    const deletes: string[] = [];
    const count = (q: { sql: string }) => {
      if (/^delete/i.test(q.sql)) deletes.push(q.sql);
    };
    db.knex.on('query', count);
    try {
      expect(await sweepExpired(db.knex, 0, 3)).toBe(ids.length);
    } finally {
      db.knex.off('query', count);
    }
    expect(deletes).toHaveLength(3);
    // Two at once, 2 at a time: between them every row once, no error.
    for (const id of ids) await a.upsert(id, { jti: id }, 60);
    await db.knex('oidc_payloads').whereIn('id', keys).update({ expires_at: new Date(Date.now() - 1000) });
    const swept = await Promise.all([sweepExpired(db.knex, 0, 2), sweepExpired(db.knex, 0, 2)]);
    expect(swept[0] + swept[1]).toBe(ids.length);
    expect(Number(((await db.knex('oidc_payloads').whereIn('id', keys).count({ n: '*' }).first()) as { n: string | number }).n)).toBe(0);
    expect(await a.find('batch-live')).toMatchObject({ jti: 'batch-live' });
  });

  test('the rate-limit and idempotency sweeps delete expired rows only', async () => {
    const now = Date.now();
    await db.knex('rate_limits').insert([
      { key: 'sweep-old', points: 1, expire: now - 1000 },
      { key: 'sweep-live', points: 1, expire: now + 60_000 },
    ]);
    await sweepRateLimits(db.knex);
    expect((await db.knex('rate_limits').whereIn('key', ['sweep-old', 'sweep-live']).select('key')).map((r: { key: string }) => r.key)).toEqual(['sweep-live']);

    const record = (ref: string, expiresAt: Date) => ({ tenant_id: 't', caller: 'c', ref, request_hash: 'h', state: 'done', locked_at: new Date(now), expires_at: expiresAt });
    await db.knex('idempotency_records').insert([record('sweep-old', new Date(now - 1000)), record('sweep-live', new Date(now + 60_000))]);
    const idempotency = createIdempotencyRepository(fixedDb(db.knex), createSealer(Buffer.alloc(32, 3)));
    expect(await idempotency.sweep(new Date(now))).toBe(1);
    expect((await db.knex('idempotency_records').where({ tenant_id: 't' }).select('ref')).map((r: { ref: string }) => r.ref)).toEqual(['sweep-live']);
  });

  test('a sweep lease goes to one caller at a time, and to the next once it is over', async () => {
    expect(await claimSweep(db.knex, 'lease-a', 60)).toBe(true);
    expect(await claimSweep(db.knex, 'lease-a', 60)).toBe(false);
    expect(await claimSweep(db.knex, 'lease-b', 60)).toBe(true); // leases are by name
    // Processes racing for a lease nobody holds yet, or for one just over: one of them gets it.
    const race = async (name: string) => (await Promise.all(Array.from({ length: 6 }, () => claimSweep(db.knex, name, 60)))).filter(Boolean).length;
    expect(await race('lease-c')).toBe(1);
    await db.knex('sweep_leases').where({ name: 'lease-a' }).update({ next_at: new Date(Date.now() - 1000) });
    expect(await race('lease-a')).toBe(1);
    const row = (await db.knex('sweep_leases').where({ name: 'lease-a' }).first()) as { next_at: Date };
    expect(new Date(row.next_at).getTime()).toBeGreaterThan(Date.now() + 50_000);
  });

  test('findByUid and findByUserCode', async () => {
    const s = new KnexAdapter(fixedDb(db.knex), 'Session');
    await s.upsert('s1', { uid: 'uid-1', accountId: 'u1' }, 60);
    expect((await s.findByUid('uid-1'))?.accountId).toBe('u1');
    expect(await s.findByUid('uid-2')).toBeUndefined();
    const d = new KnexAdapter(fixedDb(db.knex), 'DeviceCode');
    await d.upsert('d1', { userCode: 'ABCD-EFGH', grantId: 'g9' }, 60);
    expect((await d.findByUserCode('ABCD-EFGH'))?.grantId).toBe('g9');
    expect(await d.findByUserCode('XXXX')).toBeUndefined();
  });

  test('consume marks the row consumed, once: a second consume fails', async () => {
    const c = new KnexAdapter(fixedDb(db.knex), 'AuthorizationCode');
    await c.upsert('c1', { jti: 'c1' }, 60);
    expect((await c.find('c1'))?.consumed).toBeUndefined();
    await c.consume('c1');
    const first = (await c.find('c1'))?.consumed;
    expect(typeof first).toBe('number');
    await expect(c.consume('c1')).rejects.toMatchObject({ error: 'invalid_grant' });
    expect((await c.find('c1'))?.consumed).toBe(first);
    await expect(c.consume('missing')).rejects.toMatchObject({ error: 'invalid_grant' });
  });

  test('a refresh token consumed twice ends its whole session (grant and every token of it)', async () => {
    const r = new KnexAdapter(fixedDb(db.knex), 'RefreshToken');
    const grants = new KnexAdapter(fixedDb(db.knex), 'Grant');
    await grants.upsert('G2', { jti: 'G2', accountId: 'u9' }, 60);
    await r.upsert('r1', { jti: 'r1', grantId: 'G2' }, 60);
    await r.upsert('r2', { jti: 'r2', grantId: 'G2' }, 60);
    await r.consume('r1');
    await expect(r.consume('r1')).rejects.toMatchObject({ error: 'invalid_grant' });
    expect(await r.find('r1')).toBeUndefined();
    expect(await r.find('r2')).toBeUndefined();
    expect(await grants.find('G2')).toBeUndefined();
  });

  test('of 20 concurrent consumes exactly one succeeds', async () => {
    const r = new KnexAdapter(fixedDb(db.knex), 'RefreshToken');
    await r.upsert('race', { jti: 'race' }, 60);
    const results = await Promise.allSettled(Array.from({ length: 20 }, () => r.consume('race')));
    expect(results.filter((x) => x.status === 'fulfilled')).toHaveLength(1);
  });

  test('destroy removes one row', async () => {
    const a = adapter();
    await a.upsert('t3', { jti: 't3' }, 60);
    await a.upsert('t4', { jti: 't4' }, 60);
    await a.destroy('t3');
    expect(await a.find('t3')).toBeUndefined();
    expect(await a.find('t4')).toBeDefined();
  });

  test('revokeByGrantId removes every model of the grant and nothing else', async () => {
    await adapter().upsert('ga1', { jti: 'ga1', grantId: 'G' }, 60);
    await new KnexAdapter(fixedDb(db.knex), 'RefreshToken').upsert('gr1', { jti: 'gr1', grantId: 'G' }, 60);
    await new KnexAdapter(fixedDb(db.knex), 'Grant').upsert('G', { jti: 'G' }, 60);
    await adapter().upsert('other', { jti: 'other', grantId: 'H' }, 60);
    await adapter().revokeByGrantId('G');
    expect(await adapter().find('ga1')).toBeUndefined();
    expect(await new KnexAdapter(fixedDb(db.knex), 'RefreshToken').find('gr1')).toBeUndefined();
    expect(await adapter().find('other')).toBeDefined();
  });
});
