import type { DbSource } from '../db/tx';
import { affected } from '../db/affected';
import type { IdentifierKind } from './identifiers';

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

export class DuplicateIdentifierError extends Error {
  constructor(readonly field: IdentifierKind) {
    super(`${field} is already registered`);
  }
}

export interface UserRepository {
  create(input: NewUser): Promise<User>;
  findById(tenantId: string, userId: string): Promise<User | undefined>;
  /** The one lookup without a tenant: by the globally unique platform id, for token subjects. */
  findByIdForToken(userId: string): Promise<User | undefined>;
  findByIdentifier(tenantId: string, kind: IdentifierKind, value: string): Promise<User | undefined>;
  /**
   * Reserves one login attempt before the password is evaluated: counted as a failure until
   * `loginSucceeded` resets it. Returns false (without evaluating anything) when the user is
   * locked, temporarily locked, or already has `threshold` attempts counted — so concurrent
   * guesses can never exceed the threshold. An expired temporary lock starts a fresh count.
   */
  reserveLoginAttempt(tenantId: string, userId: string, threshold: number): Promise<{ reserved: boolean; failures: number }>;
  /** After a wrong password that reached the threshold: lock for period × 2^(locks in a row). */
  lockAfterFailures(tenantId: string, userId: string, periodSeconds: number): Promise<Date | undefined>;
  loginSucceeded(tenantId: string, userId: string): Promise<void>;
  delete(tenantId: string, userId: string): Promise<void>;
  /** Search by identifier prefix (email, mobile, username), ordered by id, keyset-paged. */
  search(tenantId: string, opts: { q?: string; limit: number; after?: string }): Promise<User[]>;
  setStatus(tenantId: string, userId: string, status: UserStatus): Promise<User | undefined>;
  setMfaRequired(tenantId: string, userId: string, required: boolean): Promise<void>;
}

const UNIQUE_INDEX_FIELD: Record<string, IdentifierKind> = {
  users_tenant_email_key: 'email',
  users_tenant_mobile_key: 'mobile',
  users_tenant_username_key: 'username',
};

export function createUserRepository(source: DbSource): UserRepository {
  const knex = () => source.db();
  return {
    async create(input) {
      try {
        const [row] = await knex()<UserRow>('users')
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
        return toUser(row as UserRow);
      } catch (err) {
        const e = err as { code?: string; constraint?: string; message?: string };
        if (e.code === '23505') {
          const key = e.constraint ?? Object.keys(UNIQUE_INDEX_FIELD).find((k) => e.message?.includes(k)) ?? '';
          throw new DuplicateIdentifierError(UNIQUE_INDEX_FIELD[key] ?? 'username');
        }
        throw err;
      }
    },
    async findById(tenantId, userId) {
      if (!/^[0-9a-f-]{36}$/i.test(userId)) return undefined;
      const row = await knex()<UserRow>('users').where({ tenant_id: tenantId, id: userId }).first();
      return row ? toUser(row) : undefined;
    },
    async findByIdForToken(userId) {
      if (!/^[0-9a-f-]{36}$/i.test(userId)) return undefined;
      const row = await knex()<UserRow>('users').where({ id: userId }).first();
      return row ? toUser(row) : undefined;
    },
    async findByIdentifier(tenantId, kind, value) {
      const row = await knex()<UserRow>('users').where({ tenant_id: tenantId, [kind]: value }).first();
      return row ? toUser(row) : undefined;
    },
    async reserveLoginAttempt(tenantId, userId, threshold) {
      const rows = (await knex().raw(
        `UPDATE users SET
           failed_login_count = CASE WHEN locked_until IS NOT NULL AND locked_until <= now() THEN 1 ELSE failed_login_count + 1 END,
           locked_until = CASE WHEN locked_until IS NOT NULL AND locked_until <= now() THEN NULL ELSE locked_until END
         WHERE tenant_id = ? AND id = ? AND status = 'active'
           AND ((locked_until IS NOT NULL AND locked_until <= now())
                OR (locked_until IS NULL AND failed_login_count < ?))
         RETURNING failed_login_count`,
        [tenantId, userId, threshold],
      )) as { rows: Array<{ failed_login_count: number }> };
      const row = rows.rows[0];
      return row ? { reserved: true, failures: row.failed_login_count } : { reserved: false, failures: threshold };
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
    async loginSucceeded(tenantId, userId) {
      await knex()('users').where({ tenant_id: tenantId, id: userId }).update({ failed_login_count: 0, lockout_count: 0 });
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
        .update({ status, ...(status === 'active' ? { failed_login_count: 0, locked_until: null } : {}), updated_at: knex().fn.now() as unknown as Date })
        .returning('*');
      return row ? toUser(row as UserRow) : undefined;
    },
    async setMfaRequired(tenantId, userId, required) {
      await knex()('users').where({ tenant_id: tenantId, id: userId }).update({ mfa_required: required });
    },
    async delete(tenantId, userId) {
      affected(await knex()('users').where({ tenant_id: tenantId, id: userId }).del());
    },
  };
}
