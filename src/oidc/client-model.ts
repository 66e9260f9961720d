import type { Adapter, AdapterPayload, ClientMetadata } from 'oidc-provider';
import type { ClientRecord, ClientRepository } from '../clients/repository';
import { verifySecret } from '../crypto/secrets';

/** Our metadata beyond RFC 7591, carried on oidc-provider's Client instances under these names. */
export const EXTRA_CLIENT_METADATA = [
  'allowed_scopes',
  'tenants',
  'token_format',
  'introspection',
  'admin',
  'previous_secret_hash',
  'previous_secret_expires_at',
  'tokens_not_before',
] as const;

export interface PortcullisClientExtras {
  /** Scopes are ours, not oidc-provider's static list: clients may be given any scope token. */
  allowed_scopes: string;
  tenants: string[];
  token_format: 'opaque' | 'jwt';
  introspection: boolean;
  admin: boolean;
  previous_secret_hash?: string;
  previous_secret_expires_at?: number;
  /** Tokens issued in or before this second stay inactive (src/oidc/not-before.ts). */
  tokens_not_before?: number;
}

export function toClientMetadata(c: ClientRecord): ClientMetadata & PortcullisClientExtras {
  return {
    client_id: c.id,
    client_name: c.name || undefined,
    // The hash stands where oidc-provider expects the secret; compareClientSecret below knows it.
    client_secret: c.secretHash,
    grant_types: c.grantTypes,
    response_types: [],
    redirect_uris: [],
    allowed_scopes: c.scope,
    token_endpoint_auth_method: c.tokenEndpointAuthMethod as ClientMetadata['token_endpoint_auth_method'],
    tenants: c.tenants,
    token_format: c.tokenFormat,
    introspection: c.introspection,
    admin: c.admin,
    tokens_not_before: c.tokensNotBefore,
    ...(c.previousSecretHash && c.previousSecretExpiresAt
      ? {
          previous_secret_hash: c.previousSecretHash,
          previous_secret_expires_at: Math.floor(c.previousSecretExpiresAt.getTime() / 1000),
        }
      : {}),
  };
}

/** Ids that cannot name a client of ours are not looked up at all. */
export function plausibleClientId(id: string): boolean {
  return !id.includes('\u0000') && id.length <= 256;
}

/** oidc-provider's Client model reads the `clients` table; disabled clients do not exist for it. */
export class ClientAdapter implements Adapter {
  constructor(private readonly clients: Pick<ClientRepository, 'find'>) {}

  async find(id: string): Promise<AdapterPayload | undefined> {
    if (!plausibleClientId(id)) return undefined;
    const c = await this.clients.find(id);
    if (!c || c.disabled) return undefined;
    return toClientMetadata(c) as AdapterPayload;
  }

  async upsert(): Promise<void> {
    throw new Error('clients are managed through the admin API and CLI');
  }
  async findByUid(): Promise<undefined> {
    return undefined;
  }
  async findByUserCode(): Promise<undefined> {
    return undefined;
  }
  async consume(): Promise<void> {}
  async destroy(): Promise<void> {}
  async revokeByGrantId(): Promise<void> {}
}

/**
 * A presented secret against a client's stored hash, in constant time; during a rotation's
 * overlap the previous secret is accepted too.
 */
export function secretMatches(
  stored: { hash?: string; previousHash?: string; previousExpiresAt?: number },
  actual: string,
  now: number,
): boolean {
  const current = verifySecret(actual, stored.hash);
  const previous = !!stored.previousHash && !!stored.previousExpiresAt && stored.previousExpiresAt * 1000 > now && verifySecret(actual, stored.previousHash);
  return current || previous;
}

/** A presented secret against a client record's current (and, during an overlap, previous) secret. */
export function recordSecretMatches(client: ClientRecord, actual: string, now: number): boolean {
  const stored = {
    hash: client.secretHash,
    previousHash: client.previousSecretHash ?? undefined,
    previousExpiresAt: client.previousSecretExpiresAt ? Math.floor(client.previousSecretExpiresAt.getTime() / 1000) : undefined,
  };
  return secretMatches(stored, actual, now);
}

/** Replaces oidc-provider's plaintext secret comparison: the stored value is a hash (secretMatches). */
export function hashedSecretComparison(now: () => number = () => Date.now()) {
  return function compareClientSecret(this: { clientSecret?: string } & Partial<PortcullisClientExtras>, actual: string): boolean {
    return secretMatches({ hash: this.clientSecret, previousHash: this.previous_secret_hash, previousExpiresAt: this.previous_secret_expires_at }, actual, now());
  };
}
