import Router from '@koa/router';
import type { Context } from 'koa';
import type { z } from 'zod';
import { AppError } from '../errors';
import { generateSecret, hashSecret } from '../crypto/secrets';
import type { Services } from '../app';
import type { ProviderHolder } from '../oidc/holder';
import { revokeAllOfAccount, revokeGrantOfAccount } from '../oidc/adapter';
import { sessionsOf } from '../sessions/routes';
import { untilNextSecond } from '../oidc/not-before';
import { ACR_CA, startUserSession } from '../oidc/user-tokens';
import { grantedScopes } from '../oidc/resource';
import { publicUser } from '../users/service';
import { IDENTIFIER_KINDS, IDENTIFIER_REQUIRED, normalizeIdentifier } from '../users/identifiers';
import { eraseUserTraces } from '../users/erase';
import { passwordProblem } from '../users/passwords';
import { DuplicateIdentifierError, NoIdentifierLeftError, type User, type UserChanges } from '../users/repository';
import { outsideTransaction } from '../http/idempotency';
import type { ClientRecord } from '../clients/repository';
import { clientAuditRecords, clientView, type ClientAuditDetails } from '../clients/view';
import { tenantView } from '../tenants/view';
import type { Tenant } from '../tenants/repository';
import { isPolicyKey, resolvePolicy, tenantPolicySchema, validOverrides } from '../tenants/policy';
import { validateBody } from '../http/validate';
import { canSee, etag, ifMatch, preconditionFailed, requirePlatform, tenantFor, type AdminCaller } from './auth';
import * as S from './schemas';

type Middleware = (ctx: Context, next: () => Promise<void>) => Promise<void>;

function query<T extends z.ZodType>(ctx: Context, schema: T): z.infer<T> {
  const parsed = schema.safeParse(ctx.query);
  if (!parsed.success) throw AppError.validation(parsed.error.issues.map((i) => ({ fieldName: i.path.join('.') || 'query', error: i.message })));
  return parsed.data;
}

/** The admin API: tenants, policy, clients, users, keys, audit. Every change is audited. */
export function adminRoutes(deps: { services: Services; holder: ProviderHolder; auth: Middleware[]; idempotent: Middleware }): Router {
  const { services: s } = deps;
  const router = new Router({ prefix: '/admin' });
  router.use(...deps.auth);
  const admin = (ctx: Context) => ctx.state.admin as AdminCaller;
  const audit = (ctx: Context, type: string, tenantId: string | undefined, target: string, details: Record<string, unknown> = {}) =>
    s.audit.record({ tenantId, actor: admin(ctx).clientId, type, target, details });
  /**
   * A change and its audit record commit together: a change that cannot be audited is not made.
   * In a transaction of its own, or in a savepoint of the request's when an idempotency-ref opened
   * one, so a refusal inside (a duplicate id) leaves that transaction able to record the answer.
   */
  const audited = <T>(fn: () => Promise<T>): Promise<T> => s.tx.savepoint(fn);
  /** A user not in the path's tenant, or one deleted while the request ran. */
  const userNotFound = () => new AppError('NOT_FOUND', 404, 'User not found');
  /**
   * Ends every session of the user, in the caller's transaction: the count first (a login still
   * evaluating its password stores no session after these end: src/users/login-end.ts), then the
   * sessions and their tokens.
   */
  const endAllSessions = async (tenantId: string, userId: string) => {
    if (!(await s.users.endSessions(tenantId, userId))) throw userNotFound(); // deleted meanwhile
    await revokeAllOfAccount(s.tx, userId);
  };
  const auditClient = async (ctx: Context, type: string, c: ClientRecord, details: ClientAuditDetails) => {
    for (const r of clientAuditRecords(c, details)) await audit(ctx, type, r.tenantId, c.id, r.details);
  };

  /**
   * The client `:id` of `tenant`. A change (`forChange`) reaches every tenant the client serves —
   * a new secret or scope works for all of them — so it needs an admin of every one: a tenant-bound
   * admin may read a client it shares with another institution, never change it.
   */
  async function clientOf(ctx: Context, tenant: Tenant, opts: { forChange?: boolean } = {}): Promise<ClientRecord> {
    const c = await s.clients.find(ctx.params.id ?? '');
    if (!c || !c.tenants.includes(tenant.id)) throw new AppError('NOT_FOUND', 404, 'Client not found');
    if (opts.forChange && !c.tenants.every((x) => canSee(admin(ctx), x))) {
      throw AppError.insufficientScope('FORBIDDEN', 'This client also serves tenants outside this admin client\'s reach; only a platform admin may change it');
    }
    return c;
  }
  async function userOf(ctx: Context, tenant: Tenant) {
    const u = await s.users.findById(tenant.id, ctx.params.id ?? '');
    if (!u) throw userNotFound();
    return u;
  }
  const tenantOf = (ctx: Context) => tenantFor(ctx, s.tenants, ctx.params.t ?? '');
  /**
   * Who may act here, checked before the idempotency middleware: a stored reply (a client's new
   * secret, a user's token) is replayed only to an admin who may act for the path's tenant now. A
   * tenant disabled since, or gone from the admin's reach, answers its 404 to a replay too. The
   * handler takes the tenant found (`reached`).
   */
  const reach: Middleware = async (ctx, next) => {
    ctx.state.reachedTenant = await tenantOf(ctx);
    await next();
  };
  const reached = (ctx: Context) => ctx.state.reachedTenant as Tenant;
  /**
   * The same for a change of the client `:id`, which needs reach over every tenant it serves; the
   * handler takes the client found (`changedClient`).
   */
  const clientChangeReach: Middleware = async (ctx, next) => {
    const c = await clientOf(ctx, await tenantOf(ctx), { forChange: true });
    if (c.admin) requirePlatform(ctx); // as for its PATCH: admin clients are the platform's to manage
    ctx.state.changedClient = c;
    await next();
  };
  const changedClient = (ctx: Context) => ctx.state.changedClient as ClientRecord;

  // Tenants
  router.get('/tenants', async (ctx) => {
    const { limit, after } = query(ctx, S.paging);
    const a = admin(ctx);
    const items = a.platform
      ? await s.tenants.list({ limit, after })
      : (await Promise.all(a.tenants.filter((t) => !after || t > after).sort().slice(0, limit).map((t) => s.tenants.find(t)))).filter((t): t is Tenant => !!t);
    ctx.body = { items: items.map(tenantView), next: items.length === limit ? items[items.length - 1]!.id : null };
  });
  router.post('/tenants', deps.idempotent, async (ctx) => {
    requirePlatform(ctx);
    const body = validateBody(ctx, S.tenantCreate);
    const t = await audited(async () => {
      const created = await s.tenantService.create(body);
      await audit(ctx, 'tenant.created', created.id, created.id, { after: tenantView(created) });
      return created;
    });
    ctx.status = 201;
    ctx.set('ETag', etag(t.version));
    ctx.body = tenantView(t);
  });
  router.get('/tenants/:t', async (ctx) => {
    const t = await tenantOf(ctx);
    ctx.set('ETag', etag(t.version));
    ctx.body = tenantView(t);
  });
  router.patch('/tenants/:t', async (ctx) => {
    const t = await tenantOf(ctx);
    const changes = validateBody(ctx, S.tenantPatch);
    if ((changes.mode !== undefined || changes.status !== undefined) && !admin(ctx).platform) requirePlatform(ctx);
    // Enabled as a second begins, outside the transaction: see src/oidc/not-before.ts.
    if (changes.status === 'active' && t.status === 'disabled') await untilNextSecond();
    const updated = await audited(async () => {
      const u = await s.tenants.update(t.id, ifMatch(ctx, t.version), changes);
      if (!u) throw preconditionFailed();
      await audit(ctx, 'tenant.updated', t.id, t.id, { before: tenantView(t), after: tenantView(u) });
      return u;
    });
    ctx.set('ETag', etag(updated.version));
    ctx.body = tenantView(updated);
  });

  // Policy (takes effect on every process at once: each evicts the tenant when the change commits)
  /** The effective policy, the stored overrides, and the stored keys that do not apply (unknown to this release, or out of range). */
  const policyView = (stored: unknown, policy = resolvePolicy(stored)) => {
    const { ignored } = validOverrides(stored);
    return { policy, overrides: stored, ...(ignored.length > 0 ? { ignored } : {}) };
  };
  router.get('/tenants/:t/policy', async (ctx) => {
    const t = await tenantOf(ctx);
    ctx.set('ETag', etag(t.version));
    ctx.body = policyView(t.storedPolicy, t.policy);
  });
  router.patch('/tenants/:t/policy', async (ctx) => {
    const t = await tenantOf(ctx);
    const patch = validateBody(ctx, S.policyPatch) as Record<string, unknown>;
    // A change keeps the overrides that apply, drops a value out of its range, and keeps a key this
    // release does not know: a newer release, during a rolling deploy or after a rollback, wrote it.
    // Stored overrides that are not an object (an array, a string) hold nothing to keep.
    const stored = t.storedPolicy && typeof t.storedPolicy === 'object' && !Array.isArray(t.storedPolicy) ? (t.storedPolicy as Record<string, unknown>) : {};
    const unknown = Object.fromEntries(Object.entries(stored).filter(([k]) => !isPolicyKey(k)));
    const merged: Record<string, unknown> = { ...validOverrides(stored).valid };
    for (const [k, v] of Object.entries(patch)) {
      if (v === null) delete merged[k];
      else if (v !== undefined) merged[k] = v;
    }
    const next = { ...unknown, ...tenantPolicySchema.parse(merged) };
    const updated = await audited(async () => {
      const u = await s.tenants.update(t.id, ifMatch(ctx, t.version), { policy: next });
      if (!u) throw preconditionFailed();
      await audit(ctx, 'policy.updated', t.id, t.id, { before: t.storedPolicy, after: next });
      return u;
    });
    ctx.set('ETag', etag(updated.version));
    ctx.body = policyView(next);
  });

  // Clients
  router.get('/tenants/:t/clients', async (ctx) => {
    const t = await tenantOf(ctx);
    const { limit, after } = query(ctx, S.paging);
    const items = await s.clients.listByTenant(t.id, { limit, after });
    ctx.body = { items: items.map((c) => clientView(c, admin(ctx))), next: items.length === limit ? items[items.length - 1]!.id : null };
  });
  router.post('/tenants/:t/clients', reach, deps.idempotent, async (ctx) => {
    const t = reached(ctx);
    const body = validateBody(ctx, S.clientCreate);
    const tenants = [...new Set([t.id, ...(body.tenants ?? [])])];
    if (tenants.some((x) => !canSee(admin(ctx), x))) throw new AppError('NOT_FOUND', 404, 'Tenant not found');
    const created = await audited(async () => {
      const made = await s.clientService.create({
        name: body.client_name ?? '',
        tenants,
        grant_types: body.grant_types,
        scope: body.scope ?? '',
        token_endpoint_auth_method: body.token_endpoint_auth_method,
        token_format: body.token_format,
        introspection: body.introspection ?? false,
      });
      await auditClient(ctx, 'client.created', made.client, (view) => ({ after: view(made.client) }));
      return made;
    });
    ctx.status = 201;
    ctx.set('Cache-Control', 'no-store');
    ctx.set('ETag', etag(created.client.version));
    ctx.body = { ...clientView(created.client, admin(ctx)), client_secret: created.clientSecret, api_key: created.apiKey };
  });
  router.get('/tenants/:t/clients/:id', async (ctx) => {
    const c = await clientOf(ctx, await tenantOf(ctx));
    ctx.set('ETag', etag(c.version));
    ctx.body = clientView(c, admin(ctx));
  });
  router.patch('/tenants/:t/clients/:id', async (ctx) => {
    const t = await tenantOf(ctx);
    const c = await clientOf(ctx, t, { forChange: true });
    const body = validateBody(ctx, S.clientPatch);
    if (c.admin && !admin(ctx).platform) requirePlatform(ctx);
    const grantTypes = body.grant_types ? [...new Set(body.grant_types.includes('password') ? [...body.grant_types, 'refresh_token'] : body.grant_types)] : undefined;
    // Enabled as a second begins, outside the transaction: see src/oidc/not-before.ts.
    if (body.disabled === false && c.disabled) await untilNextSecond();
    const updated = await audited(async () => {
      const u = await s.clients.update(c.id, ifMatch(ctx, c.version), {
        name: body.client_name, grantTypes, scope: body.scope, tokenFormat: body.token_format, introspection: body.introspection, disabled: body.disabled,
      });
      if (!u) throw preconditionFailed();
      await auditClient(ctx, 'client.updated', c, (view) => ({ before: view(c), after: view(u) }));
      return u;
    });
    ctx.set('ETag', etag(updated.version));
    ctx.body = clientView(updated, admin(ctx));
  });
  router.post('/tenants/:t/clients/:id/secret', clientChangeReach, deps.idempotent, async (ctx) => {
    const c = changedClient(ctx);
    const { overlap_seconds } = validateBody(ctx, S.secretRotation);
    const secret = generateSecret(32);
    const until = new Date(Date.now() + overlap_seconds * 1000);
    await audited(async () => {
      if (!(await s.clients.rotateSecret(c.id, hashSecret(secret), until))) throw new AppError('NOT_FOUND', 404, 'Client not found');
      await auditClient(ctx, 'client.secret_rotated', c, () => ({ previous_secret_expires_at: until.toISOString() }));
    });
    ctx.set('Cache-Control', 'no-store');
    ctx.body = { client_id: c.id, client_secret: secret, previous_secret_expires_at: until.toISOString() };
  });
  // After a leak, overlap_seconds 0: the old key stops at once. An app that ships its key (seed 003's
  // registration from client-side code) needs an overlap long enough for its users to update.
  router.post('/tenants/:t/clients/:id/api-key', clientChangeReach, deps.idempotent, async (ctx) => {
    const c = changedClient(ctx);
    const { overlap_seconds } = validateBody(ctx, S.apiKeyRotation);
    const apiKey = generateSecret(32);
    const until = new Date(Date.now() + overlap_seconds * 1000);
    await audited(async () => {
      // No overlap keeps no predecessor at all: its end does not hang on two clocks agreeing.
      if (!(await s.clients.rotateApiKey(c.id, hashSecret(apiKey), overlap_seconds > 0 ? until : undefined))) throw new AppError('NOT_FOUND', 404, 'Client not found');
      await auditClient(ctx, 'client.api_key_rotated', c, () => ({ previous_api_key_expires_at: until.toISOString() }));
    });
    ctx.set('Cache-Control', 'no-store');
    ctx.body = { client_id: c.id, api_key: apiKey, previous_api_key_expires_at: until.toISOString() };
  });

  // Users (seed 003's admin register and admin login)
  router.get('/tenants/:t/users', async (ctx) => {
    const t = await tenantOf(ctx);
    const { q, limit, after } = query(ctx, S.userSearch);
    const items = await s.users.search(t.id, { q, limit, after });
    ctx.body = { items: items.map(publicUser), next: items.length === limit ? items[items.length - 1]!.id : null };
  });
  // The checks and the password's hash before any transaction opens (an idempotency-ref's too:
  // outsideTransaction); the user, the MFA flag and the audit record are stored together.
  const registration = outsideTransaction(async (ctx) => {
    const t = reached(ctx);
    const { role, mfaRequired, ...input } = validateBody(ctx, S.adminUserCreate);
    return { t, mfaRequired, prepared: await s.userService.prepareRegistration(t, { ...input, acceptedTerms: true }, { role }) };
  });
  router.post('/tenants/:t/users', reach, registration.middleware, deps.idempotent, async (ctx) => {
    const { t, mfaRequired, prepared } = await registration.result(ctx);
    const user = await audited(async () => {
      const u = await s.userService.storeRegistration(prepared);
      if (mfaRequired) await s.users.setMfaRequired(t.id, u.id, true);
      await audit(ctx, 'user.created', t.id, u.id, { role: u.role });
      return u;
    });
    ctx.status = 201;
    ctx.body = publicUser(user);
  });
  const adminUserView = (u: User) => ({ ...publicUser(u), lockedUntil: u.lockedUntil?.toISOString() ?? null, mfaRequired: u.mfaRequired });
  router.get('/tenants/:t/users/:id', async (ctx) => {
    const u = await userOf(ctx, await tenantOf(ctx));
    ctx.body = adminUserView(u);
  });
  /**
   * An admin's edit of a user's identifiers, role, group, profile, MFA requirement or password. A new
   * (or removed) mobile number removes the user's SMS factor, enrolled or not, and cancels its open
   * challenges: its codes would go to a number the user has not shown they hold, so they enrol it
   * again with a code sent there. A new password (a reset: forgotten, or leaked) ends every session
   * of the user, as a lock does, a login still evaluating the old one included. The audit record
   * names the fields changed, not their values.
   */
  router.patch('/tenants/:t/users/:id', reach, async (ctx) => {
    const t = reached(ctx);
    await userOf(ctx, t);
    const body = validateBody(ctx, S.userPatch);
    const invalid: Array<{ fieldName: string; error: string }> = [];
    const changes: UserChanges = { role: body.role, group: body.group, profile: body.profile, mfaRequired: body.mfaRequired };
    for (const kind of IDENTIFIER_KINDS) {
      const value = body[kind];
      if (value === undefined || value === null) {
        changes[kind] = value;
        continue;
      }
      const normal = normalizeIdentifier(kind, value);
      if ('error' in normal) invalid.push({ fieldName: kind, error: normal.error });
      else changes[kind] = normal.value;
    }
    if (body.password !== undefined) {
      const problem = passwordProblem(body.password, t.policy.passwordMinLength);
      if (problem) invalid.push({ fieldName: 'password', error: problem });
    }
    if (invalid.length) throw AppError.validation(invalid);
    // Hashed before the transaction opens: bcrypt takes about 250 ms at cost 12.
    if (body.password !== undefined) changes.passwordHash = await s.userService.hashPassword(body.password);
    const after = await audited(async () => {
      let result: Awaited<ReturnType<typeof s.users.update>>;
      try {
        result = await s.users.update(t.id, ctx.params.id ?? '', changes);
      } catch (err) {
        if (err instanceof DuplicateIdentifierError) throw new AppError('IDENTIFIER_TAKEN', 409, `${err.field} is already registered`);
        if (err instanceof NoIdentifierLeftError) throw AppError.validation([{ ...IDENTIFIER_REQUIRED }]);
        throw err;
      }
      if (!result) throw userNotFound();
      const { before, after } = result;
      const fields: string[] = (['email', 'mobile', 'username', 'role', 'group', 'mfaRequired'] as const).filter((f) => before[f] !== after[f]);
      if (JSON.stringify(before.profile) !== JSON.stringify(after.profile)) fields.push('profile');
      // A password given is a change, the same one or not: a hash is salted, and nothing compares them.
      const newPassword = changes.passwordHash !== undefined;
      if (newPassword) fields.push('password');
      if (fields.length === 0) return after;
      const smsFactorRemoved = fields.includes('mobile') && (await s.factors.remove(t.id, after.id, 'SMS'));
      if (newPassword) await endAllSessions(t.id, after.id);
      await audit(ctx, 'user.updated', t.id, after.id, {
        fields,
        ...(smsFactorRemoved ? { smsFactorRemoved } : {}),
        ...(newPassword ? { sessionsEnded: true } : {}),
      });
      return after;
    });
    ctx.body = adminUserView(after);
  });
  /**
   * Deletes a user (erasure): their row, factors and challenges, every session and token (inactive at
   * once, on every process), the replies stored for their idempotency-refs and the outbox's messages
   * to them. The row goes first: every write of a user's factors, challenges or sessions takes it
   * first too (lockUser's rule; a login's session statement updates it), so whatever runs for the
   * user meanwhile either committed before and is revoked here, or finds them gone. The audit log
   * keeps what it recorded about them, which names them by id only.
   */
  router.delete('/tenants/:t/users/:id', async (ctx) => {
    const t = await tenantOf(ctx);
    const u = await userOf(ctx, t);
    await audited(async () => {
      if (!(await s.users.delete(t.id, u.id))) throw userNotFound(); // deleted meanwhile
      await revokeAllOfAccount(s.tx, u.id);
      await eraseUserTraces(s.tx, t.id, u.id);
      await audit(ctx, 'user.deleted', t.id, u.id);
    });
    ctx.status = 204;
  });
  router.post('/tenants/:t/users/:id/lock', reach, deps.idempotent, async (ctx) => {
    const t = reached(ctx);
    const u = await userOf(ctx, t);
    const locked = await audited(async () => {
      const r = await s.users.setStatus(t.id, u.id, 'locked');
      if (!r) throw userNotFound(); // deleted meanwhile
      await endAllSessions(t.id, u.id); // a locked user keeps no session
      await audit(ctx, 'user.locked', t.id, u.id);
      return r;
    });
    ctx.body = publicUser(locked);
  });
  router.delete('/tenants/:t/users/:id/lock', async (ctx) => {
    const t = await tenantOf(ctx);
    const u = await userOf(ctx, t);
    const r = await audited(async () => {
      const active = await s.users.setStatus(t.id, u.id, 'active');
      if (!active) throw userNotFound();
      await audit(ctx, 'user.unlocked', t.id, u.id);
      return active;
    });
    ctx.body = publicUser(r);
  });
  router.delete('/tenants/:t/users/:id/factors', async (ctx) => {
    const t = await tenantOf(ctx);
    const u = await userOf(ctx, t);
    await audited(async () => {
      const n = await s.factors.removeAll(t.id, u.id);
      if (n === undefined) throw userNotFound(); // deleted meanwhile
      await s.factors.resetFailures(t.id, u.id);
      await audit(ctx, 'factor.reset', t.id, u.id, { removed: n });
    });
    ctx.status = 204;
  });
  router.get('/tenants/:t/users/:id/sessions', async (ctx) => {
    const t = await tenantOf(ctx);
    const u = await userOf(ctx, t);
    ctx.body = { sessions: await sessionsOf(s.tx, u.id, t, s.clients) };
  });
  router.delete('/tenants/:t/users/:id/sessions', async (ctx) => {
    const t = await tenantOf(ctx);
    const u = await userOf(ctx, t);
    await audited(async () => {
      await endAllSessions(t.id, u.id);
      await audit(ctx, 'session.revoked_all', t.id, u.id);
    });
    ctx.status = 204;
  });
  router.delete('/tenants/:t/users/:id/sessions/:sid', async (ctx) => {
    const t = await tenantOf(ctx);
    const u = await userOf(ctx, t);
    const sid = ctx.params.sid ?? '';
    if (!/^[A-Za-z0-9_-]{1,128}$/.test(sid)) throw new AppError('NOT_FOUND', 404, 'Session not found');
    await audited(async () => {
      if (!(await revokeGrantOfAccount(s.tx, u.id, sid))) throw new AppError('NOT_FOUND', 404, 'Session not found');
      await audit(ctx, 'session.revoked', t.id, u.id, { session: sid });
    });
    ctx.status = 204;
  });
  router.post('/tenants/:t/users/:id/login', reach, deps.idempotent, async (ctx) => {
    const t = reached(ctx);
    const u = await userOf(ctx, t);
    if (u.status !== 'active') throw new AppError('USER_LOCKED', 409, 'The user is locked');
    const body = validateBody(ctx, S.adminLogin);
    const client = await deps.holder.findClient(body.client_id);
    if (!client || !(client.tenants ?? []).includes(t.id) || !client.grantTypeAllowed('password')) {
      throw AppError.validation([{ fieldName: 'client_id', error: 'not a client of this tenant allowed to hold user sessions' }]);
    }
    const { scope, denied } = grantedScopes(client, body.scope);
    if (denied) throw AppError.validation([{ fieldName: 'scope', error: `${denied} is not allowed for this client` }]);
    const token = await audited(async () => {
      // Read again under a lock of the user's row, in the transaction that stores the session: a
      // lock (which ends every session) committed since the read above refuses the login, and one
      // that comes later waits, then ends this session with the others. A user deleted since is
      // not found, as if deleted before the request.
      const status = await s.users.statusLocked(t.id, u.id);
      if (status === undefined) throw userNotFound();
      if (status !== 'active') throw new AppError('USER_LOCKED', 409, 'The user is locked');
      const issued = await startUserSession(deps.holder.userTokenContext(), {
        client, tenant: t, user: u, scope, amr: [], acr: ACR_CA, act: { sub: admin(ctx).clientId },
      });
      await audit(ctx, 'user.admin_login', t.id, u.id, { client_id: body.client_id });
      return issued;
    });
    ctx.set('Cache-Control', 'no-store');
    ctx.body = token;
  });

  // Keys (platform only)
  router.get('/keys', async (ctx) => {
    requirePlatform(ctx);
    const keys = await s.keyService.list();
    ctx.body = { keys: keys.map((k) => ({ kid: k.kid, alg: k.alg, createdAt: k.createdAt, activatesAt: k.activatesAt, retiredAt: k.retiredAt, expiresAt: k.expiresAt, publicJwk: k.publicJwk })) };
  });
  router.post('/keys/rotate', deps.idempotent, async (ctx) => {
    requirePlatform(ctx);
    const key = await audited(async () => {
      const k = await s.keyService.rotate();
      await audit(ctx, 'key.rotated', undefined, k.kid, { activatesAt: k.activatesAt.toISOString() });
      return k;
    });
    // This process publishes the key once it is committed (with an idempotency-ref, when the
    // request's transaction ends); the others at their next refresh.
    await s.tx.whenDone(() => deps.holder.refresh().then(
      () => undefined,
      (err: unknown) => s.logger.warn({ err }, 'key refresh after a rotation failed; the current keys stay until the next refresh'),
    ));
    ctx.status = 201;
    ctx.body = { kid: key.kid, activatesAt: key.activatesAt.toISOString() };
  });

  // Audit
  router.get('/audit', async (ctx) => {
    const q = query(ctx, S.auditQuery);
    const a = admin(ctx);
    if (q.tenant && !canSee(a, q.tenant)) throw new AppError('NOT_FOUND', 404, 'Tenant not found');
    const items = await s.audit.list({
      tenants: a.platform ? undefined : a.tenants,
      tenant: q.tenant, actor: q.actor, type: q.type, since: q.since ? new Date(q.since) : undefined, before: q.after, limit: q.limit,
    });
    ctx.body = { items, next: items.length === q.limit ? items[items.length - 1]!.id : null };
  });

  return router;
}
