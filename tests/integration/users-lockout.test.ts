import { startTestServer, type TestServer } from '../helpers/server';
import { basic, createClient, createTenant, createUser, form, login, passwordLogin, statements, testClock, type ClientCreds } from '../helpers/flows';
import { dbLabel } from '../helpers/env';
import * as addLoginAttemptedAt from '../../migrations/20261124060000_add-login-attempted-at';

const PASSWORD = 'an entirely sensible passphrase';

/** `login`, whose first statement runs, then `meanwhile`, before its password is evaluated. */
async function loginWithMeanwhile<T>(srv: TestServer, meanwhile: () => Promise<void>, login: () => Promise<T>): Promise<T> {
  const { users } = srv.running.app.services;
  const original = users.beginLogin.bind(users);
  const begin = jest.spyOn(users, 'beginLogin').mockImplementationOnce(async (input) => {
    const start = await original(input);
    await meanwhile();
    return start;
  });
  try {
    return await login();
  } finally {
    begin.mockRestore();
  }
}

describe(`brute-force protection (${dbLabel})`, () => {
  let srv: TestServer;
  let app: ClientCreds;

  beforeAll(async () => {
    // a generous IP budget here: this file tests the per-user lock
    srv = await startTestServer({ config: { loginThrottle: { failuresPerWindow: 1000, windowSeconds: 60 } } });
    await createTenant(srv, 'bank-a');
    app = await createClient(srv, { tenants: ['bank-a'], grant_types: ['password'] });
  });
  afterAll(async () => srv?.close());

  test('50 parallel wrong passwords evaluate at most the threshold; then even the right password fails generically', async () => {
    const user = await createUser(srv, 'bank-a', { username: 'victim', password: PASSWORD });
    const verify = jest.spyOn(srv.running.app.services.hasher, 'verify');
    try {
      const results = await Promise.all(Array.from({ length: 50 }, (_, i) => passwordLogin(srv, app, 'victim', `wrong guess number ${i}`)));
      expect(results.every((r) => r.status === 400 && r.json.error === 'invalid_grant')).toBe(true);
      expect(new Set(results.map((r) => JSON.stringify(r.json))).size).toBe(1);
      expect(verify.mock.calls.length).toBeLessThanOrEqual(10); // default threshold
      expect(verify.mock.calls.length).toBeGreaterThan(0);

      const row = await srv.running.app.database.knex('users').where({ id: user.id }).first();
      expect(row.locked_until).not.toBeNull();

      verify.mockClear();
      const during = await passwordLogin(srv, app, 'victim', PASSWORD);
      expect(during.status).toBe(400);
      expect(during.json).toEqual(results[0]!.json);
      expect(verify).not.toHaveBeenCalled();
    } finally {
      verify.mockRestore();
    }
  });

  test('after the lock expires the right password works and resets the count; the next lock is longer', async () => {
    const user = await createUser(srv, 'bank-a', { username: 'victim2', password: PASSWORD });
    const knex = srv.running.app.database.knex;
    for (let i = 0; i < 10; i += 1) await passwordLogin(srv, app, 'victim2', `nope ${i}`);
    const first = await knex('users').where({ id: user.id }).first();
    const firstLock = new Date(first.locked_until).getTime() - Date.now();
    expect(firstLock).toBeGreaterThan(250_000); // 300 s by default
    expect(firstLock).toBeLessThanOrEqual(300_000);

    await knex('users').where({ id: user.id }).update({ locked_until: new Date(Date.now() - 1000) }); // time passes
    for (let i = 0; i < 10; i += 1) await passwordLogin(srv, app, 'victim2', `nope again ${i}`);
    const second = await knex('users').where({ id: user.id }).first();
    expect(new Date(second.locked_until).getTime() - Date.now()).toBeGreaterThan(550_000); // doubled

    await knex('users').where({ id: user.id }).update({ locked_until: new Date(Date.now() - 1000) });
    await login(srv, app, 'victim2', PASSWORD);
    const after = await knex('users').where({ id: user.id }).first();
    expect(after.failed_login_count).toBe(0);
    expect(after.lockout_count).toBe(0);
  });

  test('a successful login resets the consecutive-failure count', async () => {
    await createUser(srv, 'bank-a', { username: 'forgetful', password: PASSWORD });
    for (let round = 0; round < 3; round += 1) {
      for (let i = 0; i < 9; i += 1) await passwordLogin(srv, app, 'forgetful', `typo ${i}`);
      await login(srv, app, 'forgetful', PASSWORD); // never locked: 9 < 10
    }
  });

  test('an unknown user, a locked user and a wrong password: one statement each and the same bcrypt work; only the audit log tells them apart', async () => {
    const knex = srv.running.app.database.knex;
    const user = await createUser(srv, 'bank-a', { username: 'audited', password: PASSWORD });
    const locked = await createUser(srv, 'bank-a', { username: 'audited-locked', password: PASSWORD });
    await knex('users').where({ id: locked.id }).update({ status: 'locked' });
    await login(srv, app, 'audited', PASSWORD); // the client and tenant are cached now
    const { hasher } = srv.running.app.services;
    const verify = jest.spyOn(hasher, 'verify');
    const dummy = jest.spyOn(hasher, 'dummyVerify');
    const replies: unknown[] = [];
    try {
      for (const [name, password] of [['nobody-by-this-name', PASSWORD], ['audited-locked', PASSWORD], ['audited', 'not the passphrase']] as const) {
        const seen = await statements(srv, async () => {
          const res = await passwordLogin(srv, app, name, password);
          expect(res.status).toBe(400);
          replies.push(res.json);
        });
        // The audit record is written on the side (and may land outside this window).
        expect(seen.filter((q) => !/audit_log/.test(q.sql))).toHaveLength(1);
      }
      expect(new Set(replies.map((r) => JSON.stringify(r))).size).toBe(1);
      expect(verify).toHaveBeenCalledTimes(1);
      expect(dummy).toHaveBeenCalledTimes(2);
    } finally {
      verify.mockRestore();
      dummy.mockRestore();
    }
    const reasons = async () =>
      ((await knex('audit_log').where({ type: 'user.login_failed' }).orderBy('id')) as Array<{ target: string | null; details: string | { reason: string } }>)
        .map((r) => ({ target: r.target, reason: (typeof r.details === 'string' ? (JSON.parse(r.details) as { reason: string }) : r.details).reason }))
        .filter((r) => [null, user.id, locked.id].includes(r.target));
    for (let i = 0; i < 50 && (await reasons()).length < 3; i += 1) await new Promise((r) => setTimeout(r, 20));
    expect((await reasons()).slice(-3)).toEqual([
      { target: null, reason: 'unknown_user' },
      { target: locked.id, reason: 'locked' },
      { target: user.id, reason: 'wrong_password' },
    ]);
  });

  test('an administratively locked user gets the same generic error', async () => {
    const user = await createUser(srv, 'bank-a', { username: 'suspended', password: PASSWORD });
    await srv.running.app.database.knex('users').where({ id: user.id }).update({ status: 'locked' });
    const res = await passwordLogin(srv, app, 'suspended', PASSWORD);
    expect(res.json).toEqual({ error: 'invalid_grant', error_description: 'invalid username or password' });
  });
});

describe(`a login attempt that is never closed (${dbLabel})`, () => {
  const clock = testClock();
  let srv: TestServer;
  let app: ClientCreds;

  beforeAll(async () => {
    // An address window longer than the clock moves in these tests: its points only change with attempts.
    srv = await startTestServer({ clock: clock.now, config: { loginThrottle: { failuresPerWindow: 1000, windowSeconds: 36_000 } } });
    await createTenant(srv, 'bank-a');
    app = await createClient(srv, { tenants: ['bank-a'], grant_types: ['password'] });
  });
  afterAll(async () => srv?.close());

  /** Attempts reserved as a login reserves them, then abandoned: the process died before closing them. */
  async function abandonAttempts(username: string, n: number) {
    for (let i = 0; i < n; i += 1) {
      const start = await srv.running.app.services.users.beginLogin({
        tenantId: 'bank-a',
        identifier: { kind: 'username', value: username },
        threshold: 10,
        staleAfterSeconds: 900, // the default period (300 s) under the floor (service.ts)
        throttle: { key: 'abandoned-test', limit: 1000, windowMs: 60_000, now: clock.now().getTime() },
      });
      expect(start.user).toBeDefined();
    }
  }

  test('a count left at the threshold without a lock keeps the user out for a while (at least 15 minutes), not for good', async () => {
    const user = await createUser(srv, 'bank-a', { username: 'orphaned', password: PASSWORD });
    const knex = srv.running.app.database.knex;
    await abandonAttempts('orphaned', 10); // the default threshold, and no lock was ever set
    const stuck = await knex('users').where({ id: user.id }).first();
    expect(stuck.failed_login_count).toBe(10);
    expect(stuck.locked_until).toBeNull();

    const verify = jest.spyOn(srv.running.app.services.hasher, 'verify');
    try {
      // Within the period it stands as a lock would: the right password is not even evaluated.
      expect((await passwordLogin(srv, app, 'orphaned', PASSWORD)).json).toEqual({ error: 'invalid_grant', error_description: 'invalid username or password' });
      clock.advance(301); // past the lockout period, but not past the floor of 15 minutes
      expect((await passwordLogin(srv, app, 'orphaned', PASSWORD)).status).toBe(400);
      clock.advance(598);
      expect((await passwordLogin(srv, app, 'orphaned', PASSWORD)).status).toBe(400);
      expect(verify).not.toHaveBeenCalled();
    } finally {
      verify.mockRestore();
    }

    clock.advance(2); // the last attempt is 15 minutes old
    await login(srv, app, 'orphaned', PASSWORD);
    const after = await knex('users').where({ id: user.id }).first();
    expect(after.failed_login_count).toBe(0);
    expect(after.locked_until).toBeNull();
  });

  test('an aged-out count starts afresh: the next wrong passwords count from one and lock at the threshold again', async () => {
    const user = await createUser(srv, 'bank-a', { username: 'orphaned-again', password: PASSWORD });
    const knex = srv.running.app.database.knex;
    await abandonAttempts('orphaned-again', 10);
    clock.advance(901);
    expect((await passwordLogin(srv, app, 'orphaned-again', 'not the passphrase')).status).toBe(400);
    const once = await knex('users').where({ id: user.id }).first();
    expect(once.failed_login_count).toBe(1);
    expect(once.locked_until).toBeNull();
    for (let i = 0; i < 9; i += 1) await passwordLogin(srv, app, 'orphaned-again', `nope ${i}`);
    expect((await knex('users').where({ id: user.id }).first()).locked_until).not.toBeNull();
  });

  test('a password whose evaluation would start more than a minute after its attempt was counted is not evaluated: 503, the attempt given back', async () => {
    const user = await createUser(srv, 'bank-a', { username: 'queued', password: PASSWORD });
    const knex = srv.running.app.database.knex;
    for (let i = 0; i < 3; i += 1) expect((await passwordLogin(srv, app, 'queued', `wrong ${i}`)).status).toBe(400);
    const points = async () => ((await knex('rate_limits').where('key', 'like', 'login_ip:%')) as Array<{ points: number }>).reduce((n, r) => n + Number(r.points), 0);
    const pointsBefore = await points();
    const { users } = srv.running.app.services;
    const original = users.beginLogin.bind(users);
    // The attempt is counted, then the login waits (an overloaded bcrypt queue) past the deadline.
    const begin = jest.spyOn(users, 'beginLogin').mockImplementation(async (input) => {
      const start = await original(input);
      clock.advance(61);
      return start;
    });
    try {
      const answers = [await passwordLogin(srv, app, 'queued', PASSWORD), await passwordLogin(srv, app, 'nobody-by-this-name', PASSWORD)];
      for (const res of answers) {
        expect(res.status).toBe(503);
        expect(res.json).toEqual({ error: 'temporarily_unavailable', error_description: 'the service is temporarily unavailable; try again later' });
        expect(Number(res.headers.get('retry-after'))).toBeGreaterThan(0);
      }
    } finally {
      begin.mockRestore();
    }
    // Only the unevaluated attempts went back: the three real failures still count.
    expect((await knex('users').where({ id: user.id }).first()).failed_login_count).toBe(3);
    expect(await points()).toBe(pointsBefore);
    await login(srv, app, 'queued', PASSWORD);
  });

  /**
   * A login whose attempt is counted, then `meanwhile` runs and the login waits past the evaluation
   * deadline (an overloaded bcrypt queue): 503, its attempt given back. The user's count after.
   */
  async function lateLogin(userId: string, username: string, password: string, meanwhile: () => Promise<void>): Promise<number> {
    const late = async () => {
      await meanwhile();
      clock.advance(61);
    };
    expect((await loginWithMeanwhile(srv, late, () => passwordLogin(srv, app, username, password))).status).toBe(503);
    return Number((await srv.running.app.database.knex('users').where({ id: userId }).first()).failed_login_count);
  }

  test('an attempt given back unevaluated with no reset meanwhile takes itself off: the failures around it still count', async () => {
    const user = await createUser(srv, 'bank-a', { username: 'failed-meanwhile', password: PASSWORD });
    for (let i = 0; i < 2; i += 1) expect((await passwordLogin(srv, app, 'failed-meanwhile', `before ${i}`)).status).toBe(400);
    const meanwhile = async () => {
      expect((await passwordLogin(srv, app, 'failed-meanwhile', 'wrong meanwhile')).status).toBe(400);
    };
    expect(await lateLogin(user.id, 'failed-meanwhile', 'a guess', meanwhile)).toBe(3);
  });

  test('an attempt given back unevaluated after the count was started afresh takes nothing off it: the later failures all count', async () => {
    const user = await createUser(srv, 'bank-a', { username: 'reset-meanwhile', password: PASSWORD });
    const knex = srv.running.app.database.knex;
    // The login's attempt is counted; while it waits past the deadline (an overloaded bcrypt
    // queue), the user logs in (the count starts afresh) and then fails nine times.
    const meanwhile = async () => {
      expect((await passwordLogin(srv, app, 'reset-meanwhile', PASSWORD)).status).toBe(200);
      for (let i = 0; i < 9; i += 1) expect((await passwordLogin(srv, app, 'reset-meanwhile', `wrong ${i}`)).status).toBe(400);
    };
    expect(await lateLogin(user.id, 'reset-meanwhile', PASSWORD, meanwhile)).toBe(9);
    // The tenth failure reaches the threshold (10): locked, the right password refused.
    expect((await passwordLogin(srv, app, 'reset-meanwhile', 'wrong at last')).status).toBe(400);
    expect((await knex('users').where({ id: user.id }).first()).locked_until).not.toBeNull();
    expect((await passwordLogin(srv, app, 'reset-meanwhile', PASSWORD)).status).toBe(400);
  });

  test('after an unlock, an attempt reserved before it takes nothing off the new count', async () => {
    const user = await createUser(srv, 'bank-a', { username: 'unlocked-meanwhile', password: PASSWORD });
    const meanwhile = async () => {
      await srv.running.app.services.users.setStatus('bank-a', user.id, 'active');
      expect((await passwordLogin(srv, app, 'unlocked-meanwhile', 'wrong after the unlock')).status).toBe(400);
    };
    expect(await lateLogin(user.id, 'unlocked-meanwhile', 'a guess', meanwhile)).toBe(1);
  });

  test('a count begun again after a lock ended is a new count: an attempt reserved before takes nothing off it', async () => {
    const user = await createUser(srv, 'bank-a', { username: 'lock-ended-meanwhile', password: PASSWORD });
    const knex = srv.running.app.database.knex;
    for (let i = 0; i < 9; i += 1) await passwordLogin(srv, app, 'lock-ended-meanwhile', `nope ${i}`);
    const meanwhile = async () => {
      // The attempt (the tenth) is counted; a lock is set and ends while it waits, and the next
      // wrong password starts the count again from one.
      await knex('users').where({ id: user.id }).update({ locked_until: knex.raw("now() - interval '1 second'") }); // the database's clock
      expect((await passwordLogin(srv, app, 'lock-ended-meanwhile', 'wrong after the lock')).status).toBe(400);
    };
    expect(await lateLogin(user.id, 'lock-ended-meanwhile', 'a guess', meanwhile)).toBe(1);
  });

  test('a count below the threshold is not aged out: attempts keep counting toward the lock', async () => {
    const user = await createUser(srv, 'bank-a', { username: 'slow-guesser', password: PASSWORD });
    const knex = srv.running.app.database.knex;
    await abandonAttempts('slow-guesser', 9);
    clock.advance(3600);
    expect((await passwordLogin(srv, app, 'slow-guesser', 'not the passphrase')).status).toBe(400);
    const row = await knex('users').where({ id: user.id }).first();
    expect(row.failed_login_count).toBe(10);
    expect(row.locked_until).not.toBeNull();
  });
});

describe(`counts left at the threshold before the upgrade (${dbLabel})`, () => {
  const clock = testClock();
  let srv: TestServer;
  let app: ClientCreds;

  beforeAll(async () => {
    srv = await startTestServer({ clock: clock.now });
    await createTenant(srv, 'bank-a');
    app = await createClient(srv, { tenants: ['bank-a'], grant_types: ['password'] });
  });
  afterAll(async () => srv?.close());

  test('the migration dates them now, so they age out 15 minutes (or a longer lockout period) after it', async () => {
    const user = await createUser(srv, 'bank-a', { username: 'stuck-before', password: PASSWORD });
    const knex = srv.running.app.database.knex;
    await addLoginAttemptedAt.down(knex);
    await knex('users').where({ id: user.id }).update({ failed_login_count: 10 }); // stuck, as the old code could leave it
    await addLoginAttemptedAt.up(knex);
    expect((await knex('users').where({ id: user.id }).first()).login_attempted_at).not.toBeNull();
    expect((await passwordLogin(srv, app, 'stuck-before', PASSWORD)).status).toBe(400);
    clock.advance(901);
    await login(srv, app, 'stuck-before', PASSWORD);
  });
});

describe(`per-IP throttling of failed logins (${dbLabel})`, () => {
  let srv: TestServer;
  let app: ClientCreds;

  beforeAll(async () => {
    srv = await startTestServer({ config: { loginThrottle: { failuresPerWindow: 5, windowSeconds: 60 } } });
    await createTenant(srv, 'bank-a');
    app = await createClient(srv, { tenants: ['bank-a'], grant_types: ['password'] });
    await createUser(srv, 'bank-a', { username: 'ok-user', password: PASSWORD });
  });
  afterAll(async () => srv?.close());

  test('successful logins are never throttled', async () => {
    for (let i = 0; i < 8; i += 1) expect((await passwordLogin(srv, app, 'ok-user', PASSWORD)).status).toBe(200);
  });

  test('after the budget of failures: 429 with Retry-After, before any password is evaluated', async () => {
    for (let i = 0; i < 5; i += 1) expect((await passwordLogin(srv, app, `nobody${i}@example.com`, 'whatever-it-is')).status).toBe(400);
    const verify = jest.spyOn(srv.running.app.services.hasher, 'verify');
    try {
      const res = await passwordLogin(srv, app, 'ok-user', PASSWORD);
      expect(res.status).toBe(429);
      expect(res.json.error).toBe('temporarily_unavailable');
      expect(Number(res.headers.get('retry-after'))).toBeGreaterThan(0);
      expect(Number(res.headers.get('retry-after'))).toBeLessThanOrEqual(60);
      expect(verify).not.toHaveBeenCalled();
    } finally {
      verify.mockRestore();
    }
  });

  test('X-Forwarded-For is ignored unless TRUST_PROXY is set', async () => {
    const res = await passwordLogin(srv, app, 'ok-user', PASSWORD, {});
    expect(res.status).toBe(429);
    const spoofed = await fetch(`${srv.base}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`${app.client_id}:${app.client_secret}`).toString('base64')}`, 'x-forwarded-for': '198.51.100.9' },
      body: new URLSearchParams({ grant_type: 'password', username: 'ok-user', password: PASSWORD }).toString(),
    });
    expect(spoofed.status).toBe(429);
  });
});

describe(`per-IP throttle: what takes a point, and the window (${dbLabel})`, () => {
  const clock = testClock();
  let srv: TestServer;
  let app: ClientCreds;

  beforeAll(async () => {
    srv = await startTestServer({ clock: clock.now, config: { loginThrottle: { failuresPerWindow: 3, windowSeconds: 60 } } });
    await createTenant(srv, 'bank-a');
    app = await createClient(srv, { tenants: ['bank-a'], grant_types: ['password'] });
    await createUser(srv, 'bank-a', { username: 'walker', password: PASSWORD });
  });
  afterAll(async () => srv?.close());

  test('an unknown user, a wrong password and a name no user can have each take a point; the end of the window gives a fresh budget', async () => {
    expect((await passwordLogin(srv, app, 'nobody-of-this-name', 'whatever it is')).status).toBe(400);
    expect((await passwordLogin(srv, app, 'walker', 'not the passphrase')).status).toBe(400);
    expect((await passwordLogin(srv, app, '!!', 'whatever it is')).status).toBe(400); // no identifier at all
    const throttled = await passwordLogin(srv, app, 'walker', PASSWORD);
    expect(throttled.status).toBe(429);
    expect(Number(throttled.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(Number(throttled.headers.get('retry-after'))).toBeLessThanOrEqual(60);

    clock.advance(30); // the same window: still out of points, and the wait is shorter
    const later = await passwordLogin(srv, app, 'walker', PASSWORD);
    expect(later.status).toBe(429);
    expect(Number(later.headers.get('retry-after'))).toBeLessThanOrEqual(30);

    clock.advance(31); // past the window's end
    expect((await passwordLogin(srv, app, 'walker', PASSWORD)).status).toBe(200);
    // A success gives its point back: a fresh window's budget is still whole after any number of them.
    for (let i = 0; i < 4; i += 1) expect((await passwordLogin(srv, app, 'walker', PASSWORD)).status).toBe(200);
    for (let i = 0; i < 3; i += 1) expect((await passwordLogin(srv, app, 'walker', `wrong ${i}`)).status).toBe(400);
    expect((await passwordLogin(srv, app, 'walker', PASSWORD)).status).toBe(429);
  });

  test('a success gives its point back only to the window it was taken in: begun just before a window ends, it buys no failure in the next', async () => {
    clock.advance(61); // a fresh window
    expect((await passwordLogin(srv, app, 'walker', 'wrong before')).status).toBe(400); // opens it
    clock.advance(50);
    // The login's point is taken in this window, which ends while its password is evaluated; the
    // next window's first failure comes meanwhile.
    const meanwhile = async () => {
      clock.advance(15);
      expect((await passwordLogin(srv, app, 'walker', 'wrong meanwhile')).status).toBe(400);
    };
    expect((await loginWithMeanwhile(srv, meanwhile, () => passwordLogin(srv, app, 'walker', PASSWORD))).status).toBe(200);
    // The new window still counts that failure: two more fill its budget of three.
    for (let i = 0; i < 2; i += 1) expect((await passwordLogin(srv, app, 'walker', `wrong after ${i}`)).status).toBe(400);
    expect((await passwordLogin(srv, app, 'walker', PASSWORD)).status).toBe(429);
  });

  test('an attempt given back unevaluated goes back to its own window only: a later one keeps its count', async () => {
    clock.advance(61); // a fresh window
    // The login's point is taken, then it waits past the evaluation deadline (an overloaded bcrypt
    // queue), and its window ends meanwhile; the next window's first failure comes before its release.
    const meanwhile = async () => {
      clock.advance(61);
      expect((await passwordLogin(srv, app, 'walker', 'wrong meanwhile')).status).toBe(400);
    };
    expect((await loginWithMeanwhile(srv, meanwhile, () => passwordLogin(srv, app, 'walker', PASSWORD))).status).toBe(503);
    for (let i = 0; i < 2; i += 1) expect((await passwordLogin(srv, app, 'walker', `late ${i}`)).status).toBe(400);
    expect((await passwordLogin(srv, app, 'walker', PASSWORD)).status).toBe(429);
  });
});

describe(`a failed login's audit record names where it came from (${dbLabel})`, () => {
  let srv: TestServer;
  let app: ClientCreds;

  beforeAll(async () => {
    srv = await startTestServer();
    await createTenant(srv, 'bank-o');
    app = await createClient(srv, { tenants: ['bank-o'], grant_types: ['password'] });
    await createUser(srv, 'bank-o', { username: 'origin', password: PASSWORD });
  });
  afterAll(async () => srv?.close());

  test("the request's address, and seed 002's originating_ip when it is an IP address, on either path", async () => {
    const { knex } = srv.running.app.database;
    const details = async () =>
      ((await knex('audit_log').where({ type: 'user.login_failed', tenant_id: 'bank-o' }).orderBy('id')) as Array<{ details: string | Record<string, unknown> }>).map((r) =>
        typeof r.details === 'string' ? (JSON.parse(r.details) as Record<string, unknown>) : r.details,
      );
    const fail = (headers: Record<string, string>) =>
      form(srv, '/v1/oauth/token', { grant_type: 'password', username: 'origin', password: 'not the passphrase' }, { authorization: basic(app), di_fiid: 'bank-o', ...headers });
    for (const fast of [true, false]) {
      srv.running.app.fastPassword.enabled = fast;
      const served = srv.running.app.fastPassword.served;
      try {
        expect((await fail({ originating_ip: '203.0.113.7' })).status).toBe(400);
        expect((await fail({ originating_ip: ' 2001:db8::1 ' })).status).toBe(400);
        expect((await fail({ originating_ip: 'my phone; DROP TABLE' })).status).toBe(400); // not an address: not recorded
        expect((await fail({ originating_ip: `fe80::1%${'a'.repeat(100)}` })).status).toBe(400); // an address, but too long to record
        expect((await fail({})).status).toBe(400);
        expect(srv.running.app.fastPassword.served - served).toBe(fast ? 5 : 0);
      } finally {
        srv.running.app.fastPassword.enabled = true;
      }
    }
    // Audit records are written after the answer: wait for all ten.
    for (let i = 0; i < 100 && (await details()).length < 10; i += 1) await new Promise((r) => setTimeout(r, 20));
    const local = expect.stringMatching(/^(::ffff:)?127\.0\.0\.1$|^::1$/);
    const expected = [
      { reason: 'wrong_password', ip: local, originatingIp: '203.0.113.7' },
      { reason: 'wrong_password', ip: local, originatingIp: '2001:db8::1' },
      { reason: 'wrong_password', ip: local },
      { reason: 'wrong_password', ip: local },
      { reason: 'wrong_password', ip: local },
    ];
    expect(await details()).toEqual([...expected, ...expected]);
  });
});
