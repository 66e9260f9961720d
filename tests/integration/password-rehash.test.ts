import bcrypt from 'bcrypt';
import { startTestServer, type TestServer } from '../helpers/server';
import { createClient, createTenant, createUser, passwordLogin, type ClientCreds } from '../helpers/flows';
import { dbLabel } from '../helpers/env';
import { createUserRepository } from '../../src/users/repository';
import { createPasswordHasher } from '../../src/users/passwords';
import { fixedDb } from '../../src/db/tx';

// After BCRYPT_COST changes, the dummy verification of unknown users runs at the new cost while a
// stored hash keeps its own: known and unknown user names would answer in different times. A
// right password at another cost is therefore hashed again at BCRYPT_COST (PASSWORD_REHASH).
const PASSWORD = 'a passphrase from before the change';

describe(`a password hashed at another bcrypt cost is hashed again at BCRYPT_COST on login (${dbLabel})`, () => {
  let srv: TestServer | undefined;
  afterEach(async () => srv?.stop());
  afterAll(async () => srv?.store.cleanup());

  const storedHash = async (userId: string) => ((await srv!.running.app.database.knex('users').where({ id: userId }).first()) as { password_hash: string }).password_hash;
  const rounds = (stored: string) => bcrypt.getRounds(stored.slice(3));

  test('a right password moves to the new cost once; a wrong one changes nothing; PASSWORD_REHASH=false keeps the old cost', async () => {
    srv = await startTestServer({ config: { bcryptCost: 5 } });
    const store = srv.store;
    await createTenant(srv, 'rehash-bank');
    const app: ClientCreds = await createClient(srv, { tenants: ['rehash-bank'], grant_types: ['password'] });
    const user = await createUser(srv, 'rehash-bank', { username: 'carol', password: PASSWORD });
    const before = await storedHash(user.id);
    expect(rounds(before)).toBe(5);
    await srv.stop();

    srv = await startTestServer({ store, config: { bcryptCost: 4 } });
    expect((await passwordLogin(srv, app, 'carol', 'not the passphrase at all')).status).toBe(400);
    expect(await storedHash(user.id)).toBe(before);
    expect((await passwordLogin(srv, app, 'carol', PASSWORD)).status).toBe(200);
    const after = await storedHash(user.id);
    expect(after).not.toBe(before);
    expect(rounds(after)).toBe(4);
    expect(after.startsWith('v1$')).toBe(true);
    // The new hash is the same password, and a login at the cost it has leaves it alone.
    expect((await passwordLogin(srv, app, 'carol', PASSWORD)).status).toBe(200);
    expect(await storedHash(user.id)).toBe(after);
    await srv.stop();

    srv = await startTestServer({ store, config: { bcryptCost: 5, passwordRehash: false } });
    expect((await passwordLogin(srv, app, 'carol', PASSWORD)).status).toBe(200);
    expect(await storedHash(user.id)).toBe(after);
  });

  test('the replacement only takes the hash it read: one changed meanwhile stays', async () => {
    srv = await startTestServer();
    await createTenant(srv, 'race-bank');
    const user = await createUser(srv, 'race-bank', { username: 'dave', password: PASSWORD });
    const users = createUserRepository(fixedDb(srv.running.app.database.knex));
    const current = await storedHash(user.id);
    expect(await users.replacePasswordHash('race-bank', user.id, 'v1$a hash read before a change', 'v1$next')).toBe(false);
    expect(await storedHash(user.id)).toBe(current);
    // Tenant isolation: the right hash under another tenant's id replaces nothing either.
    expect(await users.replacePasswordHash('another-bank', user.id, current, 'v1$next')).toBe(false);
    expect(await users.replacePasswordHash('race-bank', user.id, current, 'v1$next')).toBe(true);
    expect(await storedHash(user.id)).toBe('v1$next');
  });

  test('needsRehash: a v1 bcrypt hash at another cost, and nothing else', async () => {
    const key = Buffer.alloc(32, 7);
    const at4 = createPasswordHasher(key, 4);
    const at5 = createPasswordHasher(key, 5);
    const hash4 = await at4.hash(PASSWORD);
    expect(at4.needsRehash(hash4)).toBe(false);
    expect(at5.needsRehash(hash4)).toBe(true);
    expect(at5.needsRehash('v1$not a bcrypt hash')).toBe(false);
    expect(at5.needsRehash(hash4.slice(3))).toBe(false); // not ours (no v1$): never verified, never replaced
  });
});
