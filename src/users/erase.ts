import type { DbSource } from '../db/tx';

/**
 * What the database keeps of a user beside their row (whose factors and challenges go with it) and
 * their sessions and tokens, removed when an administrator deletes them (src/admin/routes.ts): the
 * replies stored for their idempotency-refs (a step-up's token among them; a user's refs are keyed
 * by their id and session, src/app.ts) and the `log` senders' outbox messages to them. In the
 * caller's transaction, with the deletion.
 */
export async function eraseUserTraces(source: DbSource, tenantId: string, userId: string): Promise<void> {
  const db = source.db();
  await db('idempotency_records').where({ tenant_id: tenantId }).andWhere('caller', 'like', `${userId}/%`).del();
  // An SMS names its user in the message; a push (which names none) is addressed to the user's id.
  await db('outbox')
    .where({ tenant_id: tenantId })
    .andWhere((q) => q.where({ recipient: userId }).orWhereRaw("payload->>'userId' = ?", [userId]))
    .del();
}
