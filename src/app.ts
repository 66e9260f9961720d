import { hkdfSync } from 'node:crypto';
import { availableParallelism } from 'node:os';
import Koa from 'koa';
import Router from '@koa/router';
import type { Config } from './config';
import { createLogger, type Logger } from './log';
import { createMetrics, type Metrics } from './metrics';
import { openDatabase, type Database, type DbOptions } from './db/knex';
import { migrateLatest } from './db/migrate';
import { createTxContext } from './db/tx';
import { createSealer } from './crypto/secrets';
import { loadSecretsKey } from './crypto/secrets-key';
import { createTenantRepository } from './tenants/repository';
import { createTenantService } from './tenants/service';
import { createClientRepository } from './clients/repository';
import { createClientService } from './clients/service';
import { createKeyService } from './keys/service';
import { createUserRepository } from './users/repository';
import { createUserService } from './users/service';
import { createPasswordHasher } from './users/passwords';
import { createLoginThrottle, sweepRateLimits } from './users/throttle';
import { createAuditLog } from './audit/repository';
import { createIdempotencyRepository } from './idempotency/repository';
import { createFactorRepository } from './factors/repository';
import { createFactorService, type Caller } from './factors/service';
import { createCodeHasher } from './factors/codes';
import { createSendCaps } from './factors/caps';
import { createOutboxSenders, createWebhookPushSender, createWebhookSmsSender } from './factors/senders';
import { createProviderHolder, type ProviderHolder } from './oidc/holder';
import { sweepExpired } from './oidc/adapter';
import { claimSweep } from './db/sweep';
import { ACR_SCA } from './oidc/user-tokens';
import { requestId } from './http/request-id';
import { requestLogger } from './http/logging';
import { securityHeaders } from './http/security-headers';
import { errorHandler } from './http/errors';
import { healthRoutes } from './http/health';
import { jsonBody } from './http/body';
import { idempotency } from './http/idempotency';
import { malformedAuthorization, requireBearer, requireClient, requireUser, insufficientUserAuthentication, unauthorized } from './http/auth';
import type { Principal } from './oidc/bearer';
import { userRoutes } from './users/routes';
import { CLIENT_AUTH_PATHS, providerPath } from './oidc/paths';
import { sessionRoutes } from './sessions/routes';
import { deviceRoutes, factorRoutes } from './factors/routes';
import { createStepUpService } from './stepup/service';
import { stepUpRoutes } from './stepup/routes';
import { adminRoutes } from './admin/routes';
import { docsRoutes } from './http/docs';
import { requireAdmin } from './admin/auth';
import { hashSecret } from './crypto/secrets';
import type { Tenant } from './tenants/repository';
import type { ClientRecord } from './clients/repository';
import { createFastIntrospection, type FastIntrospection } from './oidc/fast-introspection';
import { discardBody, oauthBodyLimit, readBodyWithin, replayRequest } from './oidc/fast-form';
import { createFastClientCredentials, type FastClientCredentials } from './oidc/fast-client-credentials';
import { createFastPassword, type FastPassword } from './oidc/fast-password';
import { createFastToken } from './oidc/fast-token';
import { createLookupCaches, startChangeListener, type ChangeListener } from './cache/lookups';
import type { User } from './users/repository';
import { AppError } from './errors';

/** Seed aliases and RFC 8414 metadata: served by the same oidc-provider endpoints. */
const OAUTH_ALIASES: Record<string, string> = {
  '/v1/oauth/token': '/token',
  '/v1/token': '/token',
  '/.well-known/oauth-authorization-server': '/.well-known/openid-configuration',
};

/** oidc-provider's endpoints (and their aliases) that every token request and introspection hits. */
const OAUTH_PATHS = new Set([...CLIENT_AUTH_PATHS, ...Object.keys(OAUTH_ALIASES).filter((p) => p.includes('token'))]);
/**
 * Every path handed to oidc-provider, with the methods it answers there (OPTIONS: CORS preflight).
 * The library serves more (an authorization endpoint, say), none of it part of this server: any
 * other path is our JSON 404, another method our JSON 405.
 */
const PROVIDER_METHODS: Record<string, readonly string[]> = Object.fromEntries([
  ...[...OAUTH_PATHS].map((p) => [p, ['POST', 'OPTIONS']] as const),
  ...['/jwks', '/.well-known/openid-configuration', '/.well-known/oauth-authorization-server'].map((p) => [p, ['GET', 'HEAD', 'OPTIONS']] as const),
]);
/** Whether the request carries the Authorization field more than once (any case). */
function repeatedAuthorization(raw: string[]): boolean {
  let seen = false;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length !== 13 || name.toLowerCase() !== 'authorization') continue;
    if (seen) return true;
    seen = true;
  }
  return false;
}
/**
 * CORS on the client-authenticated endpoints (token, introspection, revocation and the token's
 * aliases): no browser origin is granted. Confidential clients and resource servers call them
 * server to server, and no client has origins to allow. The library checked a request's Origin
 * against the client's origins as soon as it found the client, before its secret: a wrong secret
 * sent with an Origin got 400 invalid_request instead of 401 invalid_client, and whether a client
 * id exists showed without any secret. The Origin is dropped before either path (ours or the
 * library's) reads the request, which is then authenticated and answered as any other, and the
 * CORS headers are withheld from its answer (a preflight's too), so a page elsewhere cannot read it.
 */
function withholdCors(ctx: Koa.Context): void {
  delete ctx.req.headers.origin;
  const res = ctx.res;
  const setHeader = res.setHeader.bind(res);
  res.setHeader = ((name: string, value: number | string | readonly string[]) =>
    /^access-control-/i.test(name) ? res : setHeader(name, value)) as typeof res.setHeader;
}

/**
 * A request to one of the library's paths refused before the library sees it, in RFC 6749's error
 * shape as the library would answer (`headers` first, then no caching).
 */
function refuseOAuthRequest(ctx: Koa.Context, status: number, description: string, headers: Record<string, string> = {}): void {
  ctx.status = status;
  for (const [name, value] of Object.entries(headers)) ctx.set(name, value);
  ctx.set('Cache-Control', 'no-store');
  ctx.set('Pragma', 'no-cache'); // RFC 6749 §5.1, as on the library's answers (token-errors.ts)
  ctx.body = { error: 'invalid_request', error_description: description };
}

/** 413 for a body over the OAuth endpoints' limit, the rest of it read and dropped (discardBody). */
function refuseTooLarge(ctx: Koa.Context): void {
  discardBody(ctx.req);
  refuseOAuthRequest(ctx, 413, 'request body too large');
}

export interface AppOptions {
  db?: DbOptions;
  logger?: Logger;
  /** Apply migrations before serving (npm start does; the CLI `migrate` does it alone). */
  migrate?: boolean;
  /** The clock of challenges and idempotency records (tests move it instead of sleeping). */
  clock?: () => Date;
}

export type Services = Awaited<ReturnType<typeof buildServices>>;

/** Repositories and services over one database: shared by the server and the CLI. */
export async function buildServices(config: Config, database: Database, opts: { logger?: Logger; clock?: () => Date; metrics?: Metrics } = {}) {
  const { knex } = database;
  const metrics = opts.metrics ?? createMetrics({ eventLoopMonitorMs: config.eventLoopMonitorMs });
  const logger = opts.logger ?? createLogger(config.logLevel);
  const clock = opts.clock ?? (() => new Date());
  const shared = database.counters; // PostgreSQL: counters shared by every process, on their own pool
  const tx = createTxContext(knex, database.asyncCommit, (err) => logger.warn({ err }, 'a step after a transaction failed'));
  const secretsKey = loadSecretsKey(config);
  const sealer = createSealer(secretsKey);
  const derive = (label: string) => Buffer.from(hkdfSync('sha256', secretsKey, Buffer.alloc(0), label, 32));

  // Embedded: this is the only process, and it evicts its own changes. PostgreSQL: caching starts
  // once the server's change listener listens (startChangeListener); the CLI never caches.
  const caches = createLookupCaches({ ttlSeconds: config.clientCacheSeconds, listening: database.kind === 'embedded' });
  const tenants = createTenantRepository(tx, (id) => caches.changed('tenant', id));
  const clients = createClientRepository(tx, (id) => caches.changed('client', id));
  /** What token requests read on every call: cached (see src/cache/lookups.ts). */
  const lookups = {
    tenant: (id: string) => caches.tenants.get(id, (i) => tenants.find(i)) as Promise<Tenant | undefined>,
    client: (id: string) => caches.clients.get(id, (i) => clients.find(i)) as Promise<ClientRecord | undefined>,
  };
  const users = createUserRepository(tx);
  // bcrypt at a time: the cores this process may use (its share, with WEB_CONCURRENCY workers).
  const processes = config.databaseUrl ? config.webConcurrency : 1; // the embedded database serves one
  const bcryptConcurrency = config.bcryptConcurrency || Math.max(1, Math.floor(availableParallelism() / processes));
  const hasher = createPasswordHasher(secretsKey, config.bcryptCost, bcryptConcurrency);
  const audit = createAuditLog(tx);
  const outbox = createOutboxSenders(tx, logger);
  const counted = <S extends { send(...args: never[]): Promise<void> }>(sender: S, kind: 'sms' | 'push', name: string): S =>
    ({
      send: async (...args: Parameters<S['send']>) => {
        await sender.send(...args);
        metrics.sends.inc({ kind, sender: name });
      },
    }) as unknown as S;
  const webhook = (url: string | undefined) => ({ url: url ?? '', secret: config.webhookSecret ?? '', ...config.webhook });
  const factors = createFactorRepository(tx);
  const factorService = createFactorService({
    tx,
    factors,
    codes: createCodeHasher(derive('portcullis otp v1')),
    sms: counted(config.smsSender === 'webhook' ? createWebhookSmsSender(webhook(config.smsWebhookUrl), logger) : outbox.sms, 'sms', config.smsSender),
    push: counted(config.pushSender === 'webhook' ? createWebhookPushSender(webhook(config.pushWebhookUrl), logger) : outbox.push, 'push', config.pushSender),
    caps: createSendCaps(shared),
    audit,
    logger,
    clock,
    // RFC 9470: changing the factors that protect an account needs a step-up (SCA) token that is
    // recent (a refreshed session keeps its acr for hours) and not bound to some payment.
    isSteppedUp: (caller: Caller) =>
      caller.acr === ACR_SCA &&
      !caller.transactionBound &&
      !!caller.authTime &&
      clock().getTime() / 1000 - caller.authTime <= caller.tenant.policy.stepUpTtlSeconds,
    // max_age: an SCA token older than the tenant's step-up lifetime is not enough either.
    stepUpRequired: (caller: Caller) => insufficientUserAuthentication(config.publicUrl, caller.tenant.policy.stepUpTtlSeconds),
    callerGone: () => unauthorized(config.publicUrl, 'invalid_token'),
    onBlocked: () => metrics.factorBlocks.inc(),
  });

  return {
    tx,
    caches,
    lookups,
    clock,
    logger,
    metrics,
    tenants,
    clients,
    users,
    hasher,
    audit,
    factors,
    factorService,
    /** Login-time MFA (tenant policy or per user) applies to users who have an ACTIVE factor. */
    mfaPending: async (tenant: Tenant, user: User) =>
      (tenant.policy.mfaAtLogin || user.mfaRequired) && (await factors.list(tenant.id, user.id)).some((f) => f.status === 'ACTIVE'),
    idempotency: createIdempotencyRepository(tx, sealer),
    /** The key of the idempotency records' request HMACs (src/http/idempotency.ts). */
    idempotencyRequestKey: derive('portcullis idempotency request v1'),
    keyService: createKeyService({
      knex,
      db: tx.db,
      sealer,
      alg: config.keys.alg,
      publishBeforeUseSeconds: config.keys.publishBeforeUseSeconds,
      maxTokenLifetimeSeconds: config.keys.maxTokenLifetimeSeconds,
    }),
    userService: createUserService({
      users,
      hasher,
      rehashOnLogin: config.passwordRehash,
      warn: (err, msg) => logger.warn({ err }, msg),
      throttle: createLoginThrottle({ failures: config.loginThrottle.failuresPerWindow, windowSeconds: config.loginThrottle.windowSeconds, clock }),
      events: {
        // Security events: who failed to log in (never what they typed), and lockouts.
        loginFailed: (tenant, userId, reason, from) => {
          audit.record({ tenantId: tenant.id, actor: userId ?? 'unknown', type: 'user.login_failed', target: userId, details: { reason, ...from } }).catch(() => undefined);
        },
        lockedOut: (tenant, userId, until) => {
          metrics.lockouts.inc({ tenant: tenant.id });
          audit.record({ tenantId: tenant.id, actor: 'system', type: 'user.locked_out', target: userId, details: { until: until.toISOString() } }).catch(() => undefined);
        },
      },
    }),
    tenantService: createTenantService({ tenants }),
    clientService: createClientService({ clients, tenants }),
  };
}

export interface App {
  config: Config;
  logger: Logger;
  database: Database;
  services: Services;
  holder: ProviderHolder;
  koa: Koa;
  callback: ReturnType<Koa['callback']>;
  /** Every route of ours (method, path in the router's syntax): what /openapi.json must describe. */
  routes: Array<{ method: string; path: string }>;
  /** Introspection's own fast path (src/oidc/fast-introspection.ts): switchable, and counted. */
  fastIntrospection: FastIntrospection;
  /** The client_credentials grant's own fast path (src/oidc/fast-client-credentials.ts): switchable, and counted. */
  fastClientCredentials: FastClientCredentials;
  /** The password grant's own fast path (src/oidc/fast-password.ts): switchable, and counted. */
  fastPassword: FastPassword;
  /** Readiness goes false; in-flight requests may finish. */
  startDraining(): void;
  close(): Promise<void>;
}

/** The composition root: database → repositories → services → provider → Koa app. */
export async function createApp(config: Config, opts: AppOptions = {}): Promise<App> {
  const logger = opts.logger ?? createLogger(config.logLevel);
  const database = await openDatabase(config, { logger: { warn: (m) => logger.warn(m) }, ...opts.db });
  let listener: ChangeListener | undefined;
  const metrics = createMetrics({ eventLoopMonitorMs: config.eventLoopMonitorMs });
  try {
    if (opts.migrate !== false) await migrateLatest(database.knex);
    const services = await buildServices(config, database, { logger, clock: opts.clock, metrics });
    // PostgreSQL: every process hears of client and tenant changes, and caches only while it does.
    listener =
      database.kind === 'postgres' && config.databaseUrl && config.clientCacheSeconds > 0
        ? startChangeListener({ connectionString: config.databaseUrl, caches: services.caches, logger })
        : undefined;
    await services.keyService.ensureKey();
    if (config.adminClientId && config.adminClientSecret) {
      // The first platform admin, from the environment: created, or re-keyed to this secret, and
      // audited when either happens (not at every start of every process).
      const { adminClientId: id, adminClientSecret: secret } = config;
      await services.tx.transaction(async () => {
        const outcome = await services.clients.ensureAdmin({
          id, name: 'Platform admin (environment)', secretHash: hashSecret(secret),
          apiKeyHash: hashSecret(`${id}:${secret}:api-key`), grantTypes: ['client_credentials'], scope: 'admin',
          tokenEndpointAuthMethod: 'client_secret_basic', tokenFormat: 'opaque', introspection: false, admin: true, tenants: [],
        });
        if (outcome === 'unchanged') return;
        await services.audit.record({
          tenantId: undefined, actor: 'environment', target: id,
          type: outcome === 'created' ? 'client.created' : outcome === 'rekeyed' ? 'client.secret_rotated' : 'client.updated',
          details: { source: 'PORTCULLIS_ADMIN_CLIENT_ID / PORTCULLIS_ADMIN_CLIENT_SECRET' },
        });
      });
    }
    const holder = await createProviderHolder({
      config,
      db: services.tx,
      clients: { find: services.lookups.client },
      tenants: { find: services.lookups.tenant },
      fresh: { clients: services.clients, tenants: services.tenants },
      users: services.userService,
      keyService: services.keyService,
      clock: services.clock,
      mfaPending: services.mfaPending,
      logger,
      metrics: services.metrics,
    });
    const stepUp = createStepUpService({
      tx: services.tx,
      factors: services.factors,
      factorService: services.factorService,
      holder,
      audit: services.audit,
      clock: services.clock,
      metrics: services.metrics,
    });
    services.factorService.onApproval('stepup', async () => undefined); // collected by its opener
    holder.start(config.keys.refreshIntervalSeconds);

    let draining = false;
    // Behind a proxy, only the address it appended (the rightmost) is trusted: clients write the rest.
    const koa = new Koa({ proxy: config.trustProxy, maxIpsCount: 1 });
    koa.silent = true;
    koa.use((ctx, next) => {
      if (draining) ctx.res.setHeader('Connection', 'close'); // keep-alive clients reconnect elsewhere
      return next();
    });
    koa.use(requestId);
    koa.use(requestLogger(logger, services.metrics));
    koa.use(securityHeaders(config.publicUrl));
    koa.use(errorHandler(logger, config.publicUrl));
    // Authorization is a singleton field (RFC 9110 §5.3): Node keeps the first of two and drops the
    // other, while a proxy in front may act on the last. Which one is meant is nobody's guess: 400.
    koa.use((ctx, next) => {
      if (!repeatedAuthorization(ctx.req.rawHeaders)) return next();
      if (PROVIDER_METHODS[providerPath(ctx.path)] === undefined) throw malformedAuthorization(config.publicUrl, 'must be sent once');
      refuseOAuthRequest(ctx, 400, 'more than one Authorization header');
      return Promise.resolve();
    });
    // The OAuth endpoints are the hot path and none of ours: they go straight to their handler
    // (below), past the health routes and our routers' matching.
    koa.use((ctx, next) => (OAUTH_PATHS.has(providerPath(ctx.path)) ? oauth(ctx) : next()));
    // OPTIONS on our routes (RFC 9110 §9.3.7): the routers answer 200 and the path's methods; it
    // gets the library's paths' answer, 204 with OPTIONS among them.
    koa.use(async (ctx, next) => {
      await next();
      if (ctx.method !== 'OPTIONS' || ctx.status !== 200 || ctx.body !== '') return;
      const allow = ctx.response.get('Allow');
      if (typeof allow !== 'string' || allow === '') return;
      ctx.status = 204;
      if (!/\bOPTIONS\b/.test(allow)) ctx.set('Allow', `${allow}, OPTIONS`);
    });
    const health = healthRoutes({ knex: database.knex, isDraining: () => draining, metrics: services.metrics.registry });
    koa.use(health.routes());
    koa.use(health.allowedMethods());

    const verify = (token: string) => holder.verifyBearer(token);
    const bearer = requireBearer({ verify, publicUrl: config.publicUrl });
    const userDeps = { tenants: { find: services.lookups.tenant }, users: services.userService, clients: services.clients, publicUrl: config.publicUrl };
    const user = requireUser(userDeps);
    const userSelf = requireUser(userDeps, { ownAuthentication: true });
    const userSelfOrPending = requireUser(userDeps, { allowPending: true, ownAuthentication: true });
    const idempotentBy = (scope: Parameters<typeof idempotency>[0]['scope']) =>
      idempotency({ repo: services.idempotency, hashKey: services.idempotencyRequestKey, onReplay: () => services.metrics.replays.inc(), tx: services.tx, clock: services.clock, scope });
    const idempotent = idempotentBy((ctx) => {
      const p = ctx.state.principal as Principal | undefined;
      const client = ctx.state.client as { id: string } | undefined;
      // A user's refs are their session's: another session (or client) never sees its replies.
      const caller = p?.userId ? `${p.userId}/${p.sessionId ?? p.tokenId}` : (p?.clientId ?? client?.id ?? '-');
      // An admin request's tenant is the one it acts on (its path's), not the one its token names:
      // an admin client's rights span all its tenants, so one ref sent with two of its tokens is
      // one request.
      if (ctx.state.admin) return { tenantId: String((ctx.params as Record<string, string> | undefined)?.t ?? '-'), caller };
      // A registration's refs are the tenant it registers in, checked before (users/routes.ts).
      const registering = (ctx.state.registrationTenant as { id: string } | undefined)?.id;
      return { tenantId: p?.tenantId ?? registering ?? '-', caller };
    });
    // A device has no token: its refs are its challenge's, which only it can answer.
    const deviceIdempotent = idempotentBy((ctx) => ({ tenantId: '-', caller: `device/${String(ctx.params?.id ?? '')}` }));
    const routers = [
      userRoutes({
        tenants: services.tenants,
        users: services.userService,
        holder,
        requireClient: requireClient({ verify, clients: services.clients, publicUrl: config.publicUrl }),
        requireBearer: bearer,
        requireUser: user,
        idempotent,
      }),
      sessionRoutes({ db: services.tx, clients: { find: services.lookups.client }, audit: services.audit, requireBearer: bearer, requireUser: user }),
      factorRoutes({ factors: services.factorService, user: [bearer, userSelf], idempotent }),
      deviceRoutes({ factors: services.factorService, idempotent: deviceIdempotent }),
      stepUpRoutes({ stepUp, user: [bearer, userSelfOrPending], idempotent }),
      adminRoutes({ services, holder, auth: [bearer, requireAdmin({ find: services.lookups.tenant })], idempotent }),
      docsRoutes(config.publicUrl),
    ];
    // Our routes, with JSON bodies; OAuth endpoints below leave theirs to oidc-provider.
    const api = new Router();
    api.use(jsonBody(config.bodyLimitBytes));
    for (const router of routers) api.use(router.routes(), router.allowedMethods());
    const apiRoutes = api.routes();
    const apiMethods = api.allowedMethods();
    const notAllowed = (ctx: Koa.Context, allow: string) => new AppError('METHOD_NOT_ALLOWED', 405, `${ctx.method} is not allowed here`, undefined, { Allow: allow });
    koa.use(async (ctx, next) => {
      const path = providerPath(ctx.path);
      const routed = ctx as Parameters<typeof apiRoutes>[0] & Parameters<typeof apiMethods>[0];
      const provider = PROVIDER_METHODS[path] !== undefined;
      await apiRoutes(routed, () => apiMethods(routed, provider ? next : async () => undefined));
      if (provider) return;
      // What none of our routes answered, in our error shape: a known path with another method
      // (the router has set 405 and Allow; the health routes, served before, have not), or no such path.
      if (ctx.status === 405 && ctx.body === undefined) throw notAllowed(ctx, String(ctx.response.get('Allow')));
      // A method the router implements nowhere (PROPFIND, SEARCH, …): the router answers 501 on
      // any path. On a known one (it names the methods there in Allow) 405 all the same, as on the
      // OAuth endpoints; elsewhere the 404 below.
      if (ctx.status === 501 && ctx.body === undefined) {
        const allow = String(ctx.response.get('Allow'));
        if (allow) throw notAllowed(ctx, allow);
        ctx.status = 404;
        ctx.remove('Allow');
      }
      const healthPath = health.match(ctx.path, ctx.method).path;
      if (healthPath.length > 0) {
        const allow = [...new Set(healthPath.flatMap((l) => l.methods))].join(', ');
        if (ctx.method !== 'OPTIONS') throw notAllowed(ctx, allow);
        ctx.status = 204;
        ctx.set('Allow', `${allow}, OPTIONS`);
        return;
      }
      if (ctx.status === 404 && ctx.body === undefined) throw new AppError('NOT_FOUND', 404, 'Not found');
    });

    const fastIntrospection = createFastIntrospection({
      provider: () => holder.provider,
      clients: { find: services.lookups.client },
      policy: holder.introspectionPolicy,
      bodyLimitBytes: config.bodyLimitBytes,
      logger,
      metrics: services.metrics,
      enabled: config.introspectionFastPath,
    });
    const fastClientCredentials = createFastClientCredentials({
      provider: () => holder.provider,
      context: () => holder.userTokenContext(),
      tenants: { find: services.lookups.tenant },
      logger,
      enabled: config.clientCredentialsFastPath,
    });
    const fastPassword = createFastPassword({
      context: () => holder.userTokenContext(),
      users: services.userService,
      mfaPending: services.mfaPending,
      tenants: { find: services.lookups.tenant },
      logger,
      metrics: services.metrics,
      enabled: config.passwordFastPath,
    });
    const fastToken = createFastToken({
      grants: { client_credentials: fastClientCredentials, password: fastPassword },
      bodyLimitBytes: config.bodyLimitBytes,
      metrics: services.metrics,
    });
    const bodyLimit = oauthBodyLimit(config.bodyLimitBytes);
    /** The library's paths (the OAuth endpoints, discovery, JWKS): our fast paths, else oidc-provider. */
    const oauth = async (ctx: Koa.Context): Promise<void> => {
      // OAuth requests are small forms: one declaring more than the limit is refused unread.
      const declared = ctx.get('content-length');
      if (Number(declared || 0) > bodyLimit) {
        refuseTooLarge(ctx);
        return;
      }
      const path = providerPath(ctx.path);
      const methods = PROVIDER_METHODS[path] ?? [];
      if (!methods.includes(ctx.method)) {
        // The library's paths answer in RFC 6749's shape, as the body limit above does.
        refuseOAuthRequest(ctx, 405, `${ctx.method} is not allowed here`, { Allow: methods.join(', ') });
        return;
      }
      if (CLIENT_AUTH_PATHS.has(OAUTH_ALIASES[path] ?? path) && ctx.get('origin')) withholdCors(ctx);
      if (ctx.method === 'OPTIONS' && !(ctx.get('origin') && ctx.get('access-control-request-method'))) {
        // Not a CORS preflight (the library's): which methods the path allows (RFC 9110 §9.3.7).
        ctx.status = 204;
        ctx.set('Allow', methods.join(', '));
        return;
      }
      const target = OAUTH_ALIASES[path];
      if (target) ctx.req.url = target + (ctx.querystring ? `?${ctx.querystring}` : '');
      let req = ctx.req;
      if (ctx.method === 'POST' && !declared && ctx.get('transfer-encoding') !== '') {
        // A body of no declared length (chunked) is read here, within the limit, and replayed to
        // the library (the fast paths take declared lengths only): the library would read past our
        // limit, and answer a body over its own as unreadable (400). It reads POST bodies only.
        const body = await readBodyWithin(ctx.req, bodyLimit);
        if (body === 'too large') {
          refuseTooLarge(ctx);
          return;
        }
        if (body === undefined) {
          refuseOAuthRequest(ctx, 400, 'failed to parse the request body');
          return;
        }
        req = replayRequest(ctx.req, body);
      }
      const fastPath = path === '/token/introspection' ? fastIntrospection : (target ?? path) === '/token' ? fastToken : undefined;
      if (fastPath && req === ctx.req) {
        const outcome = await fastPath.handle(ctx);
        if (outcome.handled) return;
        if (outcome.body) req = replayRequest(ctx.req, outcome.body);
      }
      ctx.respond = false;
      await holder.handle(req, ctx.res);
    };
    koa.use(oauth);

    let sweeper: NodeJS.Timeout | undefined;
    if (config.sweepIntervalSeconds > 0) {
      // One DELETE at a time: together they took three of a process's DB_POOL_MAX connections.
      const sweeps = [() => sweepExpired(database.knex, 60), () => sweepRateLimits(database.knex), () => services.idempotency.sweep(services.clock())];
      // One process of a cluster sweeps per interval: the first whose timer finds the lease over.
      // The lease is a little shorter than the interval, so that a process alone (or the one whose
      // timer comes first) takes it again on its next tick.
      const leaseSeconds = config.sweepIntervalSeconds * 0.9;
      let sweeping = false; // a round longer than the interval is not joined by this process's next
      sweeper = setInterval(() => {
        if (sweeping) return;
        sweeping = true;
        void (async () => {
          try {
            const mine = await claimSweep(database.knex, 'expired-rows', leaseSeconds).catch((err: unknown) => {
              logger.warn({ err }, 'sweep of expired rows skipped: its lease could not be read');
              return false;
            });
            if (!mine) return;
            for (const sweep of sweeps) await sweep().catch((err: unknown) => logger.warn({ err }, 'sweep of expired rows failed'));
          } finally {
            sweeping = false;
          }
        })();
      }, config.sweepIntervalSeconds * 1000);
      sweeper.unref();
    }

    return {
      config,
      logger,
      database,
      services,
      holder,
      koa,
      callback: koa.callback(),
      fastIntrospection,
      fastClientCredentials,
      fastPassword,
      routes: [health, ...routers].flatMap((r) =>
        r.stack.flatMap((layer) => layer.methods.filter((m) => m !== 'HEAD').map((m) => ({ method: m.toLowerCase(), path: String(layer.path) }))),
      ),
      startDraining() {
        draining = true;
      },
      async close() {
        draining = true;
        holder.stop();
        metrics.close();
        if (sweeper) clearInterval(sweeper);
        await listener?.stop();
        await database.close();
      },
    };
  } catch (err) {
    metrics.close();
    await listener?.stop();
    await database.close();
    throw err;
  }
}
