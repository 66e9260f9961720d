import type { DbSource } from '../db/tx';
import { affected } from '../db/affected';
import { deleteInBatches } from '../db/sweep';
import type { Sealer } from '../crypto/secrets';

function openBody(sealer: Sealer, stored: unknown): unknown {
  const v = (typeof stored === 'string' ? JSON.parse(stored) : stored) as { sealed?: string } | null;
  return v?.sealed ? JSON.parse(sealer.open(v.sealed)) : null;
}

export interface IdempotencyRecord {
  requestHash: string;
  state: 'in_flight' | 'done';
  responseStatus: number | null;
  responseBody: unknown;
  lockedAt: Date;
  expiresAt: Date;
}

export interface IdempotencyKey {
  tenantId: string;
  caller: string;
  ref: string;
}

export interface IdempotencyRepository {
  /** Claims the key for this request; false when a record already exists. */
  claim(key: IdempotencyKey, requestHash: string, now: Date, ttlSeconds: number): Promise<boolean>;
  find(key: IdempotencyKey): Promise<IdempotencyRecord | undefined>;
  /** Takes over an expired record or an in-flight one abandoned since `staleBefore` (crashed process). */
  takeOver(key: IdempotencyKey, requestHash: string, observedLockedAt: Date, now: Date, ttlSeconds: number): Promise<boolean>;
  /**
   * Stores the reply. `done: false` keeps the record in flight (replays wait, 409) until `finish`:
   * for a request whose work goes on after its commit (a message sent, TxContext.afterCommit).
   */
  complete(key: IdempotencyKey, status: number, body: unknown, opts?: { done: boolean }): Promise<void>;
  /** The work after the commit succeeded: the stored reply is the request's. */
  finish(key: IdempotencyKey, lockedAt: Date): Promise<void>;
  /**
   * Frees the key of a request that failed: its own claim (`lockedAt`), while still in flight. A
   * reply stored as done is never deleted, nor another request's claim (one that took over).
   */
  release(key: IdempotencyKey, lockedAt: Date): Promise<void>;
  sweep(now: Date): Promise<number>;
}

/**
 * Stored replies can hold tokens (a step-up reply, a registration): they are sealed with
 * SECRETS_KEY at rest, like signing keys.
 */
export function createIdempotencyRepository(source: DbSource, sealer: Sealer): IdempotencyRepository {
  const table = () => source.db()('idempotency_records');
  const where = (k: IdempotencyKey) => ({ tenant_id: k.tenantId, caller: k.caller, ref: k.ref });
  return {
    async claim(key, requestHash, now, ttlSeconds) {
      const rows = (await table()
        .insert({ ...where(key), request_hash: requestHash, state: 'in_flight', locked_at: now, expires_at: new Date(now.getTime() + ttlSeconds * 1000) })
        .onConflict(['tenant_id', 'caller', 'ref'])
        .ignore()
        .returning(['ref'])) as unknown[];
      return rows.length === 1;
    },
    async find(key) {
      const r = await table().where(where(key)).first();
      if (!r) return undefined;
      return {
        requestHash: r.request_hash,
        state: r.state,
        responseStatus: r.response_status,
        responseBody: openBody(sealer, r.response_body),
        lockedAt: new Date(r.locked_at),
        expiresAt: new Date(r.expires_at),
      };
    },
    async takeOver(key, requestHash, observedLockedAt, now, ttlSeconds) {
      return (
        affected(
          await table()
            .where({ ...where(key), locked_at: observedLockedAt })
            .update({ request_hash: requestHash, state: 'in_flight', response_status: null, response_body: null, locked_at: now, expires_at: new Date(now.getTime() + ttlSeconds * 1000) }),
        ) === 1
      );
    },
    async complete(key, status, body, opts = { done: true }) {
      await table()
        .where(where(key))
        .update({
          state: opts.done ? 'done' : 'in_flight',
          response_status: status,
          response_body: body === undefined ? null : JSON.stringify({ sealed: sealer.seal(JSON.stringify(body)) }),
        });
    },
    async finish(key, lockedAt) {
      await table().where({ ...where(key), locked_at: lockedAt, state: 'in_flight' }).update({ state: 'done' });
    },
    async release(key, lockedAt) {
      await table().where({ ...where(key), locked_at: lockedAt, state: 'in_flight' }).del();
    },
    async sweep(now) {
      return deleteInBatches(source.db(), 'idempotency_records', 'expires_at < ?', [now]);
    },
  };
}
