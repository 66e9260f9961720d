import { parsePhoneNumberWithError } from 'libphonenumber-js';
import { z } from 'zod';

export type IdentifierKind = 'email' | 'mobile' | 'username';

const USERNAME = /^[a-z0-9][a-z0-9._-]{2,63}$/;
const emailSchema = z.email();

export function normalizeEmail(value: string): string | undefined {
  const v = value.trim().toLowerCase();
  return v.length <= 254 && emailSchema.safeParse(v).success ? v : undefined;
}

/** Mobile numbers are stored in E.164 and must be valid numbers. */
export function normalizeMobile(value: string): string | undefined {
  const v = value.trim();
  if (!/^\+[1-9]\d{6,14}$/.test(v)) return undefined;
  try {
    const phone = parsePhoneNumberWithError(v);
    return phone.isValid() ? phone.number : undefined;
  } catch {
    return undefined;
  }
}

export function normalizeUsername(value: string): string | undefined {
  const v = value.trim().toLowerCase();
  return USERNAME.test(v) ? v : undefined;
}

export const IDENTIFIER_KINDS: readonly IdentifierKind[] = ['email', 'mobile', 'username'];

/**
 * An identifier field's value normalised, or, when it is not one, the validation error the field
 * gets: the same at registration and in an admin's edit of a user.
 */
export function normalizeIdentifier(kind: IdentifierKind, value: string): { value: string } | { error: string } {
  const normal = kind === 'email' ? normalizeEmail(value) : kind === 'mobile' ? normalizeMobile(value) : normalizeUsername(value);
  if (normal !== undefined) return { value: normal };
  return {
    error:
      kind === 'email' ? 'must be a valid email address'
      : kind === 'mobile' ? 'must be a valid mobile number in E.164 format, e.g. +447911123456'
      : '3 to 64 characters: letters, digits, dot, dash or underscore',
  };
}

/** The error of a user with no identifier, named on `email` (registration and an admin's edit). */
export const IDENTIFIER_REQUIRED = { fieldName: 'email', error: 'one of email, mobile or username is required' } as const;

/** A login `username` may be any of the three identifiers; its shape says which. */
export function classifyLogin(value: string): { kind: IdentifierKind; value: string } | undefined {
  const v = value.trim();
  if (v.includes('@')) {
    const email = normalizeEmail(v);
    return email ? { kind: 'email', value: email } : undefined;
  }
  if (v.startsWith('+')) {
    const mobile = normalizeMobile(v);
    return mobile ? { kind: 'mobile', value: mobile } : undefined;
  }
  const username = normalizeUsername(v);
  return username ? { kind: 'username', value: username } : undefined;
}
