import type { PreparedStatement } from '../db/prepared';

/**
 * A login whose password was right, still to be closed: its user's failure count reset and its
 * address's throttle point given back (beginLogin counted the attempt as a failure). The
 * session's INSERT carries it (src/oidc/adapter.ts): one statement, one commit, so a successful
 * login costs no round trip of its own for it. A session that cannot be stored gets its login
 * closed apart (END_LOGIN, src/oidc/password-grant.ts): the password was right, and an attempt
 * counted at the lockout threshold without a lock would keep the user out.
 */
export interface LoginEnd {
  tenantId: string;
  userId: string;
  /** The address's throttle row (src/users/throttle.ts). */
  key: string;
  /** Epoch ms when the password was found right (the throttle's clock): a window over by then gets nothing back. */
  now: number;
  /**
   * The end (epoch ms) of the throttle window the login's point was taken in (beginLogin's): the
   * point goes back to that window only. A login that began in one window and ended in the next
   * gives nothing to the next, which never counted it: else logins begun just before a window
   * ends would each buy a failure more in the next, up to twice its budget.
   */
  windowEnd: number;
  /**
   * The user's sessions_epoch when the login began. Its session is stored only if the count has
   * not moved since: an administrator who locked the user or ended all their sessions meanwhile
   * ended this one too (the login then fails as a wrong password does).
   */
  epoch: number;
}

/** The user's sessions were all ended (or the user went) while the login was under way: no session was stored. */
export class LoginSupersededError extends Error {
  /**
   * @param closed whether the login's end was stored all the same (the session's statement ran its
   * CTEs and skipped only the rows), so that it must not be closed again apart: that would give the
   * address's point back twice.
   */
  constructor(readonly closed: boolean) {
    super("the user's sessions were ended while the login was under way");
  }
}

/** A login being closed: `written` once its end is stored (with its session, or apart). */
export interface LoginClosing {
  end: LoginEnd;
  written: boolean;
}

/**
 * The CTEs that close one login, its values bound from parameter `first` on (key, now, tenant,
 * user, epoch, windowEnd: loginEndValues): the address's point given back (never below zero, only
 * to the window it was taken in, while that runs), then the user's failure and lockout counts
 * reset (the failure count's epoch moved: an attempt reserved before gives nothing back). The
 * address's row is locked before the user's — `login_user` waits for `login_ip` through a one-time
 * filter, which PostgreSQL evaluates before it reads any row — as in beginLogin, so two logins of
 * one user from one address always lock in the same order and never deadlock. One login per
 * statement: updates joined to a list of logins, closing several at once, cost PostgreSQL 20-50 %
 * more CPU per login than these updates by key when logins contend for one address's row (eight
 * connections on one address: 840-1,070 µs against 685-710 µs per login), and more than the
 * separate statement they replace.
 */
export function loginEndCtes(first: number): string {
  const [key, now, tenant, user, epoch, windowEnd] = [first, first + 1, first + 2, first + 3, first + 4, first + 5].map((n) => `$${n}`);
  // `intact`: the user's sessions were not ended since the login began. Read from the row this
  // UPDATE locks: an administrator's change of it (endSessions) that commits first is
  // seen here, and one that comes after waits for this statement, then ends the session with the
  // others.
  return `login_ip AS (
      UPDATE rate_limits SET points = points - 1
      WHERE key = ${key} AND expire = ${windowEnd}::bigint AND expire > ${now}::bigint AND points > 0 RETURNING 1
    ), login_user AS (
      UPDATE users SET failed_login_count = 0, failed_login_epoch = failed_login_epoch + 1, lockout_count = 0
      WHERE tenant_id = ${tenant} AND id = ${user} AND (SELECT count(*) FROM login_ip) >= 0
      RETURNING sessions_epoch = ${epoch}::int AS intact
    )`;
}

/** Whether a login's session may stand: its user is there and their sessions were not ended since it began. */
export const LOGIN_INTACT = 'EXISTS (SELECT 1 FROM login_user WHERE intact)';

/**
 * One login closed by a statement of its own: after its session's INSERT in a transaction or on
 * the embedded database, or apart when its session could not be stored.
 */
export const END_LOGIN: PreparedStatement = {
  name: 'portcullis_end_login_v5',
  text: `WITH ${loginEndCtes(1)} SELECT ${LOGIN_INTACT} AS intact`,
};

export function loginEndValues(end: LoginEnd): unknown[] {
  return [end.key, end.now, end.tenantId, end.userId, end.epoch, end.windowEnd];
}
