import type { Context } from 'koa';
import type { z } from 'zod';
import { AppError } from '../errors';

/** Parses the JSON body with a zod schema, or throws the seed's 400 validation shape. */
export function validateBody<S extends z.ZodType>(ctx: Context, schema: S): z.infer<S> {
  const parsed = schema.safeParse((ctx.request as { body?: unknown }).body ?? {});
  if (!parsed.success) {
    throw AppError.validation(parsed.error.issues.map((i) => ({ fieldName: i.path.join('.') || 'body', error: i.message })));
  }
  return parsed.data;
}
