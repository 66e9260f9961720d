import type { JsonWebKey } from 'node:crypto';
import type { DbSource } from '../db/tx';
import { affected } from '../db/affected';
import { isUuid } from '../db/uuid';

export type FactorType = 'OTP' | 'PUSH';
export type FactorChannel = 'SMS' | 'AUTHY' | 'BIOMETRIC';
export type FactorStatus = 'PENDING_VERIFICATION' | 'ACTIVE';

export interface Factor {
  id: string;
  tenantId: string;
  userId: string;
  type: FactorType;
  channel: FactorChannel;
  status: FactorStatus;
  publicJwk: JsonWebKey | null;
  deviceName: string | null;
  createdAt: Date;
  activatedAt: Date | null;
}

export type ChallengePurpose = 'enrolment' | 'stepup';
export type ChallengeStatus = 'PENDING' | 'APPROVED' | 'DENIED' | 'CONSUMED' | 'CANCELLED';

export interface Challenge {
  id: string;
  tenantId: string;
  userId: string;
  factorId: string | null;
  purpose: ChallengePurpose;
  channel: FactorChannel;
  sessionId: string | null;
  codeHash: string | null;
  nonce: string | null;
  authorizationDetails: unknown;
  bindingHash: string | null;
  status: ChallengeStatus;
  createdAt: Date;
  expiresAt: Date;
  answeredAt: Date | null;
  consumedAt: Date | null;
  result: Record<string, unknown> | null;
  clientId: string | null;
  scope: string | null;
  opener: string | null;
  completesLogin: boolean;
}

type Row = Record<string, unknown>;
const json = <T>(v: unknown): T => (typeof v === 'string' ? (JSON.parse(v) as T) : (v as T));
const date = (v: unknown) => (v ? new Date(v as string) : null);

function toFactor(r: Row): Factor {
  return {
    id: r.id as string,
    tenantId: r.tenant_id as string,
    userId: r.user_id as string,
    type: r.type as FactorType,
    channel: r.channel as FactorChannel,
    status: r.status as FactorStatus,
    publicJwk: r.public_jwk ? json<JsonWebKey>(r.public_jwk) : null,
    deviceName: (r.device_name as string) ?? null,
    createdAt: new Date(r.created_at as string),
    activatedAt: date(r.activated_at),
  };
}

function toChallenge(r: Row): Challenge {
  return {
    id: r.id as string,
    tenantId: r.tenant_id as string,
    userId: r.user_id as string,
    factorId: (r.factor_id as string) ?? null,
    purpose: r.purpose as ChallengePurpose,
    channel: r.channel as FactorChannel,
    sessionId: (r.session_id as string) ?? null,
    codeHash: (r.code_hash as string) ?? null,
    nonce: (r.nonce as string) ?? null,
    authorizationDetails: r.authorization_details ? json(r.authorization_details) : null,
    bindingHash: (r.binding_hash as string) ?? null,
    status: r.status as ChallengeStatus,
    createdAt: new Date(r.created_at as string),
    expiresAt: new Date(r.expires_at as string),
    answeredAt: date(r.answered_at),
    consumedAt: date(r.consumed_at),
    result: r.result ? json<Record<string, unknown>>(r.result) : null,
    clientId: (r.client_id as string) ?? null,
    scope: (r.scope as string) ?? null,
    opener: (r.opener as string) ?? null,
    completesLogin: r.completes_login === true,
  };
}

export interface NewChallenge {
  id: string;
  tenantId: string;
  userId: string;
  factorId?: string;
  purpose: ChallengePurpose;
  channel: FactorChannel;
  sessionId?: string;
  codeHash?: string;
  nonce?: string;
  authorizationDetails?: unknown;
  bindingHash?: string;
  createdAt: Date;
  expiresAt: Date;
  clientId?: string;
  scope?: string;
  opener?: string;
  completesLogin?: boolean;
}

export interface FactorRepository {
  list(tenantId: string, userId: string): Promise<Factor[]>;
  find(tenantId: string, userId: string, channel: FactorChannel): Promise<Factor | undefined>;
  findById(tenantId: string, factorId: string): Promise<Factor | undefined>;
  /**
   * Creates the user's factor of this channel, or resets it to pending with a new key (re-enrolment).
   * The factor's open challenges (a step-up push to the device it had, say) are cancelled: returned,
   * so that an enrolment whose message cannot be delivered can open them again with `reopen`.
   */
  upsertPending(f: {
    id: string;
    tenantId: string;
    userId: string;
    type: FactorType;
    channel: FactorChannel;
    publicJwk?: JsonWebKey;
    deviceName?: string;
    now: Date;
  }): Promise<{ factor: Factor; cancelled: Array<{ id: string; purpose: ChallengePurpose }> }>;
  activate(tenantId: string, factorId: string, now: Date): Promise<boolean>;
  /**
   * Undoes an `upsertPending` whose message could not be delivered: the factor as it was before
   * (`before`), or none when there was none — provided it is still what that upsert wrote
   * (`written`): another enrolment that upserted it since is left alone. True when it was undone.
   */
  undoPending(tenantId: string, written: Factor, before: Factor | undefined): Promise<boolean>;
  /**
   * Deletes a challenge whose message could not be delivered, unless it was answered meanwhile
   * (then the message did arrive): true when it was deleted. A newer request may have cancelled it.
   */
  discardChallenge(tenantId: string, challengeId: string): Promise<boolean>;
  /**
   * Opens again challenges `cancelPending` closed for a new one that could not be delivered: those
   * not yet expired, and only while no other of the kind is open (under cancelPending's lock).
   */
  reopen(tenantId: string, userId: string, purpose: ChallengePurpose, channel: FactorChannel, challengeIds: string[], now: Date): Promise<void>;
  /**
   * Serialises enrolments of one factor slot until the transaction ends, so that each reads the
   * factor as the one before it left it (an undo restores that, not a stale read).
   */
  lockSlot(tenantId: string, userId: string, channel: FactorChannel): Promise<void>;
  /**
   * Cancels the user's open challenges of the channel (SMS challenges carry no factor: all of them,
   * whatever their purpose) and deletes its factor, so no code or device can complete anything.
   * True when a factor was deleted. Like removeAll, it locks the user's row first (lockUser).
   */
  remove(tenantId: string, userId: string, channel: FactorChannel): Promise<boolean>;
  /**
   * The user's row locked until the transaction ends (FOR NO KEY UPDATE, which a foreign-key check
   * does not wait for), and their mobile number (undefined when the user is gone). The one rule of
   * a user's factors and challenges: whatever writes them (an enrolment, a code's or a push's send
   * and its undo, a device's answer, a verification through its UPDATE of the failure count, an
   * unlink, a reset, an admin's edit of the mobile) takes this lock first, so they run one at a
   * time per user and none can wait for another's factor or challenge while holding its own.
   */
  lockUser(tenantId: string, userId: string): Promise<{ mobile: string | null } | undefined>;
  /** How many factors were deleted; undefined when the user is gone (their row, locked first, not found). */
  removeAll(tenantId: string, userId: string): Promise<number | undefined>;

  createChallenge(c: NewChallenge): Promise<Challenge>;
  findChallenge(tenantId: string, challengeId: string): Promise<Challenge | undefined>;
  /** The challenge id alone (device answers carry nothing else); the caller checks the rest. */
  findChallengeById(challengeId: string): Promise<Challenge | undefined>;
  /**
   * The newest challenge of `owner` (the session and token that asked for it) of this purpose and
   * channel, whatever its state: a right code for a challenge just consumed by a concurrent
   * request, or cancelled by another session's newer one, is then recognised as such, not as a guess.
   */
  latest(tenantId: string, userId: string, purpose: ChallengePurpose, channel: FactorChannel, owner: { sessionId: string | null; opener: string | null }): Promise<Challenge | undefined>;
  /** Cancels the user's open challenges of this purpose and channel (returns their ids); call it in the transaction that inserts the next one. */
  cancelPending(tenantId: string, userId: string, purpose: ChallengePurpose, channel: FactorChannel): Promise<string[]>;
  /** One atomic UPDATE: PENDING and unexpired → `to`. True for exactly one caller. */
  transition(tenantId: string, challengeId: string, to: ChallengeStatus, now: Date, result?: Record<string, unknown>): Promise<boolean>;
  /** An approved challenge is collected once: APPROVED → CONSUMED by one atomic UPDATE, before it expires. */
  collect(tenantId: string, challengeId: string, now: Date): Promise<boolean>;

  /** Reserves one verification attempt (as UserRepository.beginLogin reserves a login attempt): false when blocked. */
  /**
   * A count used up with no block set (the attempt that reached it died, or the policy's maximum
   * was lowered) ages out like a block: `blockSeconds` after the last attempt, counting restarts.
   */
  reserveAttempt(
    tenantId: string,
    userId: string,
    maxFailures: number,
    now: Date,
    blockSeconds: number,
  ): Promise<{ reserved: true; failures: number; epoch: number } | { reserved: false; failures: number; epoch?: undefined }>;
  /**
   * A reserved attempt given back: one off the count, never below zero, only while the count has
   * not been started afresh since it was reserved (`epoch`, reserveAttempt's): after a reset the
   * count holds later attempts only, and taking one off would erase a real failure.
   */
  releaseAttempt(tenantId: string, userId: string, epoch: number): Promise<void>;
  block(tenantId: string, userId: string, until: Date): Promise<boolean>;
  /**
   * Whether the user's codes are refused now (reserveAttempt would reserve nothing): a block, or a
   * used-up count not yet aged out.
   */
  codesRefused(tenantId: string, userId: string, maxFailures: number, now: Date, blockSeconds: number): Promise<boolean>;
  /** The count started afresh (its epoch moved) and any block lifted. */
  resetFailures(tenantId: string, userId: string): Promise<void>;
}

export function createFactorRepository(source: DbSource): FactorRepository {
  const db = () => source.db();
  /** A lock held until the caller's transaction ends. */
  const xactLock = async (key: string) => {
    await db().raw('select pg_advisory_xact_lock(hashtext(?))', [key]);
  };
  /** Taken by whoever opens or reopens the user's challenges of one purpose and channel. */
  const challengesLock = (tenantId: string, userId: string, purpose: ChallengePurpose, channel: FactorChannel) =>
    xactLock(`challenges:${tenantId}:${userId}:${purpose}:${channel}`);
  const lockUser = async (tenantId: string, userId: string) =>
    (await db()('users').where({ tenant_id: tenantId, id: userId }).forNoKeyUpdate().first('mobile')) as { mobile: string | null } | undefined;
  return {
    async list(tenantId, userId) {
      return (await db()('factors').where({ tenant_id: tenantId, user_id: userId }).orderBy('created_at')).map(toFactor);
    },
    async find(tenantId, userId, channel) {
      const r = await db()('factors').where({ tenant_id: tenantId, user_id: userId, channel }).first();
      return r ? toFactor(r) : undefined;
    },
    async findById(tenantId, factorId) {
      const r = await db()('factors').where({ tenant_id: tenantId, id: factorId }).first();
      return r ? toFactor(r) : undefined;
    },
    async upsertPending(f) {
      const [r] = await db()('factors')
        .insert({
          id: f.id,
          tenant_id: f.tenantId,
          user_id: f.userId,
          type: f.type,
          channel: f.channel,
          status: 'PENDING_VERIFICATION',
          public_jwk: f.publicJwk ? JSON.stringify(f.publicJwk) : null,
          device_name: f.deviceName ?? null,
          created_at: f.now,
        })
        .onConflict(['tenant_id', 'user_id', 'channel'])
        .merge(['status', 'public_jwk', 'device_name', 'created_at'])
        .returning('*');
      const factor = toFactor(r as Row);
      // Open challenges of the factor as it was (another key, perhaps) are void.
      const cancelled = (await db()('challenges')
        .where({ tenant_id: f.tenantId, factor_id: factor.id, status: 'PENDING' })
        .update({ status: 'CANCELLED' })
        .returning(['id', 'purpose'])) as Array<{ id: string; purpose: ChallengePurpose }>;
      return { factor, cancelled };
    },
    async activate(tenantId, factorId, now) {
      return affected(await db()('factors').where({ tenant_id: tenantId, id: factorId }).update({ status: 'ACTIVE', activated_at: now })) === 1;
    },
    async undoPending(tenantId, written, before) {
      const pending = db()('factors').where({ tenant_id: tenantId, id: written.id, status: 'PENDING_VERIFICATION', created_at: written.createdAt });
      if (written.publicJwk) pending.whereRaw('public_jwk = ?::jsonb', [JSON.stringify(written.publicJwk)]);
      else pending.whereNull('public_jwk');
      if (!before) return affected(await pending.del()) === 1;
      return (
        affected(
          await pending.update({
            status: before.status,
            public_jwk: before.publicJwk ? JSON.stringify(before.publicJwk) : null,
            device_name: before.deviceName,
            created_at: before.createdAt,
          }),
        ) === 1
      );
    },
    async discardChallenge(tenantId, challengeId) {
      return (
        affected(
          await db()('challenges').where({ tenant_id: tenantId, id: challengeId }).whereIn('status', ['PENDING', 'CANCELLED']).whereNull('answered_at').del(),
        ) === 1
      );
    },
    async lockSlot(tenantId, userId, channel) {
      await xactLock(`factors:${tenantId}:${userId}:${channel}`);
    },
    async reopen(tenantId, userId, purpose, channel, challengeIds, now) {
      if (challengeIds.length === 0) return;
      await challengesLock(tenantId, userId, purpose, channel);
      await db()('challenges')
        .where({ tenant_id: tenantId, status: 'CANCELLED' })
        .whereIn('id', challengeIds)
        .andWhere('expires_at', '>', now)
        .whereNull('answered_at')
        // One open challenge of a kind at a time: not when another request has opened one since.
        .whereNotExists((q) =>
          q
            .select(db().raw('1'))
            .from('challenges as open')
            .whereRaw('open.tenant_id = challenges.tenant_id and open.user_id = challenges.user_id and open.purpose = challenges.purpose and open.channel = challenges.channel')
            .andWhere('open.status', 'PENDING'),
        )
        .update({ status: 'PENDING' });
    },
    async remove(tenantId, userId, channel) {
      await lockUser(tenantId, userId);
      await db()('challenges').where({ tenant_id: tenantId, user_id: userId, channel, status: 'PENDING' }).update({ status: 'CANCELLED' });
      return affected(await db()('factors').where({ tenant_id: tenantId, user_id: userId, channel }).del()) === 1;
    },
    lockUser,
    async removeAll(tenantId, userId) {
      if (!(await lockUser(tenantId, userId))) return undefined;
      await db()('challenges').where({ tenant_id: tenantId, user_id: userId, status: 'PENDING' }).update({ status: 'CANCELLED' });
      return affected(await db()('factors').where({ tenant_id: tenantId, user_id: userId }).del());
    },

    async createChallenge(c) {
      const [r] = await db()('challenges')
        .insert({
          id: c.id,
          tenant_id: c.tenantId,
          user_id: c.userId,
          factor_id: c.factorId ?? null,
          purpose: c.purpose,
          channel: c.channel,
          session_id: c.sessionId ?? null,
          code_hash: c.codeHash ?? null,
          nonce: c.nonce ?? null,
          authorization_details: c.authorizationDetails === undefined ? null : JSON.stringify(c.authorizationDetails),
          binding_hash: c.bindingHash ?? null,
          status: 'PENDING',
          created_at: c.createdAt,
          expires_at: c.expiresAt,
          client_id: c.clientId ?? null,
          scope: c.scope ?? null,
          opener: c.opener ?? null,
          completes_login: c.completesLogin ?? false,
        })
        .returning('*');
      return toChallenge(r as Row);
    },
    async findChallenge(tenantId, challengeId) {
      if (!isUuid(challengeId)) return undefined;
      const r = await db()('challenges').where({ tenant_id: tenantId, id: challengeId }).first();
      return r ? toChallenge(r) : undefined;
    },
    async findChallengeById(challengeId) {
      if (!isUuid(challengeId)) return undefined;
      const r = await db()('challenges').where({ id: challengeId }).first();
      return r ? toChallenge(r) : undefined;
    },
    async latest(tenantId, userId, purpose, channel, owner) {
      const q = db()('challenges').where({ tenant_id: tenantId, user_id: userId, purpose, channel });
      if (owner.sessionId === null) q.whereNull('session_id');
      else q.where({ session_id: owner.sessionId });
      if (owner.opener === null) q.whereNull('opener');
      else q.where({ opener: owner.opener });
      const r = await q.orderBy('created_at', 'desc').first();
      return r ? toChallenge(r) : undefined;
    },
    async cancelPending(tenantId, userId, purpose, channel) {
      // Held until the caller's transaction (which inserts the next challenge) ends: two requests
      // at once would each cancel what was there and insert their own, leaving two open.
      await challengesLock(tenantId, userId, purpose, channel);
      const rows = (await db()('challenges')
        .where({ tenant_id: tenantId, user_id: userId, purpose, channel, status: 'PENDING' })
        .update({ status: 'CANCELLED' })
        .returning(['id'])) as Array<{ id: string }>;
      return rows.map((r) => r.id);
    },
    async transition(tenantId, challengeId, to, now, result) {
      const changed = affected(
        await db()('challenges')
          .where({ tenant_id: tenantId, id: challengeId, status: 'PENDING' })
          .andWhere('expires_at', '>', now)
          .update({
            status: to,
            answered_at: now,
            ...(to === 'CONSUMED' ? { consumed_at: now } : {}),
            ...(result ? { result: JSON.stringify(result) } : {}),
          }),
      );
      return changed === 1;
    },
    async collect(tenantId, challengeId, now) {
      const changed = affected(
        await db()('challenges')
          .where({ tenant_id: tenantId, id: challengeId, status: 'APPROVED' })
          .whereNull('consumed_at')
          .andWhere('expires_at', '>', now)
          .update({ status: 'CONSUMED', consumed_at: now }),
      );
      return changed === 1;
    },

    async reserveAttempt(tenantId, userId, maxFailures, now, blockSeconds) {
      const agedOut = new Date(now.getTime() - blockSeconds * 1000);
      // "fresh": a block that has ended, or a used-up count whose last attempt is a block period old.
      const fresh = `((factor_blocked_until IS NOT NULL AND factor_blocked_until <= ?)
                      OR (factor_blocked_until IS NULL AND factor_failures >= ? AND factor_attempted_at <= ?))`;
      const freshValues = [now, maxFailures, agedOut];
      const res = (await db().raw(
        `UPDATE users SET
           factor_failures = CASE WHEN ${fresh} THEN 1 ELSE factor_failures + 1 END,
           factor_failure_epoch = CASE WHEN ${fresh} THEN factor_failure_epoch + 1 ELSE factor_failure_epoch END,
           factor_blocked_until = CASE WHEN ${fresh} THEN NULL ELSE factor_blocked_until END,
           factor_attempted_at = ?
         WHERE tenant_id = ? AND id = ?
           AND (${fresh} OR (factor_blocked_until IS NULL AND factor_failures < ?))
         RETURNING factor_failures, factor_failure_epoch`,
        [...freshValues, ...freshValues, ...freshValues, now, tenantId, userId, ...freshValues, maxFailures],
      )) as { rows: Array<{ factor_failures: number; factor_failure_epoch: number | string }> };
      const row = res.rows[0];
      return row ? { reserved: true, failures: row.factor_failures, epoch: Number(row.factor_failure_epoch) } : { reserved: false, failures: maxFailures };
    },
    async releaseAttempt(tenantId, userId, epoch) {
      await db()('users')
        .where({ tenant_id: tenantId, id: userId, factor_failure_epoch: epoch })
        .andWhere('factor_failures', '>', 0)
        .decrement('factor_failures', 1);
    },
    async block(tenantId, userId, until) {
      return affected(await db()('users').where({ tenant_id: tenantId, id: userId }).whereNull('factor_blocked_until').update({ factor_blocked_until: until })) === 1;
    },
    async codesRefused(tenantId, userId, maxFailures, now, blockSeconds) {
      const row = (await db()('users')
        .where({ tenant_id: tenantId, id: userId })
        .first('factor_failures', 'factor_blocked_until', 'factor_attempted_at')) as
        | { factor_failures: number; factor_blocked_until: Date | string | null; factor_attempted_at: Date | string | null }
        | undefined;
      if (!row) return false;
      // reserveAttempt's conditions, read: a block still running, or a count at the maximum
      // without one whose last attempt is not yet a block period old.
      if (row.factor_blocked_until !== null) return new Date(row.factor_blocked_until) > now;
      if (row.factor_failures < maxFailures || row.factor_attempted_at === null) return false;
      return new Date(row.factor_attempted_at).getTime() + blockSeconds * 1000 > now.getTime();
    },
    async resetFailures(tenantId, userId) {
      await db()('users')
        .where({ tenant_id: tenantId, id: userId })
        .update({ factor_failures: 0, factor_failure_epoch: db().raw('factor_failure_epoch + 1'), factor_blocked_until: null });
    },
  };
}
