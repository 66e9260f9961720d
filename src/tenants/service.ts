import { z } from 'zod';
import { AppError } from '../errors';
import { TENANT_ID_PATTERN, type Tenant, type TenantRepository } from './repository';

export const newTenantSchema = z.object({
  id: z.string().regex(TENANT_ID_PATTERN, 'letters, digits, dot, dash or underscore; at most 64'),
  name: z.string().min(1).max(200).optional(),
  mode: z.enum(['sandbox', 'live']).default('sandbox'),
});

export interface TenantService {
  create(input: z.input<typeof newTenantSchema>): Promise<Tenant>;
}

export function createTenantService(deps: { tenants: TenantRepository }): TenantService {
  return {
    async create(input) {
      const parsed = newTenantSchema.safeParse(input);
      if (!parsed.success) {
        throw AppError.validation(parsed.error.issues.map((i) => ({ fieldName: i.path.join('.'), error: i.message })));
      }
      const { id, name, mode } = parsed.data;
      if (await deps.tenants.find(id)) throw new AppError('TENANT_EXISTS', 409, `tenant ${id} already exists`);
      try {
        return await deps.tenants.create({ id, name: name ?? id, mode });
      } catch (err) {
        if ((err as { code?: string }).code === '23505') throw new AppError('TENANT_EXISTS', 409, `tenant ${id} already exists`);
        throw err;
      }
    },
  };
}
