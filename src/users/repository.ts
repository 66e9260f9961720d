import type { Knex } from 'knex';
import type { DbSource } from '../db/tx';
import { affected } from '../db/affected';
import { pairsOf, type StatementPairs } from '../db/pairing';
import { statementRunner, type PreparedStatement } from '../db/prepared';
import { END_LOGIN, loginEndValues, type LoginEnd } from './login-end';
import type { IdentifierKind } from './identifiers';
import { isUuid } from '../db/uuid';

export type UserRole = 'root' | 'authorised';
export type UserStatus = 'active' | 'locked';

export interface UserProfile {
  firstName?: string;
  lastName?: string;
  nationality?: string;
}

export interface User {
  id: string;
  tenantId: string;
  email: string | null;
  mobile: string | null;
  username: string | null;
  passwordHash: string;
  role: UserRole;
  group: string | null;
  profile: UserProfile;
  acceptedTermsAt: Date | null;
  termsVersion: string | null;
  status: UserStatus;
  lockedUntil: Date | null;
  mfaRequired: boolean;
  createdAt: Date;
  updatedAt: Date;
  /** Bumped each time all the user's sessions are ended: a login stores its session only if it has not moved since it began. */
  sessionsEpoch: number;
}

interface UserRow {
  id: string;
  tenant_id: string;
  email: string | null;
  mobile: string | null;
  username: string | null;
  password_hash: string;
  role: UserRole;
  group_name: string | null;
  profile: UserProfile | string;
  accepted_terms_at: Date | null;
  terms_version: string | null;
  status: UserStatus;
  locked_until: Date | null;
  mfa_required: boolean;
  created_at: Date;
  updated_at: Date;
  sessions_epoch?: number;
}

function toUser(r: UserRow): User {
  return {
    id: r.id,
    tenantId: r.tenant_id,
    email: r.email,
    mobile: r.mobile,
    username: r.username,
    passwordHash: r.password_hash,
    role: r.role,
    group: r.group_name,
    profile: typeof r.profile === 'string' ? (JSON.parse(r.profile) as UserProfile) : r.profile,
    acceptedTermsAt: r.accepted_terms_at ? new Date(r.accepted_terms_at) : null,
    termsVersion: r.terms_version,
    status: r.status,
    lockedUntil: r.locked_until ? new Date(r.locked_until) : null,
    mfaRequired: r.mfa_required,
    createdAt: new Date(r.created_at),
    updatedAt: new Date(r.updated_at),
    sessionsEpoch: Number(r.sessions_epoch ?? 0),
  };
}

export interface NewUser {
  id: string;
  tenantId: string;
  email?: string;
  mobile?: string;
  username?: string;
  passwordHash: string;
  role: UserRole;
  group?: string;
  profile: UserProfile;
  acceptedTermsAt: Date | null;
  termsVersion?: string;
}

/** An edit that would leave the user with no identifier (email, mobile or username). */
export class NoIdentifierLeftError extends Error {
  constructor() {
    super('a user needs one of email, mobile or username');
  }
}

/** What an admin may change of a user (null removes an optional value). */
export interface UserChanges {
  email?: string | null;
  mobile?: string | null;
  username?: string | null;
  role?: UserRole;
  group?: string | null;
  profile?: UserProfile;
  mfaRequired?: boolean;
  /** A new password's hash (an administrator's reset: UserService.hashPassword). */
  passwordHash?: string;
}

export class DuplicateIdentifierError extends Error {
  constructor(readonly field: IdentifierKind) {
    super(`${field} is already registered`);
  }
}

/**
 * What `beginLogin` found: the address over its budget, a reserved attempt, or no user reserved —
 * with the id of the user who exists but is inactive, locked or at the threshold (audit only).
 */
export type LoginStart =
  | { throttledForMs: number; user?: undefined }
  | { throttledForMs?: undefined; user: User; failures: number; failureEpoch: number; windowEnd: number }
  | { throttledForMs?: undefined; user?: undefined; failures?: undefined; failureEpoch?: undefined; knownUserId?: string; windowEnd: number };

export interface UserRepository {
  create(input: NewUser): Promise<User>;
  findById(tenantId: string, userId: string): Promise<User | undefined>;
  /** The one lookup without a tenant: by the globally unique platform id, for token subjects. */
  findByIdForToken(userId: string): Promise<User | undefined>;
  /**
   * A login's first statement, one round trip: takes a point of the address's throttle and, when
   * the address is within its budget, finds the user by identifier and reserves one login attempt
   * before the password is evaluated: counted as a failure until the login is closed, with its
   * session or apart (src/users/login-end.ts). No user is reserved (nothing evaluated) when the user is unknown,
   * not active, locked, temporarily locked, or already has `threshold` attempts counted — so
   * concurrent guesses can never exceed the threshold. An expired temporary lock starts a fresh
   * count, and so does a count at the threshold without a lock whose last attempt is
   * `staleAfterSeconds` old (an attempt that was never closed).
   */
  beginLogin(input: {
    tenantId: string;
    /** Undefined for a login that names no possible user: only the point is taken. */
    identifier: { kind: IdentifierKind; value: string } | undefined;
    threshold: number;
    /** How long a count at the threshold without a lock stands (the lockout period, with a floor: service.ts). */
    staleAfterSeconds: number;
    /** The address's counter: its key, its budget, its window, and the time now (epoch ms). */
    throttle: { key: string; limit: number; windowMs: number; now: number };
    /**
     * Other logins wait for bcrypt before this one anyway: on PostgreSQL its statement may wait to
     * go in the round trip of another login's session (src/db/pairing.ts), until sendWaitingStarts.
     */
    wait?: boolean;
  }): Promise<LoginStart>;
  /**
   * Login starts waiting for a round trip to share (beginLogin's `wait`), sent on their own at
   * once: all of them (no login is left waiting for bcrypt, so none would carry them in time), or
   * the longest-waiting one (a login ended without a session to carry it).
   */
  sendWaitingStarts(which: 'all' | 'one'): void;
  /** How many login starts wait for a round trip to share (0 where starts never wait). */
  waitingStarts(): number;
  /** A login closed apart from its session: when the session could not be stored (src/users/login-end.ts). */
  endLogin(end: LoginEnd): Promise<void>;
  /**
   * The user's password hash replaced by `next` only if it is still `current` (a rehash at a new
   * cost never overwrites a hash changed meanwhile). True when replaced.
   */
  replacePasswordHash(tenantId: string, userId: string, current: string, next: string): Promise<boolean>;
  /**
   * An attempt given back unevaluated (its evaluation did not start in time): the address's point,
   * to the window it was taken in (`windowEnd`, beginLogin's) only, and, when one was reserved, the
   * user's attempt, only while their count has not been started afresh since (`failureEpoch`,
   * beginLogin's): after a reset the count holds later attempts only. One each, never below zero;
   * every other failure stays counted.
   */
  releaseLogin(release: { tenantId: string; userId?: string; failureEpoch?: number; key: string; windowEnd: number }): Promise<void>;
  /** After a wrong password that reached the threshold: lock for period × 2^(locks in a row). */
  lockAfterFailures(tenantId: string, userId: string, periodSeconds: number): Promise<Date | undefined>;
  /** True when the user was there and is now deleted (their factors and challenges with them). */
  delete(tenantId: string, userId: string): Promise<boolean>;
  /**
   * Applies `changes` to the user, their row locked from the read of `before` to the write (in a
   * savepoint of the caller's transaction, if any); undefined when the user is not found.
   * DuplicateIdentifierError when an identifier is another user's in the tenant,
   * NoIdentifierLeftError when none would be left.
   */
  update(tenantId: string, userId: string, changes: UserChanges): Promise<{ before: User; after: User } | undefined>;
  /** Search by identifier prefix (email, mobile, username), ordered by id, keyset-paged. */
  search(tenantId: string, opts: { q?: string; limit: number; after?: string }): Promise<User[]>;
  setStatus(tenantId: string, userId: string, status: UserStatus): Promise<User | undefined>;
  /**
   * Before all the user's sessions are ended, in the same transaction: a login that began before
   * then stores no session (its statement waits for this row, then finds the count moved). False
   * when the user is gone.
   */
  endSessions(tenantId: string, userId: string): Promise<boolean>;
  setMfaRequired(tenantId: string, userId: string, required: boolean): Promise<void>;
  /**
   * The user's status ('active', 'locked'), or undefined when the user is gone, their row
   * share-locked until the caller's transaction ends: a lock or an end of all their sessions (both
   * update the row) waits for that transaction, and then sees what it stored; one that committed
   * first, or a deletion, is seen here.
   */
  statusLocked(tenantId: string, userId: string): Promise<string | undefined>;
}

interface LoginCounters {
  throttle_points: number;
  throttle_expire: string | number;
  failed_login_count: number;
  failure_epoch?: number | string | null; // bigint: a string from node-postgres
  known_id?: string | null;
}

/** The columns of UserRow, named: a prepared statement's result must not change when a column is added. */
const USER_COLUMNS = [
  'id', 'tenant_id', 'email', 'mobile', 'username', 'password_hash', 'role', 'group_name', 'profile', 'accepted_terms_at',
  'terms_version', 'status', 'locked_until', 'mfa_required', 'created_at', 'updated_at', 'failed_login_count', 'sessions_epoch',
];

/**
 * Takes a point of an address's login throttle as rate-limiter-flexible's store does: a new window
 * once the last one ended, client clock in epoch ms. $1 key, $2 limit (only echoed here: a
 * prepared statement uses every parameter), $3 now, $4 the window's end.
 */
const TAKE_POINT_CTE = `ip AS (
  INSERT INTO rate_limits AS r (key, points, expire) VALUES ($1, 1, $4::bigint)
  ON CONFLICT (key) DO UPDATE SET
    points = CASE WHEN r.expire <= $3::bigint THEN 1 ELSE r.points + 1 END,
    expire = CASE WHEN r.expire <= $3::bigint THEN excluded.expire ELSE r.expire END
  RETURNING points, expire
)`;
const TAKE_POINT: PreparedStatement = {
  name: 'portcullis_login_point_v1',
  text: `WITH ${TAKE_POINT_CTE} SELECT points AS throttle_points, expire AS throttle_expire, $2::int AS throttle_limit FROM ip`,
};

/**
 * beginLogin's statement, one per identifier column (each uses its own unique index): `ip` takes
 * the point, `u` reserves the attempt only while the address is within its budget. Both run, in
 * one snapshot, whatever the outcome; `ip` first (u's condition reads it), so the address's row
 * is locked before the user's. `k` names the user who exists but was not reserved (for the audit
 * log), so every failed login costs this one statement and the same bcrypt work. $1–$4 as
 * TAKE_POINT, $5 tenant, $6 identifier, $7 lockout threshold, $8 the time now, $9 that time less
 * staleAfterSeconds.
 *
 * A count starts afresh at 1 when the user's lock has ended, or when it stands at the threshold
 * without a lock and its last attempt is staleAfterSeconds old: an attempt reserved and never
 * closed (the process died mid-login, or the database was away for both its session and its
 * closing) must not keep the user out for good. No attempt is still being evaluated by then (a
 * password is evaluated only within a minute of its reservation, service.ts), so concurrent
 * guesses still never exceed the threshold. A count started afresh moves failed_login_epoch (as a
 * success and an unlock do): an attempt reserved before it gives nothing back (releaseLogin).
 */
const FRESH_COUNT = `((locked_until IS NOT NULL AND locked_until <= now())
                      OR (locked_until IS NULL AND failed_login_count >= $7::int AND login_attempted_at <= $9::timestamptz))`;
const BEGIN_LOGIN = Object.fromEntries(
  (['email', 'mobile', 'username'] as const).map((kind): [IdentifierKind, PreparedStatement] => [
    kind,
    {
      name: `portcullis_begin_login_${kind}_v4`,
      text: `WITH ${TAKE_POINT_CTE}, u AS (
               UPDATE users SET
                 failed_login_count = CASE WHEN ${FRESH_COUNT} THEN 1 ELSE failed_login_count + 1 END,
                 failed_login_epoch = CASE WHEN ${FRESH_COUNT} THEN failed_login_epoch + 1 ELSE failed_login_epoch END,
                 locked_until = CASE WHEN ${FRESH_COUNT} THEN NULL ELSE locked_until END,
                 login_attempted_at = $8::timestamptz
               WHERE tenant_id = $5 AND ${kind} = $6 AND status = 'active'
                 AND (${FRESH_COUNT} OR (locked_until IS NULL AND failed_login_count < $7::int))
                 AND (SELECT points FROM ip) <= $2::int
               RETURNING ${USER_COLUMNS.join(', ')}, failed_login_epoch
             ), k AS (
               SELECT id FROM users WHERE tenant_id = $5 AND ${kind} = $6
             )
             SELECT ip.points AS throttle_points, ip.expire AS throttle_expire, k.id AS known_id, u.failed_login_epoch AS failure_epoch,
                    ${USER_COLUMNS.map((c) => `u.${c}`).join(', ')}
             FROM ip LEFT JOIN u ON true LEFT JOIN k ON true`,
    },
  ]),
) as Record<IdentifierKind, PreparedStatement>;

/**
 * releaseLogin's statement: the address's point given back (only to the window it was taken in,
 * whose end is $2: a later window never counted it), then the user's reserved attempt (when $4
 * names one, and only while their count is the one it was reserved in: failed_login_epoch $5), the
 * address's row locked first as everywhere.
 */
const RELEASE_LOGIN: PreparedStatement = {
  name: 'portcullis_release_login_v3',
  text: `WITH login_ip AS (
           UPDATE rate_limits SET points = points - 1 WHERE key = $1 AND expire = $2::bigint AND points > 0 RETURNING 1
         ), login_user AS (
           UPDATE users SET failed_login_count = failed_login_count - 1
           WHERE tenant_id = $3 AND id = $4::uuid AND failed_login_epoch = $5::bigint AND failed_login_count > 0
             AND (SELECT count(*) FROM login_ip) >= 0
           RETURNING 1
         )
         SELECT count(*)::int AS released FROM login_user`,
};

const UNIQUE_INDEX_FIELD: Record<string, IdentifierKind> = {
  users_tenant_email_key: 'email',
  users_tenant_mobile_key: 'mobile',
  users_tenant_username_key: 'username',
};

/** A unique violation of an identifier's index as the identifier it names; any other error as it is. */
function asDuplicateIdentifier(err: unknown): unknown {
  const e = err as { code?: string; constraint?: string; message?: string };
  if (e.code !== '23505') return err;
  const key = e.constraint ?? Object.keys(UNIQUE_INDEX_FIELD).find((k) => e.message?.includes(k)) ?? '';
  return new DuplicateIdentifierError(UNIQUE_INDEX_FIELD[key] ?? 'username');
}

export function createUserRepository(source: DbSource): UserRepository {
  const knex = () => source.db();
  /** The pool's statement pairs, once a login has used them. */
  let known: StatementPairs | undefined;
  const pairsNow = () => {
    const pairs = pairsOf(knex());
    if (pairs) known = pairs;
    return pairs;
  };
  return {
    async create(input) {
      // Inside a request's transaction (an idempotency-ref's, an admin change's), in a savepoint: a
      // duplicate then undoes this insert alone, and the transaction can still record the refusal.
      const db = knex();
      const insert = (k: Knex) =>
        k<UserRow>('users')
          .insert({
            id: input.id,
            tenant_id: input.tenantId,
            email: input.email ?? null,
            mobile: input.mobile ?? null,
            username: input.username ?? null,
            password_hash: input.passwordHash,
            role: input.role,
            group_name: input.group ?? null,
            profile: JSON.stringify(input.profile) as unknown as UserProfile,
            accepted_terms_at: input.acceptedTermsAt,
            terms_version: input.termsVersion ?? null,
          })
          .returning('*');
      try {
        const [row] = db.isTransaction ? await db.transaction((sp) => insert(sp)) : await insert(db);
        return toUser(row as UserRow);
      } catch (err) {
        throw asDuplicateIdentifier(err);
      }
    },
    async findById(tenantId, userId) {
      if (!isUuid(userId)) return undefined;
      const row = await knex()<UserRow>('users').where({ tenant_id: tenantId, id: userId }).first();
      return row ? toUser(row) : undefined;
    },
    async findByIdForToken(userId) {
      if (!isUuid(userId)) return undefined;
      const row = await knex()<UserRow>('users').where({ id: userId }).first();
      return row ? toUser(row) : undefined;
    },
    async beginLogin({ tenantId, identifier, threshold, staleAfterSeconds, throttle, wait }) {
      const { now } = throttle;
      const point = [throttle.key, throttle.limit, now, now + throttle.windowMs];
      const attempt = [new Date(now), new Date(now - staleAfterSeconds * 1000)];
      const [statement, values] = identifier
        ? [BEGIN_LOGIN[identifier.kind], [...point, tenantId, identifier.value, threshold, ...attempt]]
        : [TAKE_POINT, point];
      const pairs = wait ? pairsNow() : undefined;
      const [row] = pairs
        ? await pairs.start<UserRow & LoginCounters>(statement, values, true)
        : await statementRunner(knex())<UserRow & LoginCounters>(statement, values);
      if (!row) throw new Error('beginLogin: no row');
      if (row.throttle_points > throttle.limit) return { throttledForMs: Math.max(0, Number(row.throttle_expire) - now) };
      const windowEnd = Number(row.throttle_expire);
      if (row.id) return { user: toUser(row), failures: row.failed_login_count, failureEpoch: Number(row.failure_epoch), windowEnd };
      return row.known_id ? { knownUserId: row.known_id, windowEnd } : { windowEnd };
    },
    sendWaitingStarts(which) {
      // The pairs a start waits in, whatever the caller's context (a transaction's has none).
      if (which === 'all') known?.flush();
      else known?.flushOne();
    },
    waitingStarts() {
      return pairsNow()?.waiting ?? 0;
    },
    async endLogin(end) {
      await statementRunner(knex())(END_LOGIN, loginEndValues(end));
    },
    async replacePasswordHash(tenantId, userId, current, next) {
      // updated_at stays: nothing a reader of the user sees has changed.
      const n = await knex()('users').where({ tenant_id: tenantId, id: userId, password_hash: current }).update({ password_hash: next });
      return affected(n) === 1;
    },
    async releaseLogin({ tenantId, userId, failureEpoch, key, windowEnd }) {
      await statementRunner(knex())(RELEASE_LOGIN, [key, windowEnd, tenantId, userId ?? null, failureEpoch ?? null]);
    },
    async lockAfterFailures(tenantId, userId, periodSeconds) {
      const rows = (await knex().raw(
        `UPDATE users SET
           locked_until = now() + make_interval(secs => ? * power(2, least(lockout_count, 6))),
           lockout_count = lockout_count + 1
         WHERE tenant_id = ? AND id = ? AND locked_until IS NULL
         RETURNING locked_until`,
        [periodSeconds, tenantId, userId],
      )) as { rows: Array<{ locked_until: Date }> };
      const row = rows.rows[0];
      return row ? new Date(row.locked_until) : undefined;
    },
    async search(tenantId, { q, limit, after }) {
      const query = knex()<UserRow>('users').where({ tenant_id: tenantId }).orderBy('id').limit(limit);
      if (after) query.where('id', '>', after);
      if (q) {
        const like = `${q.toLowerCase().replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
        query.where((w) => w.whereLike('email', like).orWhereLike('username', like).orWhereLike('mobile', like));
      }
      return (await query).map(toUser);
    },
    async setStatus(tenantId, userId, status) {
      const [row] = await knex()<UserRow>('users')
        .where({ tenant_id: tenantId, id: userId })
        // Reactivation ends the run of lockouts too: the next lock is the policy's period, not a
        // doubling of the last. Its count starts afresh: an attempt reserved before gives nothing back.
        .update({
          status,
          ...(status === 'active' ? { failed_login_count: 0, failed_login_epoch: knex().raw('failed_login_epoch + 1'), locked_until: null, lockout_count: 0 } : {}),
          updated_at: knex().fn.now() as unknown as Date,
        })
        .returning('*');
      return row ? toUser(row as UserRow) : undefined;
    },
    async endSessions(tenantId, userId) {
      return affected(await knex()('users').where({ tenant_id: tenantId, id: userId }).increment('sessions_epoch', 1)) > 0;
    },
    async statusLocked(tenantId, userId) {
      const row = (await knex()('users').where({ tenant_id: tenantId, id: userId }).forShare().first('status')) as { status: string } | undefined;
      return row?.status;
    },
    async setMfaRequired(tenantId, userId, required) {
      await knex()('users').where({ tenant_id: tenantId, id: userId }).update({ mfa_required: required });
    },
    async delete(tenantId, userId) {
      if (!isUuid(userId)) return false;
      return affected(await knex()('users').where({ tenant_id: tenantId, id: userId }).del()) > 0;
    },
    async update(tenantId, userId, changes) {
      if (!isUuid(userId)) return undefined;
      const columns: Partial<Record<keyof UserRow, unknown>> = {};
      if (changes.email !== undefined) columns.email = changes.email;
      if (changes.mobile !== undefined) columns.mobile = changes.mobile;
      if (changes.username !== undefined) columns.username = changes.username;
      if (changes.role !== undefined) columns.role = changes.role;
      if (changes.group !== undefined) columns.group_name = changes.group;
      if (changes.profile !== undefined) columns.profile = JSON.stringify(changes.profile);
      if (changes.mfaRequired !== undefined) columns.mfa_required = changes.mfaRequired;
      if (changes.passwordHash !== undefined) columns.password_hash = changes.passwordHash;
      try {
        return await knex().transaction(async (trx) => {
          const row = (await trx<UserRow>('users').where({ tenant_id: tenantId, id: userId }).forNoKeyUpdate().first()) as UserRow | undefined;
          if (!row) return undefined;
          const before = toUser(row);
          const next = { email: before.email, mobile: before.mobile, username: before.username, ...pick(changes, ['email', 'mobile', 'username']) };
          if (!next.email && !next.mobile && !next.username) throw new NoIdentifierLeftError();
          if (Object.keys(columns).length === 0) return { before, after: before };
          const [updated] = await trx<UserRow>('users')
            .where({ tenant_id: tenantId, id: userId })
            .update({ ...columns, updated_at: trx.fn.now() as unknown as Date } as Partial<UserRow>)
            .returning('*');
          return { before, after: toUser(updated as UserRow) };
        });
      } catch (err) {
        throw asDuplicateIdentifier(err);
      }
    },
  };
}

/** The identifier fields `changes` sets (to a value or to null), and only those. */
function pick(changes: UserChanges, keys: Array<'email' | 'mobile' | 'username'>): Partial<Record<'email' | 'mobile' | 'username', string | null>> {
  return Object.fromEntries(keys.filter((k) => changes[k] !== undefined).map((k) => [k, changes[k]]));
}
