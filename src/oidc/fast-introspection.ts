import { parse as parseForm } from 'node:querystring';
import type Koa from 'koa';
import type Provider from 'oidc-provider';
import type { ClientRecord, ClientRepository } from '../clients/repository';
import type { Logger } from '../log';
import type { Metrics } from '../metrics';
import { isDatabaseUnavailable } from '../db/unavailable';
import { plausibleClientId, recordSecretMatches } from './client-model';
import type { IntrospectionPolicy } from './introspection';
import { opaqueTokenId } from './token-id';
import { basicChallenge } from '../http/challenge';
import { answerFailure, basicCredentials, CLIENT_AUTH_PARAMS, endpointHeaders, plainFormRequest, readBody, type FastPath } from './fast-form';

/**
 * RFC 7662 introspection of an opaque access token by a resource server authenticating with
 * client_secret_basic — nearly every introspection a deployment sees — answered without
 * oidc-provider's request pipeline (parameter assembly, client authentication, a JWT decode of
 * every opaque token), which costs more CPU than the rest of the request together.
 *
 * Only the HTTP handling is ours. The token is read and judged by the library's own models
 * (`find`, `isValid`, the Grant checks of its introspection endpoint) and by the same policy, on
 * every request: nothing about a token is cached. Anything that is not the plain case goes to the
 * library unchanged — another authentication method, a wrong secret, a caller without the
 * introspection permission, extra or repeated parameters, a JWT, a refresh token, a token with
 * authorization details or a sender constraint — its body replayed (it is read once the request
 * carries a Basic credential, and the caller is looked up only then, as the library does).
 * tests/integration/fast-introspection.test.ts compares the two paths answer for answer.
 */
export type FastIntrospection = FastPath;

interface Deps {
  provider: () => Provider;
  /** Cached lookups (src/cache/lookups.ts), as oidc-provider's Client model reads them. */
  clients: Pick<ClientRepository, 'find'>;
  policy: IntrospectionPolicy;
  bodyLimitBytes: number;
  logger: Logger;
  metrics: Pick<Metrics, 'failures'>;
}

/** What the library's AccessToken / ClientCredentials models carry that the answer reads. */
interface FoundToken {
  kind: string;
  isValid: boolean;
  jti: string;
  clientId: string;
  accountId?: string;
  grantId?: string;
  sid?: string;
  exp?: number;
  iat?: number;
  aud?: string | string[];
  scope?: string;
  tokenType: string;
  extra?: Record<string, unknown>;
  rar?: unknown;
  jkt?: string;
  'x5t#S256'?: string;
}

type Caller = { client: ClientRecord } | { unknown: true } | undefined;

/**
 * The authenticated resource server, `unknown` for a client id that names no enabled client,
 * undefined for anything the library must judge (it answers with its own error). Looked up once
 * the body has arrived, as the library does: a slow body is judged on the client as it is then.
 */
async function callerOf(deps: Deps, credentials: { id: string; secret: string }): Promise<Caller> {
  // As the library's Client adapter: ids that cannot be ours are not looked up.
  if (!plausibleClientId(credentials.id)) return { unknown: true };
  const client = await deps.clients.find(credentials.id);
  if (!client || client.disabled) return { unknown: true };
  if (client.tokenEndpointAuthMethod !== 'client_secret_basic' || !client.introspection) return undefined;
  return recordSecretMatches(client, credentials.secret, Date.now()) ? { client } : undefined;
}

/** The library's answer to a Basic credential naming no client (shared/client_auth.js). */
function unknownClient(ctx: Koa.Context, issuer: string): void {
  ctx.status = 401;
  endpointHeaders(ctx);
  ctx.set('WWW-Authenticate', basicChallenge(issuer, 'client authentication failed'));
  ctx.body = { error: 'invalid_client', error_description: 'client authentication failed' };
}

export function createFastIntrospection(deps: Deps & { enabled: boolean }): FastIntrospection {
  const fast: FastIntrospection = {
    enabled: deps.enabled,
    served: 0,
    async handle(ctx) {
      if (!fast.enabled || ctx.method !== 'POST' || !plainFormRequest(ctx, deps.bodyLimitBytes)) return { handled: false };
      const credentials = basicCredentials(ctx.get('authorization'));
      if (!credentials) return { handled: false };

      const body = await readBody(ctx, deps.metrics, 'introspection');
      if (!body) return { handled: true }; // the caller went away mid-body: answered
      const params = parseForm(body.toString('utf8'));
      // The library checks the body's client parameters before it looks the client up.
      if (CLIENT_AUTH_PARAMS.some((p) => params[p] !== undefined)) return { handled: false, body };
      let caller: Caller;
      try {
        caller = await callerOf(deps, credentials);
      } catch (err) {
        if (!isDatabaseUnavailable(err)) return { handled: false, body }; // the library meets it and answers its way
        // The database is away: say so now, not after the library has waited for it again.
        answerFailure(ctx, err, deps.logger, 'introspection', 'introspection failed');
        return { handled: true };
      }
      if (!caller) return { handled: false, body };
      if ('unknown' in caller) {
        unknownClient(ctx, deps.provider().issuer);
        deps.metrics.failures.inc({ endpoint: 'introspection', error: 'invalid_client' });
        fast.served += 1;
        return { handled: true };
      }
      const token = params.token;
      const hint = params.token_type_hint;
      if (typeof token !== 'string' || !token || token.includes('.') || (hint !== undefined && typeof hint !== 'string')) {
        return { handled: false, body };
      }

      try {
        const answer = await introspect(deps, caller.client, token);
        if (!answer) return { handled: false, body };
        ctx.status = 200;
        endpointHeaders(ctx);
        ctx.body = answer;
        fast.served += 1;
        return { handled: true };
      } catch (err) {
        answerFailure(ctx, err, deps.logger, 'introspection', 'introspection failed');
        return { handled: true };
      }
    },
  };
  return fast;
}

/** The library's introspection of one opaque token, for our policy; undefined: leave it to the library. */
async function introspect(deps: Deps, client: ClientRecord, value: string): Promise<Record<string, unknown> | undefined> {
  const provider = deps.provider();
  // One batched statement reads all three kinds (src/oidc/adapter.ts), as the library's lookup does.
  const found = (await Promise.all([provider.AccessToken.find(value), provider.ClientCredentials.find(value), provider.RefreshToken.find(value)])).filter(
    (t) => t !== undefined,
  ) as unknown as FoundToken[];
  if (found.length === 0) return { active: false };
  const token = found[0]!;
  if (found.length > 1 || token.kind === 'RefreshToken') return undefined;
  if (token.rar !== undefined || token.jkt !== undefined || token['x5t#S256'] !== undefined) return undefined;
  if (!token.isValid) return { active: false };
  let sessionStart: number | undefined;
  if (token.grantId) {
    const grant = await provider.Grant.find(token.grantId, { ignoreExpiration: true });
    if (!grant || grant.isExpired || grant.clientId !== token.clientId || grant.accountId !== token.accountId) return { active: false };
    sessionStart = grant.iat;
  }
  const caller = { clientId: client.id, introspection: client.introspection, tenants: client.tenants, admin: client.admin, tokens_not_before: client.tokensNotBefore };
  if (!(await deps.policy(caller, token, { sessionStart }))) return { active: false };
  // Built as the library builds it, Object.assign(answer, { ...extra, active: true, … }): the
  // token's extra claims may name a `sub` of their own, and the token's own fields win. Written
  // out as assignments in that order (same keys, same order, same values), not as a spread of
  // `extra` into a literal: on Node 20 that form made ~5 % of all allocation survive into the
  // old generation (`--trace-gc-nvp`, 5.5 % against 2.0 %), and the full collections that
  // follow were the p99 at 70 % load (bench/NOTES.md).
  const answer: Record<string, unknown> = { active: false };
  if (token.accountId) answer.sub = token.accountId;
  const extra = token.extra ?? {};
  for (const key of Object.keys(extra)) answer[key] = extra[key];
  answer.active = true;
  answer.client_id = token.clientId;
  answer.exp = token.exp;
  answer.iat = token.iat;
  answer.sid = token.sid;
  answer.iss = provider.issuer;
  // An opaque token is its own id: the stable, non-secret one of middleware.ts instead.
  answer.jti = token.jti !== value ? token.jti : opaqueTokenId(value);
  answer.aud = token.aud;
  // Never from extra claims: the library sets these from the token itself (declined above).
  answer.authorization_details = undefined;
  answer.cnf = undefined;
  answer.scope = token.scope || undefined;
  answer.token_type = token.tokenType;
  return answer;
}
