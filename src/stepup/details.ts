import { createHash } from 'node:crypto';
import { z } from 'zod';

/**
 * RFC 9396 authorization details of a payment (PSD2 RTS art. 5, dynamic linking): the amount and
 * the payee are bound to the challenge, shown to the user, signed by the device, and carried by
 * the step-up token.
 */
/** Control, format (bidi overrides, zero-width) and line/paragraph separators: a payee shown to the user must read as it is. */
const hasControl = (s: string) => /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/u.test(s);
const text = (max: number) => z.string().min(1).max(max).refine((s) => !hasControl(s), 'no control characters');

export const paymentInitiation = z
  .object({
    type: z.literal('payment_initiation'),
    instructedAmount: z
      .object({
        amount: z.string().regex(/^(0|[1-9]\d{0,14})(\.\d{1,2})?$/, 'a decimal amount such as "123.45"'),
        currency: z.string().regex(/^[A-Z]{3}$/, 'an ISO 4217 currency code'),
      })
      .strict(),
    creditorName: text(140).optional(),
    creditorAccount: z
      .object({
        iban: z.string().regex(/^[A-Z]{2}\d{2}[A-Z0-9]{10,30}$/, 'an IBAN without spaces').optional(),
        identification: text(64).optional(),
      })
      .strict()
      .refine((a) => a.iban || a.identification, 'iban or identification is required')
      .optional(),
    remittanceInformation: text(140).optional(),
  })
  .strict()
  .refine((d) => d.creditorName || d.creditorAccount, { message: 'creditorName or creditorAccount is required', path: ['creditorName'] });

export const authorizationDetailsSchema = z.array(paymentInitiation).min(1).max(5);
export type AuthorizationDetails = z.infer<typeof authorizationDetailsSchema>;

function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value && typeof value === 'object') {
    return `{${Object.keys(value as object)
      .filter((k) => (value as Record<string, unknown>)[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical((value as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(value);
}

/**
 * The binding hash: base64url(SHA-256(canonical JSON)) — keys sorted, no whitespace. The device
 * computes the same over the `authorization_details` it was sent and signs it as `bindingHash`.
 */
export function bindingHash(details: AuthorizationDetails): string {
  return createHash('sha256').update(canonical(details)).digest('base64url');
}

/** What the user reads: amount and payee of every payment. */
export function describe(details: AuthorizationDetails): string {
  return details
    .map((d) => {
      // The name with its account in brackets, or the account alone when no name was given.
      const account = d.creditorAccount?.iban ?? d.creditorAccount?.identification;
      const payee = d.creditorName && account ? `${d.creditorName} (${account})` : (d.creditorName ?? account ?? '');
      return `${d.instructedAmount.amount} ${d.instructedAmount.currency} to ${payee}`.replace(/\s+/g, ' ').trim();
    })
    .join('; ');
}
