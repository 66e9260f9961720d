import type Koa from 'koa';
import type { TenantRepository } from '../tenants/repository';
import type { Logger } from '../log';
import type { Metrics } from '../metrics';
import { isDatabaseUnavailable } from '../db/unavailable';
import { grantedScopes } from './resource';
import { requestedTenantIdOf, resolveTenant } from './tenant';
import type { OidcClient } from './user-tokens';
import { answerFailure, endpointHeaders } from './fast-form';
import type { FastGrant, TokenRequest } from './fast-token';
import { loginOrigin, passwordLogin, type PasswordLoginDeps } from './password-grant';

/**
 * The password grant of a client authenticating with client_secret_basic, answered without
 * oidc-provider's request pipeline (its parameter assembly and client authentication, a second
 * Koa context, two nested routers): under a burst of logins at a production bcrypt cost, the
 * event loops' share of the cores is what the hashing does not get (README, Benchmark).
 *
 * The login is the library path's own (passwordLogin, password-grant.ts): the same user lookup,
 * counters, bcrypt work, session and tokens. What is decided before it goes to the library
 * unchanged, its body replayed, whenever the plain case does not hold: another authentication
 * method, a wrong secret, an unknown or disabled client, a grant the client may not use, a missing
 * user name or password, a scope it may not have, a tenant it does not
 * serve or none, DPoP, CORS, or any other parameter. Once the login has begun (an attempt counted,
 * a password evaluated), its answer is given here, as the library gives it: the same generic
 * invalid_grant, the 429 with Retry-After, a database outage's 503, and the failure counted in the
 * metrics as the library's `grant.error` counts it. Nobody listens to the library's
 * `grant.success`, which is not emitted here. tests/integration/fast-password.test.ts sends every
 * request to both paths and compares the answers, the rows stored and the counters left.
 */
export type FastPassword = FastGrant;

/** The only form members a plain request has; anything else (even one the library would drop) is the library's. */
const PLAIN_PARAMS = new Set(['grant_type', 'username', 'password', 'scope', 'tenant']);

/**
 * An error of a login under way, answered as the library's error handler answers it
 * (shared/error_handler.js, helpers/err_out.js): an exposed error as itself, counted as its
 * `grant.error` event counts it (holder.ts); anything else a server_error, the database away a
 * 503 (middleware.ts). The login throws only invalid_grant, the throttle's 429 and unexposed
 * errors; the rest is here so that a new refusal is never answered differently on this path.
 */
function answerLoginError(ctx: Koa.Context, err: unknown, deps: { logger: Logger; metrics: Pick<Metrics, 'failures'> }): void {
  const e = err as { expose?: unknown; message?: unknown; error?: unknown; error_description?: unknown; scope?: unknown; statusCode?: unknown } | undefined;
  if (!e?.expose) {
    answerFailure(ctx, err, deps.logger, 'token', 'password grant failed');
    if (typeof e?.statusCode === 'number' && !isDatabaseUnavailable(err)) ctx.status = e.statusCode;
    return;
  }
  ctx.status = typeof e.statusCode === 'number' ? e.statusCode : 500;
  ctx.body = {
    error: e.message,
    ...(e.error_description !== undefined ? { error_description: e.error_description } : {}),
    ...(e.scope !== undefined ? { scope: e.scope } : {}),
  };
  deps.metrics.failures.inc({ endpoint: 'token', error: typeof e.error === 'string' ? e.error : 'unknown' });
}

export function createFastPassword(
  deps: PasswordLoginDeps & {
    /** Cached lookups (src/cache/lookups.ts), as the provider's hooks read them. */
    tenants: Pick<TenantRepository, 'find'>;
    logger: Logger;
    metrics: Pick<Metrics, 'failures'>;
    enabled: boolean;
  },
): FastPassword {
  /**
   * The client and tenant of a plain, valid request, as the library's pipeline and our handler
   * would find them, with the provider they were found through (a key rotation may replace the
   * provider mid-login: the session's tokens are the same provider's models, as on the library
   * path); else undefined.
   */
  async function judge(ctx: Koa.Context, { credentials, form }: TokenRequest) {
    const context = deps.context();
    // Through our cached Client adapter: disabled clients do not exist for it.
    const client = (await context.provider.Client.find(credentials.id)) as OidcClient | undefined;
    if (!client || client.tokenEndpointAuthMethod !== 'client_secret_basic') return undefined;
    if (!client.grantTypeAllowed('password') || !(await client.compareClientSecret(credentials.secret))) return undefined;
    // The library reads an empty parameter as absent.
    const granted = grantedScopes(client, form.scope || undefined);
    if (granted.denied) return undefined;
    // A tenant the client does not serve throws the library's invalid_request: the caller hands it over.
    const tenant = await resolveTenant(deps.tenants, requestedTenantIdOf((name) => ctx.get(name), form), client.tenants ?? []);
    if (!tenant) return undefined;
    return { context, client, tenant, scope: granted.scope };
  }

  const fast: FastPassword = {
    enabled: deps.enabled,
    served: 0,
    async answer(ctx, request) {
      const { form } = request;
      for (const key of Object.keys(form)) if (!PLAIN_PARAMS.has(key)) return false;
      const { username, password } = form;
      if (!username || !password) return false;

      let judged: Awaited<ReturnType<typeof judge>>;
      try {
        judged = await judge(ctx, request);
      } catch (err) {
        // Nothing is counted yet: any refusal, or a failure that is not the database's, is the library's to answer.
        if (!isDatabaseUnavailable(err)) return false;
        answerFailure(ctx, err, deps.logger, 'token', 'password grant failed');
        return true;
      }
      if (!judged) return false;

      // From here on the login is under way: its answer, whatever it is, is given here. The
      // library's CORS and no-cache headers come first, as its middleware sets them before the
      // grant handler (which may add Retry-After).
      fast.served += 1;
      endpointHeaders(ctx);
      const { context, ...login } = judged;
      try {
        const answer = await passwordLogin(
          { ...deps, context: () => context },
          { ...login, username, password, from: loginOrigin(ctx), retryAfter: (seconds) => ctx.set('Retry-After', String(seconds)) },
        );
        ctx.status = 200;
        ctx.body = answer;
      } catch (err) {
        answerLoginError(ctx, err, deps);
      }
      return true;
    },
  };
  return fast;
}
