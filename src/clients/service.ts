import { z } from 'zod';
import { AppError } from '../errors';
import { generateId, generateSecret, hashSecret } from '../crypto/secrets';
import type { TenantRepository } from '../tenants/repository';
import type { ClientRecord, ClientRepository } from './repository';

export const GRANT_TYPES = ['client_credentials', 'password', 'refresh_token'] as const;
export const AUTH_METHODS = ['client_secret_basic', 'client_secret_post'] as const;
const SCOPE_TOKEN = /^[\x21\x23-\x5B\x5D-\x7E]+$/; // RFC 6749 §3.3 scope-token

export const newClientSchema = z.object({
  name: z.string().max(200).default(''),
  tenants: z.array(z.string().min(1)).default([]),
  grant_types: z.array(z.enum(GRANT_TYPES)).min(1).default(['client_credentials']),
  scope: z
    .string()
    .max(2000)
    .default('')
    .refine((s) => s === '' || s.split(' ').every((t) => SCOPE_TOKEN.test(t)), 'must be space-separated scope tokens'),
  token_endpoint_auth_method: z.enum(AUTH_METHODS).default('client_secret_basic'),
  token_format: z.enum(['opaque', 'jwt']).default('opaque'),
  introspection: z.boolean().default(false),
  admin: z.boolean().default(false),
});
export type NewClientInput = z.input<typeof newClientSchema>;

export interface CreatedClient {
  client: ClientRecord;
  /** Shown once: only hashes are stored. */
  clientSecret: string;
  apiKey: string;
}

export interface ClientService {
  create(input: NewClientInput): Promise<CreatedClient>;
}

export function createClientService(deps: { clients: ClientRepository; tenants: TenantRepository }): ClientService {
  return {
    async create(input) {
      const parsed = newClientSchema.safeParse(input);
      if (!parsed.success) {
        throw AppError.validation(parsed.error.issues.map((i) => ({ fieldName: i.path.join('.'), error: i.message })));
      }
      const v = parsed.data;
      if (!v.admin && v.tenants.length === 0) {
        throw AppError.validation([{ fieldName: 'tenants', error: 'a client needs at least one tenant (only a platform admin client has none)' }]);
      }
      if (v.tenants.length === 0 && v.grant_types.includes('password')) {
        // A platform admin client serves no tenant, and a user is always one tenant's.
        throw AppError.validation([{ fieldName: 'grant_types', error: 'password needs a tenant: a client of no tenant has no users to log in' }]);
      }
      if (v.grant_types.includes('refresh_token') && !v.grant_types.includes('password')) {
        throw AppError.validation([{ fieldName: 'grant_types', error: 'refresh_token needs a grant that issues refresh tokens (password)' }]);
      }
      // The password grant's sessions rotate refresh tokens: a password client can always refresh.
      const grantTypes = new Set(v.grant_types);
      if (grantTypes.has('password')) grantTypes.add('refresh_token');
      const tenants = [...new Set(v.tenants)];
      for (const t of tenants) {
        if (!(await deps.tenants.find(t))) throw AppError.validation([{ fieldName: 'tenants', error: `unknown tenant ${t}` }]);
      }
      let scope = v.scope.split(' ').filter(Boolean);
      if (v.admin && !scope.includes('admin')) scope = [...scope, 'admin'];
      const clientSecret = generateSecret(32);
      const apiKey = generateSecret(32);
      const client = await deps.clients.create({
        id: generateId('pc_'),
        name: v.name,
        secretHash: hashSecret(clientSecret),
        apiKeyHash: hashSecret(apiKey),
        grantTypes: [...grantTypes],
        scope: [...new Set(scope)].join(' '),
        tokenEndpointAuthMethod: v.token_endpoint_auth_method,
        tokenFormat: v.token_format,
        introspection: v.introspection,
        admin: v.admin,
        tenants,
      });
      return { client, clientSecret, apiKey };
    },
  };
}
