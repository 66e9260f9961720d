import bcrypt from 'bcrypt';
import { startTestServer, type TestServer } from '../helpers/server';
import { createClient, createTenant, createUser, passwordLogin, type ClientCreds } from '../helpers/flows';
import { dbLabel } from '../helpers/env';
import type { TestStore } from '../helpers/env';
import { createUserRepository } from '../../src/users/repository';
import { createPasswordHasher } from '../../src/users/passwords';
import { fixedDb } from '../../src/db/tx';

// After BCRYPT_COST is raised, the dummy verification of unknown users runs at the new cost while a
// stored hash keeps its own: known and unknown user names would answer in different times. A right
// password at a lower cost is therefore hashed again at BCRYPT_COST (PASSWORD_REHASH), never lower.
const PASSWORD = 'a passphrase from before the change';

describe(`a password hashed at a lower bcrypt cost is hashed again at BCRYPT_COST on login (${dbLabel})`, () => {
  let srv: TestServer | undefined;
  const stores = new Set<TestStore>();
  const start = async (opts: Parameters<typeof startTestServer>[0]) => {
    srv = await startTestServer(opts);
    stores.add(srv.store);
    return srv;
  };
  afterEach(async () => srv?.stop());
  afterAll(async () => {
    for (const store of stores) await store.cleanup();
  });

  const storedHash = async (userId: string) => ((await srv!.running.app.database.knex('users').where({ id: userId }).first()) as { password_hash: string }).password_hash;
  const rounds = (stored: string) => bcrypt.getRounds(stored.slice(3));
  /**
   * The rehash runs beside the login's answer: the hash once it differs from `before`, or after
   * `ms` (a rehash at these costs lands within a few milliseconds; 5 s where one is expected).
   */
  const settled = async (userId: string, before: string, ms = 300) => {
    for (let i = 0; i < ms / 50; i += 1) {
      const now = await storedHash(userId);
      if (now !== before) return now;
      await new Promise((r) => setTimeout(r, 50));
    }
    return storedHash(userId);
  };

  test('a right password moves up to the new cost once; a wrong one changes nothing; a lower cost or PASSWORD_REHASH=false changes nothing', async () => {
    await start({ config: { bcryptCost: 4 } });
    const store = srv!.store;
    await createTenant(srv!, 'rehash-bank');
    const app: ClientCreds = await createClient(srv!, { tenants: ['rehash-bank'], grant_types: ['password'] });
    const user = await createUser(srv!, 'rehash-bank', { username: 'carol', password: PASSWORD });
    const before = await storedHash(user.id);
    expect(rounds(before)).toBe(4);
    await srv!.stop();

    await start({ store, config: { bcryptCost: 5 } });
    expect((await passwordLogin(srv!, app, 'carol', 'not the passphrase at all')).status).toBe(400);
    expect(await settled(user.id, before)).toBe(before);
    expect((await passwordLogin(srv!, app, 'carol', PASSWORD)).status).toBe(200);
    const after = await settled(user.id, before, 5000);
    expect(after).not.toBe(before);
    expect(rounds(after)).toBe(5);
    expect(after.startsWith('v1$')).toBe(true);
    // The new hash is the same password, and a login at the cost it has leaves it alone.
    expect((await passwordLogin(srv!, app, 'carol', PASSWORD)).status).toBe(200);
    expect(await settled(user.id, after)).toBe(after);
    await srv!.stop();

    // Never down: a server at a lower cost (a rolling deploy, a mistaken setting) keeps the hash.
    await start({ store, config: { bcryptCost: 4 } });
    expect((await passwordLogin(srv!, app, 'carol', PASSWORD)).status).toBe(200);
    expect(await settled(user.id, after)).toBe(after);
    await srv!.stop();

    await start({ store, config: { bcryptCost: 6, passwordRehash: false } });
    expect((await passwordLogin(srv!, app, 'carol', PASSWORD)).status).toBe(200);
    expect(await settled(user.id, after)).toBe(after);
  });

  test('the replacement only takes the hash it read, in the user\'s own tenant', async () => {
    await start({});
    await createTenant(srv!, 'race-bank');
    const user = await createUser(srv!, 'race-bank', { username: 'dave', password: PASSWORD });
    const users = createUserRepository(fixedDb(srv!.running.app.database.knex));
    const current = await storedHash(user.id);
    expect(await users.replacePasswordHash('race-bank', user.id, 'v1$a hash read before a change', 'v1$next')).toBe(false);
    expect(await storedHash(user.id)).toBe(current);
    expect(await users.replacePasswordHash('another-bank', user.id, current, 'v1$next')).toBe(false);
    expect(await users.replacePasswordHash('race-bank', user.id, current, 'v1$next')).toBe(true);
    expect(await storedHash(user.id)).toBe('v1$next');
  });

  test('needsRehash: a v1 bcrypt hash at a lower cost, and nothing else; busy while bcrypt work waits its turn', async () => {
    const key = Buffer.alloc(32, 7);
    const at4 = createPasswordHasher(key, 4, 1);
    const at5 = createPasswordHasher(key, 5, 1);
    const hash4 = await at4.hash(PASSWORD);
    const hash5 = await at5.hash(PASSWORD);
    expect(at4.needsRehash(hash4)).toBe(false);
    expect(at5.needsRehash(hash4)).toBe(true);
    expect(at4.needsRehash(hash5)).toBe(false); // never down
    expect(at5.needsRehash('v1$not a bcrypt hash')).toBe(false);
    expect(at5.needsRehash(hash4.slice(3))).toBe(false); // not ours (no v1$): never verified, never replaced

    expect(at5.busy()).toBe(false);
    const first = at5.verify(PASSWORD, hash5);
    expect(at5.busy()).toBe(false); // one running, none waiting
    const second = at5.verify(PASSWORD, hash5);
    expect(at5.busy()).toBe(true);
    expect(await Promise.all([first, second])).toEqual([true, true]);
    expect(at5.busy()).toBe(false);
  });
});
