import bcrypt from 'bcrypt';
import type { Database } from '../../src/db/knex';
import { pairsOf, registerPairs, type StatementPairs } from '../../src/db/pairing';
import type { PreparedStatement } from '../../src/db/prepared';
import { usingPostgres } from '../helpers/env';
import { useTestDatabase } from '../helpers/database';
import { startTestServer, type TestServer } from '../helpers/server';
import { basic, createClient, createTenant, createUser, form, introspect, statements, type ClientCreds } from '../helpers/flows';

// On PostgreSQL, under load, a password login's first statement waits for another login's
// session INSERT and goes in its round trip (src/db/pairing.ts): one write, two statements, each
// its own transaction.
const describePg = usingPostgres ? describe : describe.skip;

/** Lets the event loop and the database answer whatever is already under way. */
const settle = async (db: Database) => {
  await db.knex.raw('select 1');
  await new Promise((r) => setImmediate(r));
};

describePg('statements sharing a round trip (src/db/pairing.ts)', () => {
  let db: Database;
  let pairs: StatementPairs;

  const NOTE: PreparedStatement = { name: 'test_pairs_note_v1', text: 'INSERT INTO pair_notes (what) VALUES ($1) RETURNING pg_backend_pid() AS pid, id' };
  const FAIL: PreparedStatement = { name: 'test_pairs_fail_v1', text: 'INSERT INTO pair_notes (what) SELECT $1 WHERE 1 / 0 = 1 RETURNING id' };
  const notes = async () => (await db.knex('pair_notes').orderBy('id').select('what')).map((r: { what: string }) => r.what);

  useTestDatabase({ migrate: false }, (opened) => (db = opened));
  beforeAll(async () => {
    await db.knex.raw('CREATE TABLE pair_notes (id bigserial PRIMARY KEY, what text NOT NULL)');
  });
  beforeEach(async () => {
    pairs = pairsOf(db.knex)!;
    await db.knex('pair_notes').del();
  });

  test('the main pool has pairs, on connections of their own in pipeline mode; a transaction has none', async () => {
    expect(pairs).toBeDefined();
    await db.knex.transaction(async (trx) => {
      expect(pairsOf(trx)).toBeUndefined();
    });
    const pipelined = (await db.logins!.client.acquireConnection()) as { pipeline: boolean };
    try {
      expect(pipelined.pipeline).toBe(true);
    } finally {
      await db.logins!.client.releaseConnection(pipelined);
    }
  });

  test('a waiting start runs only with the next carrier, after it, on its connection', async () => {
    const started = pairs.start<{ pid: number }>(NOTE, ['rider'], true);
    let done = false;
    void started.then(() => (done = true));
    await settle(db);
    expect(done).toBe(false);
    expect(pairs.waiting).toBe(1);
    expect(await notes()).toEqual([]); // not sent

    const [carrier] = await pairs.carry<{ pid: number }>(NOTE, ['carrier']);
    const [rider] = await started;
    expect(pairs.waiting).toBe(0);
    expect(rider!.pid).toBe(carrier!.pid);
    expect(await notes()).toEqual(['carrier', 'rider']);
  });

  test('a carrier takes one start, the longest-waiting; the others wait for the next', async () => {
    const first = pairs.start(NOTE, ['first'], true);
    const second = pairs.start(NOTE, ['second'], true);
    await pairs.carry(NOTE, ['carrier 1']);
    await first;
    expect(pairs.waiting).toBe(1);
    await pairs.carry(NOTE, ['carrier 2']);
    await second;
    expect(await notes()).toEqual(['carrier 1', 'first', 'carrier 2', 'second']);
  });

  test("the carrier's failure neither undoes nor stops its rider, nor the rider's the carrier", async () => {
    const rider = pairs.start(NOTE, ['rider kept'], true);
    await expect(pairs.carry(FAIL, ['carrier failed'])).rejects.toMatchObject({ code: '22012' });
    await expect(rider).resolves.toHaveLength(1);

    const failing = pairs.start(FAIL, ['rider failed'], true);
    await expect(pairs.carry(NOTE, ['carrier kept'])).resolves.toHaveLength(1);
    await expect(failing).rejects.toMatchObject({ code: '22012' });
    expect(await notes()).toEqual(['rider kept', 'carrier kept']);

    // The connections are still good: a pair after the failures.
    const after = pairs.start(NOTE, ['rider after'], true);
    await pairs.carry(NOTE, ['carrier after']);
    await after;
    expect((await notes()).slice(2)).toEqual(['carrier after', 'rider after']);
  });

  test('a start never waits longer than maxWaitMs: then it goes alone', async () => {
    const due: Array<() => void> = [];
    const cancelled: number[] = [];
    const timed = registerPairs(db.knex, db.logins!, {
      maxWaitMs: 1234,
      schedule: (fn, ms) => {
        expect(ms).toBe(1234);
        due.push(fn);
        const n = due.length;
        return () => cancelled.push(n);
      },
    });
    try {
      const late = timed.start(NOTE, ['waited its longest'], true);
      const carried = timed.start(NOTE, ['carried'], true);
      await timed.carry(NOTE, ['carrier']); // takes the first
      await late;
      expect(cancelled).toEqual([1]); // sent: its wait is over
      due[1]!(); // the second's longest wait ends with no carrier
      await carried;
      expect(timed.waiting).toBe(0);
      expect(await notes()).toEqual(['carrier', 'waited its longest', 'carried']);
    } finally {
      registerPairs(db.knex, db.logins!); // the pool's own pairs again
    }
  });

  test('flushOne sends the longest-waiting start alone, flush every one; a carrier with none waiting goes alone', async () => {
    const a = pairs.start(NOTE, ['a'], true);
    const b = pairs.start(NOTE, ['b'], true);
    const c = pairs.start(NOTE, ['c'], true);
    pairs.flushOne();
    await a;
    expect(pairs.waiting).toBe(2);
    pairs.flush();
    await Promise.all([b, c]);
    expect(pairs.waiting).toBe(0);
    await pairs.carry(NOTE, ['alone']);
    expect((await notes()).sort()).toEqual(['a', 'alone', 'b', 'c']);
    // Not asked to wait: at once.
    await pairs.start(NOTE, ['at once'], false);
    expect(await notes()).toContain('at once');
  });
});

describePg('password logins under load: a login starts in the round trip of another one\'s session', () => {
  const PASSWORD = 'pairs of statements share a trip';
  let srv: TestServer;
  let app: ClientCreds;
  let rs: ClientCreds;
  /** Each bcrypt comparison waits for the test to let it go, in the order they began. */
  let gates: Array<() => void> = [];
  let compare: jest.SpyInstance;

  beforeAll(async () => {
    // One bcrypt computation at a time, as a worker on one core.
    srv = await startTestServer({ config: { bcryptConcurrency: 1 } });
    // Waiting starts get no 2 s deadline here: each case shows what sends them, and nothing else may.
    const { knex: main, logins } = srv.running.app.database;
    registerPairs(main, logins!, { maxWaitMs: 600_000 });
    await createTenant(srv, 'pairs');
    app = await createClient(srv, { tenants: ['pairs'], grant_types: ['password'] });
    rs = await createClient(srv, { tenants: ['pairs'], introspection: true });
    for (const name of ['ann', 'bob', 'cat', 'dan', 'eve']) await createUser(srv, 'pairs', { username: name, password: PASSWORD });
  });
  beforeEach(() => {
    gates = [];
    const real = bcrypt.compare.bind(bcrypt) as (a: string, b: string) => Promise<boolean>;
    compare = jest.spyOn(bcrypt, 'compare').mockImplementation((async (data: string, encrypted: string) => {
      await new Promise<void>((resolve) => gates.push(resolve));
      return real(data, encrypted);
    }) as never);
  });
  afterEach(() => compare.mockRestore());
  afterAll(async () => srv?.close());

  const knex = () => srv.running.app.database.knex;
  const hasher = () => srv.running.app.services.hasher;
  const pairs = () => pairsOf(knex())!;
  const loginOf = (username: string, password = PASSWORD) =>
    form(srv, '/token', { grant_type: 'password', username, password, tenant: 'pairs' }, { authorization: basic(app) });
  /** Polls (no sleeping: each turn waits for a round trip to the database) until `cond` holds. */
  const until = async (cond: () => boolean | Promise<boolean>) => {
    for (const deadline = Date.now() + 10_000; Date.now() < deadline; ) {
      if (await cond()) return;
      await knex().raw('select 1');
    }
    throw new Error('the condition never held');
  };
  const failures = async (username: string) => Number((await knex()('users').where({ username }).first('failed_login_count')).failed_login_count);

  /**
   * Other work waiting for bcrypt behind every login so far: a hash (not gated), so that the slot
   * a login finishes with passes to someone while logins still wait.
   */
  const filler = () => hasher().hash('a hash that keeps bcrypt busy');
  const release = async (n: number) => {
    for (let i = 0; i < n; i += 1) {
      await until(() => gates.length > 0);
      gates.shift()!();
    }
  };

  test('with logins waiting for bcrypt, a new login waits and goes with the next session stored; every login succeeds and is closed', async () => {
    const carry = jest.spyOn(pairs(), 'carry');
    try {
      const seen = statements(srv, async () => {
        const ann = loginOf('ann'); // evaluating
        await until(() => gates.length === 1);
        const bob = loginOf('bob'); // started alone (nothing waited for bcrypt), now waits for it
        await until(() => hasher().busy());
        const busy = filler();
        const cat = loginOf('cat'); // bcrypt is busy: waits for a round trip to share
        await until(() => pairs().waiting === 1);
        expect(await failures('cat')).toBe(0); // its attempt is not counted yet: nothing was sent

        gates.shift()!(); // ann's password is right: her session carries cat's start
        expect((await ann).status).toBe(200);
        expect(carry).toHaveBeenCalledTimes(1);
        expect(pairs().waiting).toBe(0);
        await until(async () => (await failures('cat')) === 1); // counted before the password is evaluated
        await release(2);
        const answers = await Promise.all([bob, cat]);
        expect(answers.map((a) => a.status)).toEqual([200, 200]);
        for (const a of answers) expect((await introspect(srv, rs, a.json.access_token as string)).json.active).toBe(true);
        await busy;
      });
      const sql = (await seen).map((s) => s.sql.replace(/\s+/g, ' '));
      // Three logins, three starts and three sessions: nothing repeated, nothing left out.
      expect(sql.filter((s) => s.includes('UPDATE users SET failed_login_count = CASE WHEN'))).toHaveLength(3);
      expect(sql.filter((s) => s.includes('INSERT INTO oidc_payloads') && s.includes('login_ip AS'))).toHaveLength(3);
      for (const name of ['ann', 'bob', 'cat']) expect(await failures(name)).toBe(0);
      const [point] = await knex()('rate_limits').where('key', 'like', 'login_ip:%').select('points');
      expect(Number(point.points)).toBe(0);
    } finally {
      carry.mockRestore();
    }
  });

  test('when the last login waiting for bcrypt gets its turn, a waiting start is sent at once, not left for a carrier', async () => {
    const carry = jest.spyOn(pairs(), 'carry');
    try {
      const ann = loginOf('ann');
      await until(() => gates.length === 1);
      const bob = loginOf('bob');
      await until(() => hasher().busy());
      const cat = loginOf('cat'); // waits for a round trip
      await until(() => pairs().waiting === 1);
      gates.shift()!(); // bob gets his turn: none waits for bcrypt behind him, so cat starts now
      await until(async () => (await failures('cat')) === 1);
      await release(2);
      expect((await Promise.all([ann, bob, cat])).map((a) => a.status)).toEqual([200, 200, 200]);
      expect(carry).not.toHaveBeenCalled();
      expect(pairs().waiting).toBe(0);
    } finally {
      carry.mockRestore();
    }
  });

  test.each([
    ['a wrong password', 'ann', 'not the right password at all'],
    ['an unknown user (a dummy evaluation)', 'nobody-here', PASSWORD],
  ])('%s, which stores no session, sends the longest-waiting start at once; its failure stays counted', async (_case, first, firstPassword) => {
    const carry = jest.spyOn(pairs(), 'carry');
    const before = await failures('ann');
    try {
      const ann = loginOf(first, firstPassword);
      await until(() => gates.length === 1);
      const bob = loginOf('bob');
      await until(() => hasher().busy());
      const busy = filler();
      const eve = loginOf('eve');
      await until(() => pairs().waiting === 1);
      gates.shift()!(); // ann fails: eve starts on her own
      expect((await ann).status).toBe(400);
      await until(async () => (await failures('eve')) === 1);
      expect(pairs().waiting).toBe(0);
      await release(2);
      expect((await Promise.all([bob, eve])).map((a) => a.status)).toEqual([200, 200]);
      await busy;
      expect(carry).not.toHaveBeenCalled();
      expect(await failures('ann')).toBe(first === 'ann' ? before + 1 : before);
      expect(await failures('eve')).toBe(0);
    } finally {
      carry.mockRestore();
    }
  });
  test('a hash that no session follows (a registration\'s) sends the waiting start when it ends', async () => {
    const hashGates: Array<() => void> = [];
    const realHash = bcrypt.hash.bind(bcrypt) as (data: string, rounds: number) => Promise<string>;
    const hash = jest.spyOn(bcrypt, 'hash').mockImplementation((async (data: string, rounds: number) => {
      await new Promise<void>((resolve) => hashGates.push(resolve));
      return realHash(data, rounds);
    }) as never);
    const carry = jest.spyOn(pairs(), 'carry');
    try {
      const first = filler(); // the computation running
      await until(() => hashGates.length === 1);
      const ann = loginOf('ann'); // started alone (nothing waited for bcrypt), now waits behind the hash
      await until(() => hasher().busy());
      const second = filler(); // waits behind ann: the queue stays busy when the first hash ends
      const bob = loginOf('bob'); // waits for a round trip
      await until(() => pairs().waiting === 1);
      expect(await failures('bob')).toBe(0);
      hashGates.shift()!(); // the first hash ends, no session follows it: bob starts now, not at ann's session
      await until(async () => (await failures('bob')) === 1);
      expect(pairs().waiting).toBe(0);
      await first;
      await release(1); // ann
      expect((await ann).status).toBe(200);
      await until(() => hashGates.length === 1);
      hashGates.shift()!(); // the second hash
      await second;
      await release(1); // bob
      expect((await bob).status).toBe(200);
      expect(carry).not.toHaveBeenCalled();
    } finally {
      carry.mockRestore();
      hash.mockRestore();
    }
  });

  test('a right password whose session cannot be stored sends the waiting start when its login is closed apart', async () => {
    const carry = jest.spyOn(pairs(), 'carry');
    // dan must pass login-time MFA, and the look-up of his factors fails: no session is stored.
    await knex()('users').where({ username: 'dan' }).update({ mfa_required: true });
    const { factors } = srv.running.app.services;
    const list = jest.spyOn(factors, 'list').mockRejectedValueOnce(new Error('factors unavailable'));
    try {
      const dan = loginOf('dan');
      await until(() => gates.length === 1);
      const bob = loginOf('bob');
      await until(() => hasher().busy());
      const busy = filler(); // behind bob: the queue does not drain when dan's turn ends
      const cat = loginOf('cat'); // waits for a round trip
      await until(() => pairs().waiting === 1);
      gates.shift()!(); // dan's password is right, his session is not stored: closing his login sends cat's start
      expect((await dan).status).toBe(500);
      expect(list).toHaveBeenCalledTimes(1);
      await until(async () => (await failures('cat')) === 1);
      expect(pairs().waiting).toBe(0);
      expect(carry).not.toHaveBeenCalled();
      expect(await failures('dan')).toBe(0); // his attempt given back
      await release(2);
      expect((await Promise.all([bob, cat])).map((a) => a.status)).toEqual([200, 200]);
      await busy;
    } finally {
      list.mockRestore();
      carry.mockRestore();
      await knex()('users').where({ username: 'dan' }).update({ mfa_required: false });
    }
  });

  test('no more starts wait than computations run: a further login starts at once, and a throttled one is refused at once', async () => {
    const carry = jest.spyOn(pairs(), 'carry');
    try {
      const ann = loginOf('ann'); // evaluating: the one computation running
      await until(() => gates.length === 1);
      const bob = loginOf('bob');
      await until(() => hasher().busy());
      const cat = loginOf('cat'); // waits for ann's session
      await until(() => pairs().waiting === 1);
      // One start waits per running computation: dan does not wait behind cat, for ann's end or any other.
      const dan = loginOf('dan');
      await until(async () => (await failures('dan')) === 1);
      expect(pairs().waiting).toBe(1);
      expect(await failures('cat')).toBe(0);

      // An address out of points is told so at once, however many of its logins come meanwhile:
      // none waits for a carrier (the address's counter, as a flood would leave it).
      const [{ points }] = await knex()('rate_limits').where('key', 'like', 'login_ip:%').select('points');
      await knex()('rate_limits').where('key', 'like', 'login_ip:%').update({ points: 1_000_000 });
      const refused = await Promise.all([loginOf('eve'), loginOf('eve'), loginOf('eve')]);
      expect(refused.map((r) => r.status)).toEqual([429, 429, 429]);
      expect(pairs().waiting).toBe(1);
      expect(await failures('cat')).toBe(0);
      await knex()('rate_limits').where('key', 'like', 'login_ip:%').update({ points });

      gates.shift()!(); // ann's session carries cat
      expect((await ann).status).toBe(200);
      expect(carry).toHaveBeenCalledTimes(1);
      await until(async () => (await failures('cat')) === 1);
      await release(3);
      expect((await Promise.all([bob, cat, dan])).map((a) => a.status)).toEqual([200, 200, 200]);
    } finally {
      carry.mockRestore();
    }
  });
});
