import { readFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { resourceSyntaxError } from '../oidc/resource-uri';
import { SIGNING_ALGS } from '../keys/service';

const YES = ['1', 'true', 'yes', 'on'];
const NO = ['0', 'false', 'no', 'off'];
/**
 * A yes/no setting; from the environment 1, true, yes or on (any case) is yes, and 0, false, no or
 * off is no. Anything else is an error, never a silent no: `TRUST_PROXY=ture` must not start a
 * server that ignores its proxy.
 */
const flag = z.preprocess((v) => {
  if (typeof v !== 'string') return v;
  const s = v.trim().toLowerCase();
  return YES.includes(s) ? true : NO.includes(s) ? false : v;
}, z.boolean({ error: `must be one of ${YES.join(', ')} (yes) or ${NO.join(', ')} (no)` }));

/**
 * A whole number: from the environment, digits and nothing else. `z.coerce.number()` took " " for
 * 0, "0x0D71" for 3441 and "3441.0" for 3441, and PORT's became an issuer without a port.
 */
const whole = (min: number, max: number) =>
  z.preprocess(
    (v) => (typeof v === 'string' && /^\d{1,16}$/.test(v) ? Number(v) : v),
    z.number({ error: `must be a whole number from ${min} to ${max}` }).int(`must be a whole number from ${min} to ${max}`).min(min).max(max),
  );
/** Node's timers fire at once beyond 2^31 - 1 ms (with a TimeoutOverflowWarning): a day is plenty. */
const DAY_MS = 86_400_000;

/** The one validated, frozen configuration object the composition root injects everywhere. */
// Strict, as each nested object: a key no setting has (a typo, "accesTokenTtlSeconds") is an error,
// not a setting silently left at its default.
const schema = z.strictObject({
  env: z.string(),
  port: whole(0, 65535),
  publicUrl: z
    .url({ protocol: /^https?$/ })
    // It is the issuer identifier: RFC 8414 §2 allows neither a query nor a fragment.
    .refine((u) => !u.includes('?') && !u.includes('#'), 'must not have a query or fragment (it is the issuer identifier)')
    .transform((u) => u.replace(/\/+$/, '')),
  databaseUrl: z.string().regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL').optional(),
  dataDir: z.string().min(1),
  /** The embedded database's shared_buffers (MB): its page cache inside PGlite's WebAssembly memory. */
  embeddedSharedBuffersMb: whole(1, 1024),
  secretsKey: z
    .string()
    // Buffer skips what is not base64, so the length alone would take a key with a typo in it.
    // Either alphabet, with or without its padding, and the line break a key file ends with.
    .refine((v) => /^(?:[A-Za-z0-9+/]{43}|[A-Za-z0-9_-]{43})=?\s*$/.test(v) && Buffer.from(v, 'base64').length === 32, 'must be 32 random bytes, base64-encoded')
    .optional(),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
  webConcurrency: whole(1, 64),
  /** V8 old-space limit of each worker process (MB); 0 = V8's own default. See src/cluster.ts. */
  workerHeapLimitMb: whole(0, 65536).refine((n) => n === 0 || (n >= 128 && n <= 65536), '0 (V8 default) or 128 to 65536 MB'),
  /** The smallest V8 young generation (semi-space, MB) of each worker; 0 = V8's own default. See src/cluster.ts. */
  workerMinSemiSpaceMb: whole(0, 256),
  trustProxy: flag,
  shutdownTimeoutMs: whole(0, DAY_MS),
  shutdownGraceMs: whole(0, DAY_MS),
  bodyLimitBytes: whole(1024, 1024 ** 3),
  tokens: z.strictObject({
    accessTokenTtlSeconds: z.number().int().min(1).max(86400),
    /** Every token's audience, and the one `resource` (RFC 8707) a request may name: an absolute URI without a fragment. */
    jwtAudience: z
      .string()
      .refine((v) => resourceSyntaxError(v) === undefined, 'must be an absolute URI without a fragment (RFC 8707)')
      .nullable(),
  }),
  keys: z.strictObject({
    /** The algorithm of new signing keys (a change takes effect at the next rotation); RFC 9068 §4 asks for RS256 to be possible. */
    alg: z.enum(SIGNING_ALGS),
    refreshIntervalSeconds: z.number().min(0).max(86_400),
    publishBeforeUseSeconds: z.number().min(0),
    maxTokenLifetimeSeconds: z.number().int().min(60),
  }),
  loginThrottle: z.strictObject({
    failuresPerWindow: z.number().int().min(1),
    windowSeconds: z.number().int().min(1),
  }),
  adminClientId: z.string().regex(/^[A-Za-z0-9._~-]{3,128}$/, '3 to 128 URL-safe characters').optional(),
  // RFC 6749 Appendix A.2: a client secret is VSCHAR (printable ASCII and space); another character
  // cannot be sent by client_secret_basic, whose credentials are form-encoded first (§2.3.1).
  adminClientSecret: z.string().min(32, 'at least 32 characters').regex(/^[\x20-\x7e]*$/, 'printable ASCII characters only (RFC 6749 Appendix A.2)').optional(),
  smsSender: z.enum(['log', 'webhook']),
  pushSender: z.enum(['log', 'webhook']),
  smsWebhookUrl: z.url({ protocol: /^https?$/ }).optional(),
  pushWebhookUrl: z.url({ protocol: /^https?$/ }).optional(),
  webhookSecret: z.string().min(16, 'at least 16 characters').optional(),
  webhook: z.strictObject({
    attempts: z.number().int().min(1).max(10),
    backoffMs: z.number().int().min(0).max(60_000),
    timeoutMs: z.number().int().min(100).max(10000),
  }),
  sweepIntervalSeconds: z.number().min(0).max(86_400),
  clientCacheSeconds: z.number().min(0),
  /** Plain introspections answered without oidc-provider's pipeline (src/oidc/fast-introspection.ts). */
  introspectionFastPath: flag,
  /** Plain client_credentials grants answered without oidc-provider's pipeline (src/oidc/fast-client-credentials.ts). */
  clientCredentialsFastPath: flag,
  /** Plain password grants answered without oidc-provider's pipeline (src/oidc/fast-password.ts). */
  passwordFastPath: flag,
  bcryptCost: whole(4, 15),
  /** A right password stored at a lower cost than bcryptCost is hashed again at it on login (never lower). */
  passwordRehash: flag,
  /** bcrypt computations at a time per process; 0 = its share of the cores (cores ÷ WEB_CONCURRENCY). */
  bcryptConcurrency: whole(0, 64),
  /**
   * PostgreSQL only: connections of a process's main pool; its rate-limit counters, its
   * access-token inserts and its password logins each get a pool of half as many (at least one).
   * See src/db/knex.ts.
   */
  dbPoolMax: whole(1, 1000),
  /** How often the event loop's delay is sampled for /metrics (src/metrics-event-loop.ts). */
  eventLoopMonitorMs: whole(1, 60_000),
  /** Under load, the longest a batch of token lookups or inserts waits for more to join it (ms); 0 = never (src/db/batch.ts). */
  batchWaitMs: whole(0, 50),
});

const checked = schema.superRefine((c, ctx) => {
  if (c.smsSender === 'webhook' && !c.smsWebhookUrl) ctx.addIssue({ code: 'custom', path: ['smsWebhookUrl'], message: 'required when SMS_SENDER=webhook' });
  if (c.pushSender === 'webhook' && !c.pushWebhookUrl) ctx.addIssue({ code: 'custom', path: ['pushWebhookUrl'], message: 'required when PUSH_SENDER=webhook' });
  if (!!c.adminClientId !== !!c.adminClientSecret) {
    ctx.addIssue({ code: 'custom', path: ['adminClientSecret'], message: 'PORTCULLIS_ADMIN_CLIENT_ID and PORTCULLIS_ADMIN_CLIENT_SECRET go together' });
  }
  if ((c.smsSender === 'webhook' || c.pushSender === 'webhook') && !c.webhookSecret) {
    ctx.addIssue({ code: 'custom', path: ['webhookSecret'], message: 'required when a sender is webhook' });
  }
  // A request is in flight until its message is out (or taken back): the longest delivery must end
  // within a shutdown's drain, or SIGTERM cuts it off half-done.
  const { attempts, timeoutMs, backoffMs } = c.webhook;
  const longest = attempts * timeoutMs + backoffMs * (2 ** (attempts - 1) - 1);
  if ((c.smsSender === 'webhook' || c.pushSender === 'webhook') && longest + 1000 > c.shutdownTimeoutMs) {
    ctx.addIssue({
      code: 'custom',
      path: ['webhook'],
      message: `the longest delivery (${longest} ms: attempts × timeoutMs plus the backoffs) must end a second before shutdownTimeoutMs (${c.shutdownTimeoutMs} ms)`,
    });
  }
});

export type Config = Readonly<z.infer<typeof schema>>;

/** Every token's audience, and the one `resource` a request may name: `tokens.jwtAudience`, else the issuer. */
export function tokenAudience(config: Pick<Config, 'tokens' | 'publicUrl'>): string {
  return config.tokens.jwtAudience ?? config.publicUrl;
}

export class ConfigError extends Error {}

function readJson(file: string): Record<string, unknown> {
  if (!existsSync(file)) return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new ConfigError(`${file}: not valid JSON (${(err as Error).message})`);
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new ConfigError(`${file}: must hold one JSON object of settings`);
  return parsed as Record<string, unknown>;
}

function merge(base: Record<string, unknown>, over: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) {
    const b = out[k];
    out[k] = v && typeof v === 'object' && !Array.isArray(v) && b && typeof b === 'object' && !Array.isArray(b)
      ? merge(b as Record<string, unknown>, v as Record<string, unknown>)
      : v;
  }
  return out;
}

/** Environment variables and the config key each one sets. */
const ENV_KEYS: Record<string, string> = {
  PORT: 'port',
  PUBLIC_URL: 'publicUrl',
  DATABASE_URL: 'databaseUrl',
  DATA_DIR: 'dataDir',
  EMBEDDED_SHARED_BUFFERS_MB: 'embeddedSharedBuffersMb',
  SECRETS_KEY: 'secretsKey',
  LOG_LEVEL: 'logLevel',
  WEB_CONCURRENCY: 'webConcurrency',
  WORKER_HEAP_LIMIT_MB: 'workerHeapLimitMb',
  WORKER_MIN_SEMI_SPACE_MB: 'workerMinSemiSpaceMb',
  TRUST_PROXY: 'trustProxy',
  SHUTDOWN_TIMEOUT_MS: 'shutdownTimeoutMs',
  SHUTDOWN_GRACE_MS: 'shutdownGraceMs',
  BCRYPT_COST: 'bcryptCost',
  PASSWORD_REHASH: 'passwordRehash',
  BCRYPT_CONCURRENCY: 'bcryptConcurrency',
  DB_POOL_MAX: 'dbPoolMax',
  EVENT_LOOP_MONITOR_MS: 'eventLoopMonitorMs',
  BATCH_WAIT_MS: 'batchWaitMs',
  INTROSPECTION_FAST_PATH: 'introspectionFastPath',
  CLIENT_CREDENTIALS_FAST_PATH: 'clientCredentialsFastPath',
  PASSWORD_FAST_PATH: 'passwordFastPath',
  PORTCULLIS_ADMIN_CLIENT_ID: 'adminClientId',
  PORTCULLIS_ADMIN_CLIENT_SECRET: 'adminClientSecret',
  SMS_SENDER: 'smsSender',
  PUSH_SENDER: 'pushSender',
  SMS_WEBHOOK_URL: 'smsWebhookUrl',
  PUSH_WEBHOOK_URL: 'pushWebhookUrl',
  WEBHOOK_SECRET: 'webhookSecret',
  SIGNING_ALG: 'keys.alg',
};

/**
 * Loads config/default.json, then config/<NODE_ENV>.json, then the environment, and validates
 * the result. A bad value throws ConfigError naming the key (and the env variable it came from).
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env, overrides: Record<string, unknown> = {}): Config {
  const nodeEnv = env.NODE_ENV || 'development';
  // src/config (ts) or dist/src/config (compiled): the project's config/ folder is two or three levels up.
  const candidates = [env.PORTCULLIS_CONFIG_DIR, path.resolve(__dirname, '../../config'), path.resolve(__dirname, '../../../config')];
  const configDir = candidates.find((d) => d && existsSync(path.join(d, 'default.json'))) ?? path.resolve('config');
  let raw = merge(readJson(path.join(configDir, 'default.json')), readJson(path.join(configDir, `${nodeEnv}.json`)));
  const fromEnv: Record<string, unknown> = {};
  for (const [name, key] of Object.entries(ENV_KEYS)) {
    const value = env[name];
    if (value === undefined || value === '') continue;
    const [top, nested] = key.split('.') as [string, string | undefined];
    if (nested) fromEnv[top] = { ...(fromEnv[top] as Record<string, unknown> | undefined), [nested]: value };
    else fromEnv[top] = value;
  }
  raw = merge(merge(raw, fromEnv), overrides);
  raw.env = nodeEnv;
  // Without PUBLIC_URL the issuer is this machine on the configured port (a bad port is reported
  // as itself, not as a missing PUBLIC_URL).
  const port = String(raw.port);
  if (raw.publicUrl === undefined) raw.publicUrl = `http://localhost:${/^\d+$/.test(port) && Number(port) <= 65535 ? port : ''}`;
  const parsed = checked.safeParse(raw);
  if (!parsed.success) {
    const reverse = Object.fromEntries(Object.entries(ENV_KEYS).map(([e, k]) => [k, e]));
    const lines = parsed.error.issues.flatMap((i) => {
      if (i.code === 'unrecognized_keys') return i.keys.map((k) => `  ${[...i.path, k].join('.')}: not a setting (a misspelt key?)`);
      const key = i.path.join('.');
      const envName = reverse[key];
      return [`  ${key}${envName ? ` (env ${envName})` : ''}: ${i.message}`];
    });
    throw new ConfigError(`invalid configuration:\n${lines.join('\n')}`);
  }
  return deepFreeze(parsed.data);
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object') {
    for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}
