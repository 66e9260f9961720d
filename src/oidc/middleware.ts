import type Provider from 'oidc-provider';
import { SIGNING_ALGS } from '../keys/service';
import type { KoaContextWithOIDC } from 'oidc-provider';
import { createLocalJWKSet, jwtVerify, type JSONWebKeySet } from 'jose';
import { mayIntrospect, type IntrospectionPolicy } from './introspection';
import { opaqueTokenId } from './token-id';
import type { Logger } from '../log';
import { isDatabaseUnavailable, RETRY_AFTER_SECONDS } from '../db/unavailable';
import type { PortcullisClientExtras } from './client-model';
import { authChallenge, basicChallenge } from '../http/challenge';

const CLIENT_AUTH_ROUTES = new Set(['token', 'introspection', 'revocation']);
const JWT_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

type PortcullisClient = { clientId: string } & Partial<PortcullisClientExtras>;


/** Fail closed and say so: no token, no `active`, no revocation pretended — retry later. */
export function answerUnavailable(ctx: { status: number; set(k: string, v: string): void; body: unknown }): void {
  ctx.status = 503;
  ctx.set('Retry-After', String(RETRY_AFTER_SECONDS));
  ctx.set('Cache-Control', 'no-store');
  ctx.body = { error: 'temporarily_unavailable', error_description: 'the service is temporarily unavailable; try again later' };
}

function sentClientCredentials(ctx: KoaContextWithOIDC): boolean {
  const body = ctx.oidc.body as Record<string, unknown> | undefined;
  return ctx.get('authorization') !== '' || body?.client_id !== undefined || body?.client_assertion !== undefined;
}

/**
 * The library's refusals of client authentication that RFC 6749 §5.2 calls invalid_client: an
 * Authorization header it cannot read as Basic credentials with a secret (oidc-provider's
 * lib/shared/client_auth.js), and credentials of a method it does not support, which it reports as none.
 * Matched by oidc-provider 9's wording: a release that rewords them fails token-service.test.ts.
 */
const UNREADABLE_BASIC = new Set([
  'invalid authorization header value format',
  'client_id and client_secret in the authorization header are not properly encoded',
  'client_secret must be provided in the Authorization header',
]);
function failedClientAuthentication(ctx: KoaContextWithOIDC): boolean {
  const body = ctx.body as { error?: unknown; error_description?: unknown } | undefined;
  if (body?.error !== 'invalid_request' || typeof body.error_description !== 'string') return false;
  if (ctx.get('authorization') !== '' && UNREADABLE_BASIC.has(body.error_description)) return true;
  return body.error_description === 'no client authentication mechanism provided';
}

/**
 * Middleware inside oidc-provider (provider.use), shaping replies of its endpoints:
 * - RFC 6749 §5.2: a request with no client authentication at all, an unreadable Authorization
 *   header or an unsupported method is 401 invalid_client (the library answers 400
 *   invalid_request), and every 401 carries its challenge (RFC 9110 §15.5.2).
 * - Introspection is for resource servers only: an authenticated client without the permission
 *   is refused outright, whatever the token, so it cannot learn which strings are live tokens.
 * - Opaque tokens get a stable, non-secret `jti` in introspection (their id is the token itself).
 * - Our own JWT access tokens are introspected by verifying them (the library refuses
 *   structured tokens); anything else JWT-shaped is `{active: false}`.
 */
export function installProviderMiddleware(provider: Provider, publicJwks: JSONWebKeySet, policy: IntrospectionPolicy, logger: Logger): void {
  const localKeys = createLocalJWKSet(publicJwks);
  // Errors the library turns into a generic 500: logged here by name only (no request data).
  provider.on('server_error', (ctx: KoaContextWithOIDC | undefined, err: Error) => {
    if (ctx && isDatabaseUnavailable(err)) {
      ctx.state.databaseUnavailable = true;
      logger.warn({ err, route: ctx.oidc?.route }, 'database unavailable');
      return;
    }
    logger.error({ err, route: ctx?.oidc?.route }, 'oidc-provider server_error');
  });

  async function introspectJwt(ctx: KoaContextWithOIDC, token: string): Promise<Record<string, unknown>> {
    let payload: Record<string, unknown>;
    try {
      ({ payload } = await jwtVerify(token, localKeys, { issuer: provider.issuer, typ: 'at+jwt', algorithms: [...SIGNING_ALGS] }));
    } catch {
      return { active: false }; // not ours, forged, expired: that is the answer
    }
    // From here on an error is the database's, not the token's: it propagates (503), never "inactive".
    const isUser = typeof payload.member_id === 'string';
    // A user's JWT lives only as long as its session (sid): logout and reuse detection end it.
    const grant = isUser && typeof payload.sid === 'string' ? await provider.Grant.find(payload.sid) : undefined;
    if (isUser && (!grant || grant.isExpired)) return { active: false };
    const allowed = await policy(
      ctx.oidc.client as unknown as PortcullisClient,
      {
        clientId: typeof payload.client_id === 'string' ? payload.client_id : undefined,
        accountId: isUser ? (payload.sub as string) : undefined,
        iat: typeof payload.iat === 'number' ? payload.iat : undefined,
        extra: payload,
      },
      { fresh: true, sessionStart: grant?.iat },
    );
    if (!allowed) return { active: false };
    return { ...payload, active: true, token_type: 'Bearer' };
  }

  /** Whether `token` is a JWT access token this server signed that has not expired. */
  async function isOurValidJwt(token: string): Promise<boolean> {
    if (!JWT_SHAPE.test(token)) return false;
    try {
      await jwtVerify(token, localKeys, { issuer: provider.issuer, typ: 'at+jwt', algorithms: [...SIGNING_ALGS] });
      return true;
    } catch {
      return false;
    }
  }

  provider.use(async (ctx, next) => {
    await next();
    if (ctx.state.databaseUnavailable) {
      answerUnavailable(ctx);
      return;
    }
    const oidcCtx = ctx as KoaContextWithOIDC;
    const oidc = oidcCtx.oidc;
    if (!oidc?.route || !CLIENT_AUTH_ROUTES.has(oidc.route)) return;

    if (ctx.status === 400 && !oidc.client && !sentClientCredentials(oidcCtx)) {
      ctx.status = 401;
      ctx.set('WWW-Authenticate', authChallenge('Basic', provider.issuer));
      ctx.body = { error: 'invalid_client', error_description: 'client authentication is required' };
      return;
    }
    if (ctx.status === 400 && !oidc.client && failedClientAuthentication(oidcCtx)) {
      // RFC 6749 §5.2: an Authorization header that authenticates no one, or a method this server
      // does not support (a client_assertion), is invalid_client, a 401 with its challenge.
      const description = (ctx.body as { error_description?: string }).error_description ?? '';
      ctx.status = 401;
      ctx.set('WWW-Authenticate', basicChallenge(provider.issuer, description));
      ctx.body = { error: 'invalid_client', error_description: description };
      return;
    }
    if (ctx.status === 401 && !ctx.response.get('WWW-Authenticate')) {
      // RFC 9110 §15.5.2: every 401 carries a challenge; the library sends one only when the
      // refused credentials came in the Authorization header (client_secret_post gets it too).
      const description = (ctx.body as { error_description?: string } | undefined)?.error_description;
      ctx.set('WWW-Authenticate', basicChallenge(provider.issuer, description));
    }
    if (oidc.route === 'token' && ctx.status === 200) {
      // Seed 002: a user's token reply names the user; the library's refresh reply does not.
      const account = oidc.entities.Account as { accountId?: string } | undefined;
      const body = ctx.body as Record<string, unknown> | undefined;
      if (account?.accountId && body && body.member_id === undefined) body.member_id = account.accountId;
      return;
    }
    if (oidc.route === 'revocation') {
      // The library refuses every token shaped as a JWT (after the client authenticated). Only a
      // JWT access token of this server's, still valid, is a token it cannot revoke (RFC 7009
      // §2.2.1); anything else so shaped is an invalid token, which is not an error (§2.2).
      const token = (oidc.params as { token?: unknown } | undefined)?.token;
      const body = ctx.body as Record<string, unknown> | undefined;
      if (ctx.status === 400 && body?.error === 'unsupported_token_type' && typeof token === 'string' && !(await isOurValidJwt(token))) {
        ctx.status = 200;
        ctx.body = '';
      }
      return;
    }
    if (oidc.route !== 'introspection' || !oidc.client) return;

    if (!mayIntrospect(oidc.client as Partial<PortcullisClientExtras>)) {
      if (ctx.status === 200 || ctx.status === 400) {
        ctx.status = 403;
        ctx.body = { error: 'unauthorized_client', error_description: 'this client is not allowed to introspect tokens' };
      }
      return;
    }
    const token = (oidc.params as { token?: unknown } | undefined)?.token;
    if (typeof token !== 'string') return;
    const body = ctx.body as Record<string, unknown>;
    if (ctx.status === 400 && body?.error === 'unsupported_token_type' && JWT_SHAPE.test(token)) {
      try {
        ctx.body = await introspectJwt(oidcCtx, token);
        ctx.status = 200;
      } catch (err) {
        // Outside the library's own error handling: answer as it would, failing closed.
        if (isDatabaseUnavailable(err)) answerUnavailable(ctx);
        else {
          logger.error({ err }, 'introspection of a JWT failed');
          ctx.status = 500;
          ctx.body = { error: 'server_error', error_description: 'oops! something went wrong' };
        }
      }
      return;
    }
    if (ctx.status === 400 && body?.error === 'unsupported_token_type') {
      // RFC 7662 §2.2: a structured string this server never issues (five parts, as an encrypted
      // JWT; characters outside base64url) is an invalid token to an authorised caller: inactive.
      ctx.status = 200;
      ctx.body = { active: false };
      return;
    }
    if (ctx.status === 200 && body.active === true && body.jti === undefined) {
      body.jti = opaqueTokenId(token);
    }
  });
}
