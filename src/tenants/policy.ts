import { z } from 'zod';

/**
 * Per-tenant policy, stored as JSON on the tenant row. Every field is optional in storage; the
 * defaults below apply where a tenant has not set one, so new fields never need a data migration.
 */
const policyFields = z.object({
    accessTokenTtlSeconds: z.number().int().min(60).max(86400),
    sessionDurationSeconds: z.number().int().min(300).max(30 * 86400),
    lockoutThreshold: z.number().int().min(3).max(100),
    lockoutPeriodSeconds: z.number().int().min(1).max(86400),
    registrationOpen: z.boolean(),
    passwordMinLength: z.number().int().min(8).max(128),
    otpLength: z.number().int().min(6).max(10),
    otpTtlSeconds: z.number().int().min(60).max(900),
    factorMaxFailures: z.number().int().min(3).max(20),
    factorBlockSeconds: z.number().int().min(60).max(86400),
    smsPerNumberPerHour: z.number().int().min(1).max(1000),
    smsPerUserPerHour: z.number().int().min(1).max(1000),
    // Below the send caps' limiter's own ceiling (caps.ts: 1,000,000 points an hour).
    smsPerTenantPerHour: z.number().int().min(1).max(100_000),
    pushPerUserPerHour: z.number().int().min(1).max(1000),
    requireApiKey: z.boolean(),
    stepUpTtlSeconds: z.number().int().min(30).max(3600),
    mfaAtLogin: z.boolean(),
});
export const tenantPolicySchema = policyFields.partial().strict();

export type TenantPolicyInput = z.infer<typeof tenantPolicySchema>;

export interface TenantPolicy {
  readonly accessTokenTtlSeconds: number;
  /** How long a login session (grant, refresh-token family) lasts; seed 003: 10 hours. */
  readonly sessionDurationSeconds: number;
  /** Consecutive failed logins before a temporary lock. */
  readonly lockoutThreshold: number;
  /** First lock's length; each further lock in a row doubles it (capped at 64×). */
  readonly lockoutPeriodSeconds: number;
  readonly registrationOpen: boolean;
  readonly passwordMinLength: number;
  /** Digits of a one-time code (the sandbox code 123456 is always 6). */
  readonly otpLength: number;
  readonly otpTtlSeconds: number;
  /** Consecutive wrong codes per user, across challenges, before factors are blocked. */
  readonly factorMaxFailures: number;
  readonly factorBlockSeconds: number;
  readonly smsPerNumberPerHour: number;
  readonly smsPerUserPerHour: number;
  /** Every SMS the tenant sends in an hour, all numbers and users together (against SMS pumping). */
  readonly smsPerTenantPerHour: number;
  readonly pushPerUserPerHour: number;
  /** Our routes require the client's `api-key` header besides the bearer token. */
  readonly requireApiKey: boolean;
  /** Lifetime of a step-up (SCA) access token. */
  readonly stepUpTtlSeconds: number;
  /** Password logins of users with an ACTIVE factor stay pending until a step-up challenge succeeds. */
  readonly mfaAtLogin: boolean;
}

export const DEFAULT_POLICY: TenantPolicy = Object.freeze({
  accessTokenTtlSeconds: 1800,
  sessionDurationSeconds: 36000,
  lockoutThreshold: 10,
  lockoutPeriodSeconds: 300,
  registrationOpen: true,
  passwordMinLength: 8,
  otpLength: 6,
  otpTtlSeconds: 300,
  factorMaxFailures: 5,
  factorBlockSeconds: 900,
  smsPerNumberPerHour: 10,
  smsPerUserPerHour: 20,
  smsPerTenantPerHour: 5000,
  pushPerUserPerHour: 20,
  requireApiKey: false,
  stepUpTtlSeconds: 300,
  mfaAtLogin: false,
});

/**
 * The stored overrides that hold, key by key: a key this release does not know (one a later
 * release wrote, say) or a value out of its range is left out alone — `ignored` names it — and
 * every other override still applies. One bad key must never drop a tenant's `requireApiKey` or
 * `mfaAtLogin` back to the defaults.
 */
export function validOverrides(stored: unknown): { valid: TenantPolicyInput; ignored: string[] } {
  if (stored === null || stored === undefined) return { valid: {}, ignored: [] };
  if (typeof stored !== 'object' || Array.isArray(stored)) return { valid: {}, ignored: ['(the stored policy is not an object)'] };
  const fields = policyFields.shape as Record<string, z.ZodType>;
  const valid: Record<string, unknown> = {};
  const ignored: string[] = [];
  for (const [key, value] of Object.entries(stored)) {
    const field = isPolicyKey(key) ? fields[key] : undefined;
    if (field?.safeParse(value).success) valid[key] = value;
    else ignored.push(key);
  }
  return { valid: valid as TenantPolicyInput, ignored };
}

/** Whether this release knows `key` as a policy setting. */
export function isPolicyKey(key: string): boolean {
  return Object.hasOwn(policyFields.shape, key);
}

export function resolvePolicy(stored: unknown, defaults: Partial<TenantPolicy> = {}): TenantPolicy {
  return Object.freeze({ ...DEFAULT_POLICY, ...defaults, ...validOverrides(stored).valid });
}
