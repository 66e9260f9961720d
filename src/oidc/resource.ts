import { errors } from 'oidc-provider';
import type { Tenant } from '../tenants/repository';
import type { PortcullisClientExtras } from './client-model';
import { resourceSyntaxError } from './resource-uri';
import type { SigningAlg } from '../keys/service';

export interface ResourceInfo {
  audience: string;
  scope: string;
  accessTokenTTL: number;
  accessTokenFormat: 'opaque' | 'jwt';
  jwt?: { sign: { alg: SigningAlg; kid: string } };
}

/**
 * Every access token is for our one API audience. Its lifetime comes from the tenant's policy and
 * its format from the client (opaque by default, RFC 9068 JWT when asked), signed by the key that
 * is currently active — which is how "publish before use" works.
 */
export function resourceInfo(opts: {
  audience: string;
  client: Partial<PortcullisClientExtras>;
  tenant: Tenant | undefined;
  defaultTtl: number;
  signingKid: string;
  signingAlg: SigningAlg;
}): ResourceInfo {
  const jwt = opts.client.token_format === 'jwt';
  return {
    audience: opts.audience,
    scope: allowedScopes(opts.client).join(' '),
    accessTokenTTL: opts.tenant?.policy.accessTokenTtlSeconds ?? opts.defaultTtl,
    accessTokenFormat: jwt ? 'jwt' : 'opaque',
    ...(jwt ? { jwt: { sign: { alg: opts.signingAlg, kid: opts.signingKid } } } : {}),
  };
}

export function allowedScopes(client: Partial<PortcullisClientExtras>): string[] {
  return (client.allowed_scopes ?? '').split(' ').filter(Boolean);
}

/**
 * RFC 6749 §3.3: requested scopes must all be allowed (else the caller throws invalid_scope with
 * the first one denied); none requested means the client's whole allowed set.
 */
export function grantedScopes(client: Partial<PortcullisClientExtras>, requested: string | undefined): { scope: string[]; denied?: string } {
  const allowed = allowedScopes(client);
  const asked = (requested ?? '').split(' ').filter(Boolean);
  if (asked.length === 0) return { scope: allowed };
  const set = new Set(allowed);
  const denied = asked.find((s) => !set.has(s));
  return denied ? { scope: [], denied } : { scope: [...new Set(asked)] };
}

/**
 * The `resource` of a grant whose token can only be for our one audience (the password grant, and
 * a refresh checked before its token is rotated): absent, or exactly the audience. Anything else
 * throws invalid_target with the words oidc-provider's refresh grant uses.
 */
export function checkSingleResource(requested: unknown, audience: string): void {
  if (requested === undefined || requested === '') return;
  if (Array.isArray(requested)) throw new errors.InvalidTarget('only a single resource indicator value must be requested/resolved during Access Token Request');
  if (typeof requested !== 'string') throw new errors.InvalidTarget();
  const syntax = resourceSyntaxError(requested);
  if (syntax) throw new errors.InvalidTarget(syntax);
  if (requested !== audience) throw new errors.InvalidTarget();
}
