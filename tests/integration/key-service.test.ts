import { randomBytes } from 'node:crypto';
import type { Database } from '../../src/db/knex';
import { createSealer } from '../../src/crypto/secrets';
import { createKeyService } from '../../src/keys/service';
import { dbLabel } from '../helpers/env';
import { useTestDatabase } from '../helpers/database';

describe(`signing key lifecycle (${dbLabel})`, () => {
  let db: Database;
  let clock = Date.parse('2026-01-01T00:00:00Z');
  const sealer = createSealer(randomBytes(32));
  const keys = () =>
    createKeyService({ knex: db.knex, sealer, publishBeforeUseSeconds: 600, maxTokenLifetimeSeconds: 3600, now: () => new Date(clock) });

  useTestDatabase({}, (opened) => (db = opened));

  test('ensureKey is idempotent, also when called concurrently', async () => {
    await Promise.all([keys().ensureKey(), keys().ensureKey(), keys().ensureKey()]);
    await keys().ensureKey();
    expect(await keys().list()).toHaveLength(1);
  });

  test('publish → sign → retire → drop, driven by the clock', async () => {
    const first = (await keys().load()).signingKid;
    const next = await keys().rotate();

    let set = await keys().load();
    expect(set.signingKid).toBe(first); // published, not yet signing
    expect(set.jwks.keys.map((k) => k.kid)).toEqual([first, next.kid]);

    clock += 600_000; // publish delay over
    set = await keys().load();
    expect(set.signingKid).toBe(next.kid);
    expect(set.jwks.keys.map((k) => k.kid)).toEqual([next.kid, first]);

    clock += 3_600_000 + 1000; // every token the old key signed has expired
    set = await keys().load();
    expect(set.jwks.keys.map((k) => k.kid)).toEqual([next.kid]);
  });

  test('private keys are sealed at rest and need the right SECRETS_KEY', async () => {
    const rows = await db.knex('signing_keys').select('private_jwk_sealed', 'public_jwk');
    for (const r of rows) {
      expect(r.private_jwk_sealed).not.toContain('"d"');
      expect(JSON.stringify(r.public_jwk)).not.toContain('"d"');
    }
    const wrong = createKeyService({ knex: db.knex, sealer: createSealer(randomBytes(32)), publishBeforeUseSeconds: 0, maxTokenLifetimeSeconds: 60, now: () => new Date(clock) });
    await expect(wrong.load()).rejects.toThrow(/SECRETS_KEY/);
  });
});
