import { z } from 'zod';
import { tenantPolicySchema } from '../tenants/policy';
import { TENANT_ID_PATTERN } from '../tenants/repository';
import { AUTH_METHODS, GRANT_TYPES } from '../clients/service';
import { registrationSchema } from '../users/service';
import { UUID_PATTERN } from '../db/uuid';

export const paging = z.object({
  limit: z.coerce.number().int().min(1).max(200).default(50),
  after: z.string().max(200).optional(),
});

export const tenantCreate = z
  .object({
    id: z.string().regex(TENANT_ID_PATTERN, 'letters, digits, dot, dash or underscore; at most 64'),
    name: z.string().min(1).max(200).optional(),
    mode: z.enum(['sandbox', 'live']).default('sandbox'),
  })
  .strict();

export const tenantPatch = z
  .object({ name: z.string().min(1).max(200).optional(), mode: z.enum(['sandbox', 'live']).optional(), status: z.enum(['active', 'disabled']).optional() })
  .strict();

/** A policy change: fields to set; `null` returns a field to its default. */
export const policyPatch = z.object(Object.fromEntries(Object.entries(tenantPolicySchema.shape).map(([k, v]) => [k, (v as z.ZodOptional<z.ZodType>).unwrap().nullable().optional()]))).strict();

const scope = z.string().max(2000).regex(/^[\x21\x23-\x5B\x5D-\x7E]+( [\x21\x23-\x5B\x5D-\x7E]+)*$|^$/, 'space-separated scope tokens');

/** RFC 7591 client metadata names, plus ours. */
export const clientCreate = z
  .object({
    client_name: z.string().max(200).optional(),
    grant_types: z.array(z.enum(GRANT_TYPES)).min(1).optional(),
    scope: scope.optional(),
    token_endpoint_auth_method: z.enum(AUTH_METHODS).optional(),
    tenants: z.array(z.string().min(1).max(64)).max(100).optional(),
    token_format: z.enum(['opaque', 'jwt']).optional(),
    introspection: z.boolean().optional(),
  })
  .strict();

export const clientPatch = z
  .object({
    client_name: z.string().max(200).optional(),
    // As at creation (src/clients/service.ts): refresh_token alone would leave no grant to use.
    grant_types: z
      .array(z.enum(GRANT_TYPES))
      .min(1)
      .refine((g) => !g.includes('refresh_token') || g.includes('password'), 'refresh_token needs a grant that issues refresh tokens (password)')
      .optional(),
    scope: scope.optional(),
    token_format: z.enum(['opaque', 'jwt']).optional(),
    introspection: z.boolean().optional(),
    disabled: z.boolean().optional(),
  })
  .strict();

export const secretRotation = z.object({ overlap_seconds: z.number().int().min(0).max(30 * 86400).default(86400) }).strict();
/** An API key's rotation: no overlap unless asked for (a key is rotated most often because it leaked). */
export const apiKeyRotation = z.object({ overlap_seconds: z.number().int().min(0).max(90 * 86400).default(0) }).strict();

/** Admin registration: the user registration fields, terms accepted on the user's behalf, plus role and MFA. */
export const adminUserCreate = registrationSchema
  .omit({ acceptedTerms: true })
  .extend({ role: z.enum(['root', 'authorised']).optional(), mfaRequired: z.boolean().optional() })
  .strict();

/**
 * An admin's edit of a user: each field given is set, null removes an optional one (a user keeps at
 * least one identifier). The profile is replaced whole. A password given replaces the user's (a
 * reset: the user forgot it, or it leaked), checked against the tenant's password policy.
 */
export const userPatch = z
  .object({
    email: z.string().max(254).nullable().optional(),
    mobile: z.string().max(32).nullable().optional(),
    username: z.string().max(64).nullable().optional(),
    role: z.enum(['root', 'authorised']).optional(),
    group: z.string().min(1).max(100).nullable().optional(),
    profile: registrationSchema.shape.profile.unwrap().optional(),
    mfaRequired: z.boolean().optional(),
    password: registrationSchema.shape.password.optional(),
  })
  .strict();

// Users are paged by id, a uuid column: any other value is refused here, not by the database.
export const userSearch = paging.extend({ q: z.string().max(254).optional(), after: z.string().regex(UUID_PATTERN, 'must be a user id (a UUID)').optional() });

export const adminLogin = z.object({ client_id: z.string().min(1).max(256), scope: scope.optional() }).strict();

export const auditQuery = paging.extend({
  tenant: z.string().max(64).optional(),
  actor: z.string().max(256).optional(),
  type: z.string().max(100).optional(),
  // Years 1970 to 9999 in UTC (an offset may move the written year): the embedded database
  // refuses year 0 and year 10000, a 500 before this; nothing older than 1970 was ever audited.
  since: z.iso
    .datetime({ offset: true })
    .refine((v) => {
      const year = new Date(v).getUTCFullYear();
      return year >= 1970 && year <= 9999;
    }, 'must be a time between 1970 and 9999')
    .optional(),
  after: z.coerce.number().int().min(0).optional(),
});
