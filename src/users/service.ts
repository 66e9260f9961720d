import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { AppError, type InvalidField } from '../errors';
import type { Tenant } from '../tenants/repository';
import { classifyLogin, IDENTIFIER_REQUIRED, normalizeIdentifier, type IdentifierKind } from './identifiers';
import { EvaluationTooLateError, passwordProblem, type PasswordHasher } from './passwords';
import { DuplicateIdentifierError, type NewUser, type User, type UserRepository, type UserRole } from './repository';
import type { LoginEnd } from './login-end';
import type { LoginThrottle } from './throttle';

export const registrationSchema = z
  .object({
    email: z.string().max(254).optional(),
    mobile: z.string().max(32).optional(),
    username: z.string().max(64).optional(),
    password: z.string().max(4096),
    acceptedTerms: z.literal(true, { message: 'must be true: the user has to accept the terms' }),
    termsVersion: z.string().max(64).optional(),
    profile: z
      .object({
        firstName: z.string().min(1).max(100).optional(),
        lastName: z.string().min(1).max(100).optional(),
        nationality: z.string().regex(/^[A-Z]{2}$/, 'ISO 3166-1 alpha-2 country code').optional(),
      })
      .strict()
      .optional(),
    group: z.string().min(1).max(100).optional(),
  })
  .strict();
export type RegistrationInput = z.input<typeof registrationSchema> & { role?: UserRole };

/** The address has used its budget of login attempts: 429 with Retry-After, nothing evaluated. */
export class LoginThrottledError extends Error {
  constructor(readonly retryAfterSeconds: number) {
    super('too many failed attempts');
  }
}

/**
 * The login waited too long for its password to be evaluated (the server is overloaded): nothing
 * was evaluated, the attempt was given back; 503 with Retry-After.
 */
export class LoginOverloadedError extends Error {
  constructor(readonly retryAfterSeconds: number) {
    super('the login was not evaluated in time');
  }
}

/**
 * A password is evaluated only if its bcrypt computation starts within this long of the attempt's
 * reservation; later, nothing is evaluated and the attempt is given back (LoginOverloadedError).
 * So every evaluation ends long before ABANDONED_ATTEMPT_MIN_SECONDS, and an attempt still
 * counted then was abandoned, never one still being evaluated.
 */
export const EVALUATION_DEADLINE_MS = 60_000;
/**
 * A count left at the lockout threshold without a lock ages out one lockout period after its last
 * attempt, but never sooner than this (repository.ts, beginLogin): well past any evaluation's end.
 */
export const ABANDONED_ATTEMPT_MIN_SECONDS = 900;
const OVERLOADED_RETRY_AFTER_SECONDS = 5;

/** The one answer to every failed login: it never says whether the user exists or is locked. */
export class LoginFailedError extends Error {
  constructor(readonly reason: 'unknown_user' | 'wrong_password' | 'locked' | 'invalid_identifier') {
    super('invalid credentials');
  }
}

/** A registration validated and its password hashed, not yet stored (UserService.prepareRegistration). */
export interface PreparedRegistration {
  readonly user: Omit<NewUser, 'id' | 'acceptedTermsAt'>;
}

export interface UserService {
  /**
   * Validates a registration and hashes its password, without touching the database: a caller
   * that must store the user inside a transaction (an idempotency-ref's, an admin change's with its
   * audit record) prepares first, so no transaction is open, holding a connection, while bcrypt
   * works (about 250 ms at cost 12; the embedded database has one connection).
   */
  prepareRegistration(tenant: Tenant, input: unknown, opts?: { role?: UserRole }): Promise<PreparedRegistration>;
  /** Stores a prepared registration: 409 IDENTIFIER_TAKEN when an identifier is already registered in its tenant. */
  storeRegistration(prepared: PreparedRegistration): Promise<User>;
  /** prepareRegistration, then storeRegistration. */
  register(tenant: Tenant, input: unknown, opts?: { role?: UserRole }): Promise<User>;
  /**
   * A login from address `from.ip`: the user, or LoginThrottledError (the address's budget is used up;
   * no password evaluated), or LoginFailedError. The user's attempt still counts as a failure
   * (and the address's point as taken) until `end` is written, with the login's session
   * (startUserSession's `login`) or, when that cannot be stored, by closeLogin.
   */
  authenticate(tenant: Tenant, login: string, password: string, from: LoginOrigin): Promise<{ user: User; end: LoginEnd }>;
  // (or LoginOverloadedError: the password's evaluation did not start in time; the attempt was given back)
  /** Closes a login whose session could not be stored: the password was right, so the attempt is no failure. */
  closeLogin(end: LoginEnd): Promise<void>;
  findActive(tenantId: string, userId: string): Promise<User | undefined>;
  /**
   * For refresh grants, which know only the token's subject: the user's own row decides the
   * tenant, so nothing can cross tenants through it.
   */
  findActiveForToken(userId: string): Promise<User | undefined>;
  /** Removes a just-registered user when the rest of registration failed (nothing half-written). */
  undoRegistration(tenantId: string, userId: string): Promise<void>;
  /**
   * A new password's hash, as a registration stores it (its policy checked by the caller with
   * passwordProblem). Before any transaction opens: bcrypt takes about 250 ms at cost 12.
   */
  hashPassword(password: string): Promise<string>;
}

/**
 * Where a login came from: the address it reached us from (the socket's, or the one a trusted proxy
 * appended), which its throttle counts, and the device's address its client named (seed 002's
 * `originating_ip`), which is only recorded: a client can name any.
 */
export interface LoginOrigin {
  ip: string;
  originatingIp?: string;
}

export interface UserEvents {
  loginFailed?(tenant: Tenant, userId: string | undefined, reason: LoginFailedError['reason'], from: LoginOrigin): void;
  lockedOut?(tenant: Tenant, userId: string, until: Date): void;
}

export function publicUser(u: User) {
  return {
    id: u.id,
    tenant: u.tenantId,
    email: u.email ?? undefined,
    mobile: u.mobile ?? undefined,
    username: u.username ?? undefined,
    role: u.role,
    group: u.group ?? undefined,
    profile: u.profile,
    status: u.status,
    acceptedTermsAt: u.acceptedTermsAt?.toISOString(),
    termsVersion: u.termsVersion ?? undefined,
    createdAt: u.createdAt.toISOString(),
  };
}

export function createUserService(deps: {
  users: UserRepository;
  hasher: PasswordHasher;
  throttle: LoginThrottle;
  events?: UserEvents;
  /**
   * A right password whose hash has a lower cost than BCRYPT_COST is hashed again at it
   * (PASSWORD_REHASH). Else, after the cost was raised, a known user's login would take as long
   * as the old cost and an unknown one's (the dummy verification) as long as the new: which user
   * names exist would show.
   */
  rehashOnLogin?: boolean;
  /** Where a failed rehash is reported: the login itself still succeeds. */
  warn?: (err: unknown, msg: string) => void;
}): UserService {
  const { users, hasher, throttle } = deps;
  const events = deps.events ?? {};
  // Starts waiting for a round trip to share (src/db/pairing.ts) go on their own when no login is
  // left waiting for bcrypt (all), or one when a hash that no session follows ends (one).
  hasher.onRelease((which) => users.sendWaitingStarts(which));

  const service: UserService = {
    async prepareRegistration(tenant, input, opts = {}) {
      const parsed = registrationSchema.safeParse(input);
      const invalid: InvalidField[] = parsed.success
        ? []
        : parsed.error.issues.map((i) => ({ fieldName: i.path.join('.') || 'body', error: i.message }));
      // Every field's problem in one answer: the checks below also run when the schema found
      // problems elsewhere, on each field it did not already name (a string, within its bounds).
      if (!input || typeof input !== 'object' || Array.isArray(input)) throw AppError.validation(invalid);
      const raw = input as Record<string, unknown>;
      const named = new Set(invalid.map((i) => i.fieldName));
      const field = (name: string) => (typeof raw[name] === 'string' && !named.has(name) ? (raw[name] as string) : undefined);
      const [rawEmail, rawMobile, rawUsername, rawPassword] = [field('email'), field('mobile'), field('username'), field('password')];
      const normal = (kind: IdentifierKind, value: string | undefined) => {
        if (value === undefined) return undefined;
        const n = normalizeIdentifier(kind, value);
        if ('error' in n) invalid.push({ fieldName: kind, error: n.error });
        return 'value' in n ? n.value : undefined;
      };
      const [email, mobile, username] = [normal('email', rawEmail), normal('mobile', rawMobile), normal('username', rawUsername)];
      if (raw.email === undefined && raw.mobile === undefined && raw.username === undefined) invalid.push({ ...IDENTIFIER_REQUIRED });
      const problem = rawPassword === undefined ? undefined : passwordProblem(rawPassword, tenant.policy.passwordMinLength);
      if (problem) invalid.push({ fieldName: 'password', error: problem });
      if (!parsed.success || invalid.length) throw AppError.validation(invalid);
      const v = parsed.data;

      return {
        user: {
          tenantId: tenant.id,
          email,
          mobile,
          username,
          passwordHash: await hasher.hash(v.password),
          role: opts.role ?? 'root',
          group: v.group,
          profile: v.profile ?? {},
          termsVersion: v.termsVersion,
        },
      };
    },

    async storeRegistration(prepared) {
      try {
        return await users.create({ ...prepared.user, id: randomUUID(), acceptedTermsAt: new Date() });
      } catch (err) {
        if (err instanceof DuplicateIdentifierError) {
          throw new AppError('IDENTIFIER_TAKEN', 409, `${err.field} is already registered`);
        }
        throw err;
      }
    },

    async register(tenant, input, opts = {}) {
      return service.storeRegistration(await service.prepareRegistration(tenant, input, opts));
    },

    async authenticate(tenant, login, password, from) {
      const id = classifyLogin(login);
      const throttleKey = throttle.key(from.ip);
      const reservedAt = throttle.now();
      const start = await users.beginLogin({
        tenantId: tenant.id,
        identifier: id,
        threshold: tenant.policy.lockoutThreshold,
        staleAfterSeconds: Math.max(tenant.policy.lockoutPeriodSeconds, ABANDONED_ATTEMPT_MIN_SECONDS),
        throttle: { key: throttleKey, limit: throttle.limit, windowMs: throttle.windowMs, now: reservedAt },
        // Logins wait for bcrypt: this one's statement may wait for another's round trip — if
        // fewer starts wait than computations run. Each running computation sends one waiting
        // start when it ends (its session carries it, or it ends without one), so a start waits
        // for at most one computation; past that it goes at once. A flood (from a throttled
        // address, say) cannot queue starts, nor hold other logins' behind it.
        wait: hasher.busy() && users.waitingStarts() < hasher.concurrency,
      });
      if (start.throttledForMs !== undefined) throw new LoginThrottledError(Math.max(1, Math.ceil(start.throttledForMs / 1000)));
      const { user, failures, failureEpoch, windowEnd } = start;
      // A login that ends without a session sends the longest-waiting start on its own: its
      // session's INSERT would have carried it (src/db/pairing.ts).
      const noSession = () => users.sendWaitingStarts('one');
      // Evaluated only in time (EVALUATION_DEADLINE_MS); else the attempt and the point go back.
      const late = () => throttle.now() > reservedAt + EVALUATION_DEADLINE_MS;
      const inTime = async <T>(evaluation: Promise<T>): Promise<T> => {
        try {
          return await evaluation;
        } catch (err) {
          if (!(err instanceof EvaluationTooLateError)) throw err;
          await users.releaseLogin({ tenantId: tenant.id, userId: user?.id, failureEpoch, key: throttleKey, windowEnd });
          throw new LoginOverloadedError(OVERLOADED_RETRY_AFTER_SECONDS);
        }
      };
      if (!user) {
        // Unknown, inactive or locked: the same statement, the same bcrypt work and the same
        // answer as a wrong password; only the audit log knows which.
        await inTime(hasher.dummyVerify(password, late)).finally(noSession);
        const reason = !id ? 'invalid_identifier' : start.knownUserId ? 'locked' : 'unknown_user';
        events.loginFailed?.(tenant, start.knownUserId, reason, from);
        throw new LoginFailedError(reason);
      }
      const right = await inTime(hasher.verify(password, user.passwordHash, late)).catch((err: unknown) => {
        noSession();
        throw err;
      });
      if (right) {
        const end = { tenantId: tenant.id, userId: user.id, key: throttleKey, now: throttle.now(), epoch: user.sessionsEpoch, windowEnd };
        if (deps.rehashOnLogin && hasher.needsRehash(user.passwordHash) && !hasher.busy()) {
          // Beside the answer, not before it: the login neither waits for it nor keeps its attempt
          // counted meanwhile. Once per user after a raise; with logins waiting for bcrypt it is
          // left to a later login, and a failure keeps the old hash, which still verifies. The
          // login runs outside any transaction, so the replacement is a statement of its own.
          const stored = user.passwordHash;
          void hasher
            .hash(password)
            .then((next) => users.replacePasswordHash(tenant.id, user.id, stored, next))
            .catch((err: unknown) => deps.warn?.(err, 'rehashing a password at the new BCRYPT_COST failed; kept the old hash'));
        }
        return { user, end };
      }
      noSession();
      events.loginFailed?.(tenant, user.id, 'wrong_password', from);
      if (failures >= tenant.policy.lockoutThreshold) {
        const until = await users.lockAfterFailures(tenant.id, user.id, tenant.policy.lockoutPeriodSeconds);
        if (until) events.lockedOut?.(tenant, user.id, until);
      }
      throw new LoginFailedError('wrong_password');
    },

    async closeLogin(end) {
      // No session of this login carried a waiting start: one goes on its own.
      users.sendWaitingStarts('one');
      await users.endLogin(end);
    },

    async findActive(tenantId, userId) {
      const user = await users.findById(tenantId, userId);
      return user?.status === 'active' ? user : undefined;
    },

    async findActiveForToken(userId) {
      const user = await users.findByIdForToken(userId);
      return user?.status === 'active' ? user : undefined;
    },

    async undoRegistration(tenantId, userId) {
      await users.delete(tenantId, userId);
    },

    hashPassword(password) {
      return hasher.hash(password);
    },
  };
  return service;
}
