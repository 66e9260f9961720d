import type { Database } from '../../src/db/knex';
import { createTxContext } from '../../src/db/tx';
import { migrateLatest } from '../../src/db/migrate';
import { createIdempotencyRepository } from '../../src/idempotency/repository';
import { createSealer } from '../../src/crypto/secrets';
import { dbLabel } from '../helpers/env';
import { useTestDatabase } from '../helpers/database';

// The request-scoped transaction's savepoints and its steps after the end (src/db/tx.ts), on a real database.
describe(`transaction context: savepoints and what follows a transaction (${dbLabel})`, () => {
  let db: Database;

  useTestDatabase({ migrate: false }, (opened) => (db = opened));
  beforeAll(async () => {
    await db.knex.schema.createTable('tx_probe', (t) => {
      t.string('id').primary();
    });
  });
  const ids = async () => (await db.knex('tx_probe').select('id').orderBy('id')).map((r: { id: string }) => r.id);

  test('a failed savepoint undoes its own writes; the outer transaction goes on and commits', async () => {
    const tx = createTxContext(db.knex);
    await tx.transaction(async () => {
      await tx.db()('tx_probe').insert({ id: 'a1' });
      // A unique violation inside the savepoint: without it, the whole transaction would be aborted.
      await expect(tx.savepoint(async () => {
        await tx.db()('tx_probe').insert({ id: 'a2' });
        await tx.db()('tx_probe').insert({ id: 'a1' });
      })).rejects.toBeDefined();
      await tx.db()('tx_probe').insert({ id: 'a3' });
    });
    expect(await ids()).toEqual(['a1', 'a3']);
  });

  test('steps registered in a transaction or its savepoints run after it ends, committed or not; a failing one is reported, not thrown', async () => {
    const reported: unknown[] = [];
    const tx = createTxContext(db.knex, undefined, (err) => reported.push(err));
    const seen: string[] = [];
    const committed = await tx.transaction(async () => {
      await tx.db()('tx_probe').insert({ id: 'b1' });
      await tx.whenDone(() => { throw new Error('a failing step'); });
      await tx.savepoint(async () => {
        await tx.whenDone(async () => {
          // After the commit: visible from outside the transaction.
          seen.push(`after commit: ${(await db.knex('tx_probe').where({ id: 'b1' })).length}`);
        });
      });
      seen.push('inside');
      return 'result';
    });
    expect(committed).toBe('result'); // the failing step replaced nothing
    expect(seen).toEqual(['inside', 'after commit: 1']);
    expect(reported).toHaveLength(1);

    await expect(tx.transaction(async () => {
      await tx.whenDone(() => { seen.push('after rollback'); });
      throw new Error('rolled back');
    })).rejects.toThrow('rolled back');
    expect(seen).toContain('after rollback');

    // Outside any transaction, a step runs at once.
    await tx.whenDone(() => { seen.push('at once'); });
    expect(seen[seen.length - 1]).toBe('at once');
  });

  test('a step registered after its transaction has ended (a straggling branch) runs at once, never lost', async () => {
    const tx = createTxContext(db.knex);
    let late: Promise<void> | undefined;
    let ran = false;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    await tx.transaction(async () => {
      // Not awaited by the transaction: registers once the transaction is over.
      late = gate.then(() => tx.whenDone(() => { ran = true; }));
    });
    release();
    await late;
    expect(ran).toBe(true);
  });

  test('a transaction inside a transaction is a savepoint: its failure undoes its writes alone, as it would on its own', async () => {
    const tx = createTxContext(db.knex);
    await tx.transaction(async () => {
      await tx.db()('tx_probe').insert({ id: 'd1' });
      await expect(tx.transaction(async () => {
        await tx.db()('tx_probe').insert({ id: 'd2' });
        throw new Error('refused after a write');
      })).rejects.toThrow('refused after a write');
      await tx.db()('tx_probe').insert({ id: 'd3' });
    });
    expect((await ids()).filter((id) => id.startsWith('d'))).toEqual(['d1', 'd3']);
  });

  test('after-commit work runs once the outermost transaction has committed, outside it; its error is the transaction\'s', async () => {
    const tx = createTxContext(db.knex);
    const seen: string[] = [];
    await expect(tx.transaction(async () => {
      await tx.db()('tx_probe').insert({ id: 'e1' });
      await tx.transaction(async () => {
        await tx.afterCommit(async () => {
          seen.push(`in a transaction: ${tx.inTransaction}`);
          // Outside: its own statement sees the commit (and, on the embedded database's one
          // connection, is not left waiting for the transaction).
          seen.push(`committed: ${(await tx.db()('tx_probe').where({ id: 'e1' })).length}`);
          throw new Error('the other service said no');
        });
      });
      // Registered in a savepoint that rolls back: never runs.
      await tx.transaction(async () => {
        await tx.afterCommit(async () => { seen.push('from a rolled-back savepoint'); });
        throw new Error('undone');
      }).catch(() => undefined);
      seen.push('inside');
    })).rejects.toThrow('the other service said no');
    expect(seen).toEqual(['inside', 'in a transaction: false', 'committed: 1']);
    expect(await ids()).toContain('e1'); // the commit stands

    // A transaction that rolls back runs none of it; with none open, it runs at once.
    await expect(tx.transaction(async () => {
      await tx.afterCommit(async () => { seen.push('after a rollback'); });
      throw new Error('rolled back');
    })).rejects.toThrow('rolled back');
    await tx.afterCommit(async () => { seen.push('at once'); });
    expect(seen.slice(3)).toEqual(['at once']);
  });

  test("an idempotency record is settled only by its own claim: a late release never deletes a take-over's, nor a reply that is done", async () => {
    await migrateLatest(db.knex);
    const repo = createIdempotencyRepository({ db: () => db.knex }, createSealer(Buffer.alloc(32, 7)));
    const key = { tenantId: 't', caller: 'c', ref: 'r1' };
    const first = new Date('2026-12-06T00:00:00.000Z');
    const second = new Date('2026-12-06T00:06:00.000Z');
    expect(await repo.claim(key, 'h', first, 3600)).toBe(true);
    expect(await repo.takeOver(key, 'h', first, second, 3600)).toBe(true); // the first was abandoned
    await repo.release(key, first); // the first request's late release
    expect((await repo.find(key))?.lockedAt).toEqual(second);
    await repo.complete(key, 201, { ok: true }, { done: false });
    await repo.finish(key, first); // nor its finish
    expect((await repo.find(key))?.state).toBe('in_flight');
    await repo.finish(key, second);
    await repo.release(key, second);
    expect(await repo.find(key)).toMatchObject({ state: 'done', responseStatus: 201, responseBody: { ok: true } });
  });
});
