import { parse as parseForm } from 'node:querystring';
import type Koa from 'koa';
import type { Metrics } from '../metrics';
import { plausibleClientId } from './client-model';
import { basicCredentials, plainFormRequest, readBody, type FastPath } from './fast-form';

/** RFC 6749 §3.3 scope syntax, as the library checks it (helpers/is_valid_scope.js). */
const SCOPE_SYNTAX = /^[\x21\x23-\x5B\x5D-\x7E]+(?: [\x21\x23-\x5B\x5D-\x7E]+)*$/;

/**
 * The token endpoint's fast paths, one per grant type (fast-client-credentials.ts,
 * fast-password.ts): the request each may answer — a form of single values from a client
 * authenticating with client_secret_basic, without DPoP — is read here once, then given to the
 * grant's own path. Whatever a path does not answer goes to oidc-provider with its body replayed.
 */
export interface TokenRequest {
  credentials: { id: string; secret: string };
  /** Every member a single string (a repeated one sends the request to the library); `scope`, when given, in the scope syntax. */
  form: Record<string, string>;
}

/** One grant type's fast path: switchable, and counted. */
export interface FastGrant {
  /** Off: every request of this grant type goes through oidc-provider (a kill switch, and the tests' reference). */
  enabled: boolean;
  /** Requests answered here (not handed to the library). */
  served: number;
  /** True: answered. False: the library's to answer, and nothing of it done here yet. */
  answer(ctx: Koa.Context, request: TokenRequest): Promise<boolean>;
}

export function createFastToken(deps: { grants: Record<string, FastGrant>; bodyLimitBytes: number; metrics: Pick<Metrics, 'failures'> }): Pick<FastPath, 'handle'> {
  const grants = new Map(Object.entries(deps.grants));
  const anyEnabled = () => {
    for (const grant of grants.values()) if (grant.enabled) return true;
    return false;
  };
  return {
    async handle(ctx) {
      if (!anyEnabled() || ctx.method !== 'POST') return { handled: false };
      if (ctx.headers.dpop !== undefined || !plainFormRequest(ctx, deps.bodyLimitBytes)) return { handled: false };
      const credentials = basicCredentials(ctx.get('authorization'));
      if (!credentials || !plausibleClientId(credentials.id)) return { handled: false };

      const body = await readBody(ctx, deps.metrics, 'token');
      if (!body) return { handled: true }; // the caller went away mid-body: answered
      const form = parseForm(body.toString('utf8'));
      for (const value of Object.values(form)) if (typeof value !== 'string') return { handled: false, body };
      // The library's token endpoint refuses a scope out of syntax for every grant, before its handler.
      if (form.scope && !SCOPE_SYNTAX.test(form.scope as string)) return { handled: false, body };
      const grant = typeof form.grant_type === 'string' ? grants.get(form.grant_type) : undefined;
      if (!grant?.enabled) return { handled: false, body };
      return (await grant.answer(ctx, { credentials, form: form as Record<string, string> })) ? { handled: true } : { handled: false, body };
    },
  };
}
