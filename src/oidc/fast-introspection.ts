import type { IncomingMessage } from 'node:http';
import { parse as parseForm } from 'node:querystring';
import { Readable } from 'node:stream';
import type Koa from 'koa';
import type Provider from 'oidc-provider';
import type { ClientRecord, ClientRepository } from '../clients/repository';
import type { Logger } from '../log';
import type { Metrics } from '../metrics';
import { isDatabaseUnavailable } from '../db/unavailable';
import { plausibleClientId, secretMatches } from './client-model';
import type { IntrospectionPolicy } from './introspection';
import { answerUnavailable } from './middleware';
import { opaqueTokenId } from './token-id';

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
 * authorization details or a sender constraint — its body replayed when it had to be read.
 * tests/integration/fast-introspection.test.ts compares the two paths answer for answer.
 */
export interface FastIntrospection {
  /** Off: every introspection goes through oidc-provider (a kill switch, and the tests' reference). */
  enabled: boolean;
  /** Requests answered here (not handed to the library). */
  served: number;
  /** handled: answered; else hand the request to the library, with `body` replayed if it was read. */
  handle(ctx: Koa.Context): Promise<{ handled: true } | { handled: false; body?: Buffer }>;
}

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

const STRICT_BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const CLIENT_AUTH_PARAMS = ['client_id', 'client_secret', 'client_assertion', 'client_assertion_type'];

/** The library's decoding of one half of a Basic credential; undefined where it would refuse. */
function basicPart(raw: string): string | undefined {
  try {
    const value = decodeURIComponent(raw.replace(/\+/g, '%20'));
    return value && !/[^\x20-\x7E]/.test(value) ? value : undefined;
  } catch {
    return undefined;
  }
}

function basicCredentials(header: string | undefined): { id: string; secret: string } | undefined {
  if (!header) return undefined;
  const parts = header.split(' ');
  if (parts.length !== 2 || parts[0]!.toLowerCase() !== 'basic' || !parts[1] || !STRICT_BASE64.test(parts[1])) return undefined;
  const decoded = Buffer.from(parts[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon === -1) return undefined;
  const id = basicPart(decoded.slice(0, colon));
  const secret = basicPart(decoded.slice(colon + 1));
  return id && secret ? { id, secret } : undefined;
}

/** A request the library can read as if it arrived now: same headers and socket, body replayed. */
export function replayRequest(req: IncomingMessage, body: Buffer): IncomingMessage {
  const copy = Readable.from(body.length ? [body] : [], { objectMode: false }) as unknown as Record<string, unknown>;
  for (const key of ['headers', 'rawHeaders', 'trailers', 'rawTrailers', 'url', 'method', 'httpVersion', 'httpVersionMajor', 'httpVersionMinor', 'socket', 'complete'] as const) {
    copy[key] = req[key];
  }
  return copy as unknown as IncomingMessage;
}

/** The body, of a length the request declared and callerOf bounded (Node's parser holds it to that). */
async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks);
}

/**
 * The headers the library's endpoint sets on every answer: no caching, and its CORS answer to a
 * request without an Origin (one with an Origin is the library's: it checks the client's origins).
 */
function endpointHeaders(ctx: Koa.Context): void {
  ctx.set('Cache-Control', 'no-store');
  ctx.vary('Origin');
  ctx.set('Access-Control-Allow-Origin', '*');
  ctx.set('Access-Control-Expose-Headers', 'WWW-Authenticate');
}

/** The library's own limit on a form body (oidc-provider's selective_body). */
const LIBRARY_BODY_LIMIT = 56 * 1024;

type Caller = { client: ClientRecord } | { unknown: true } | undefined;

/**
 * The authenticated resource server, `unknown` for a client id that names no enabled client,
 * undefined for anything the library must judge (it answers with its own error).
 */
async function callerOf(deps: Deps, ctx: Koa.Context): Promise<Caller> {
  const h = ctx.headers;
  if (h.origin !== undefined || h['oauth-client-attestation'] !== undefined || h['oauth-client-attestation-pop'] !== undefined) return undefined;
  // The form, parsed as the library parses it, in UTF-8 (another charset is the library's to decode).
  if (ctx.is('application/x-www-form-urlencoded') === false) return undefined;
  const charset = ctx.request.charset.toLowerCase();
  if (charset !== '' && charset !== 'utf-8') return undefined;
  // A body of known length within the library's limit, so that it can always be read here.
  const length = ctx.request.length;
  if (length === undefined || length > Math.min(LIBRARY_BODY_LIMIT, deps.bodyLimitBytes)) return undefined;
  const credentials = basicCredentials(ctx.get('authorization'));
  if (!credentials) return undefined;
  // As the library's Client adapter: ids that cannot be ours are not looked up.
  if (!plausibleClientId(credentials.id)) return { unknown: true };
  const client = await deps.clients.find(credentials.id);
  if (!client || client.disabled) return { unknown: true };
  if (client.tokenEndpointAuthMethod !== 'client_secret_basic' || !client.introspection) return undefined;
  const stored = {
    hash: client.secretHash,
    previousHash: client.previousSecretHash ?? undefined,
    previousExpiresAt: client.previousSecretExpiresAt ? Math.floor(client.previousSecretExpiresAt.getTime() / 1000) : undefined,
  };
  return secretMatches(stored, credentials.secret, Date.now()) ? { client } : undefined;
}

/** The library's answer to a Basic credential naming no client (shared/client_auth.js). */
function unknownClient(ctx: Koa.Context, issuer: string): void {
  ctx.status = 401;
  endpointHeaders(ctx);
  ctx.set('WWW-Authenticate', `Basic realm="${issuer}", error="invalid_client", error_description="client authentication failed"`);
  ctx.body = { error: 'invalid_client', error_description: 'client authentication failed' };
}

export function createFastIntrospection(deps: Deps & { enabled: boolean }): FastIntrospection {
  const fast: FastIntrospection = {
    enabled: deps.enabled,
    served: 0,
    async handle(ctx) {
      if (!fast.enabled || ctx.method !== 'POST') return { handled: false };
      let caller: Caller;
      try {
        caller = await callerOf(deps, ctx);
      } catch (err) {
        // The database is away: say so now, not after the library has waited for it again.
        if (!isDatabaseUnavailable(err)) return { handled: false }; // the library meets it and answers its way
        deps.logger.warn({ err, route: 'introspection' }, 'database unavailable');
        endpointHeaders(ctx);
        answerUnavailable(ctx);
        return { handled: true };
      }
      if (!caller) return { handled: false };

      let body: Buffer;
      try {
        body = await readBody(ctx.req);
      } catch {
        // The caller went away mid-body: answered as the library does, if anyone still listens.
        ctx.status = 400;
        endpointHeaders(ctx);
        ctx.body = { error: 'invalid_request', error_description: 'failed to parse the request body' };
        deps.metrics.failures.inc({ endpoint: 'introspection', error: 'invalid_request' });
        return { handled: true };
      }
      const params = parseForm(body.toString('utf8'));
      // The library checks the body's client parameters before it looks the client up.
      if (CLIENT_AUTH_PARAMS.some((p) => params[p] !== undefined)) return { handled: false, body };
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
        endpointHeaders(ctx);
        if (isDatabaseUnavailable(err)) {
          deps.logger.warn({ err, route: 'introspection' }, 'database unavailable');
          answerUnavailable(ctx);
        } else {
          deps.logger.error({ err, route: 'introspection' }, 'introspection failed');
          ctx.status = 500;
          ctx.body = { error: 'server_error', error_description: 'oops! something went wrong' };
        }
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
  if (token.grantId) {
    const grant = await provider.Grant.find(token.grantId, { ignoreExpiration: true });
    if (!grant || grant.isExpired || grant.clientId !== token.clientId || grant.accountId !== token.accountId) return { active: false };
  }
  const caller = { clientId: client.id, introspection: client.introspection, tenants: client.tenants, admin: client.admin };
  if (!(await deps.policy(caller, token))) return { active: false };
  // Built as the library builds it, Object.assign(answer, { ...extra, active: true, … }): the
  // token's extra claims may name a `sub` of their own, and the token's own fields win. Written
  // out as assignments in that order (same keys, same order, same values), not as a spread of
  // `extra` into a literal: on Node 20 that form made ~5 % of all allocation survive into the
  // old generation (`--trace-gc-nvp`, 5.5 % against 2.0 %), and the full collections that
  // follow were the p99 at 70 % load (README, Benchmark).
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
