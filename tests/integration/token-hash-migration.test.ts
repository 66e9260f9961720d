import { KnexAdapter, storedTokenId } from '../../src/oidc/adapter';
import type { Database } from '../../src/db/knex';
import { fixedDb } from '../../src/db/tx';
import { dbLabel } from '../helpers/env';
import { useTestDatabase } from '../helpers/database';
import { up, down } from '../../migrations/20261209090000_hash-token-ids';

describe(`the migration that keys tokens by hash (${dbLabel})`, () => {
  let db: Database;
  useTestDatabase({}, (opened) => (db = opened));

  test('tokens stored under their value are re-keyed as the adapter keys them, their value gone from the payload; sessions stay', async () => {
    const later = new Date(Date.now() + 60_000);
    // As a release before the hashing stored them: the token is the row's id and its payload's jti.
    const legacy = { refresh: 'Kq1legacyRefreshTokenValue-0123456789abcdef', access: 'Kq1legacyAccessTokenValue_0123456789abcdefg', cc: 'Kq1legacyClientCredentialsValue-0123456789' };
    await db.knex('oidc_payloads').insert([
      { type: 'RefreshToken', id: legacy.refresh, payload: JSON.stringify({ jti: legacy.refresh, kind: 'RefreshToken', grantId: 'legacy-g' }), grant_id: 'legacy-g', expires_at: later },
      { type: 'AccessToken', id: legacy.access, payload: JSON.stringify({ jti: legacy.access, kind: 'AccessToken', grantId: 'legacy-g' }), grant_id: 'legacy-g', expires_at: later },
      { type: 'ClientCredentials', id: legacy.cc, payload: JSON.stringify({ jti: legacy.cc, kind: 'ClientCredentials' }), expires_at: later },
      { type: 'Grant', id: 'legacy-g', payload: JSON.stringify({ jti: 'legacy-g', kind: 'Grant', accountId: 'a' }), account_id: 'a', expires_at: later },
    ]);
    await up(db.knex);

    const rows = (await db.knex('oidc_payloads').select('type', 'id', db.knex.raw('payload::text as payload'))) as Array<{ type: string; id: string; payload: string }>;
    for (const value of Object.values(legacy)) expect(JSON.stringify(rows)).not.toContain(value);
    expect(rows.find((r) => r.type === 'RefreshToken')?.id).toBe(storedTokenId(legacy.refresh));
    expect(await new KnexAdapter(fixedDb(db.knex), 'RefreshToken').find(legacy.refresh)).toMatchObject({ jti: legacy.refresh, grantId: 'legacy-g' });
    expect(await new KnexAdapter(fixedDb(db.knex), 'AccessToken').find(legacy.access)).toMatchObject({ jti: legacy.access });
    expect(await new KnexAdapter(fixedDb(db.knex), 'ClientCredentials').find(legacy.cc)).toMatchObject({ jti: legacy.cc });
    // The session keeps its id (not a secret: the session lists show it) and its payload.
    expect(await new KnexAdapter(fixedDb(db.knex), 'Grant').find('legacy-g')).toMatchObject({ jti: 'legacy-g', accountId: 'a' });

    // Going back cannot restore a token from its hash: the tokens go, the session stays.
    await down(db.knex);
    expect((await db.knex('oidc_payloads').select('type')).map((r: { type: string }) => r.type)).toEqual(['Grant']);
  });
});
