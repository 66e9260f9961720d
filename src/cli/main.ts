#!/usr/bin/env node
import path from 'node:path';
import { userInfo } from 'node:os';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { loadConfig, ConfigError, type Config } from '../config';
import { openDatabase, EmbeddedDatabaseBusyError } from '../db/knex';
import { DatabaseFromNewerReleaseError, migrateLatest } from '../db/migrate';
import type * as AppModule from '../app';
import type { Services } from '../app';
import { serve } from '../cluster';
import { AppError } from '../errors';
import { SecretsKeyMismatchError } from '../keys/service';
import { clientAuditRecords } from '../clients/view';
import { tenantView } from '../tenants/view';

const HELP: Record<string, string> = {
  main: `Usage: portcullis <command> [options]

Commands:
  migrate                      apply database migrations
  serve                        run the server (applies migrations first)
  tenant create <id>           create a tenant
  client create                create a client (prints its secret and API key once)
  user create                  create a user (admin registration)
  keys rotate                  publish a new signing key; it signs after the publish delay
  keys list                    list signing keys

Run "portcullis <command> --help" for a command's options.
With the embedded database (no DATABASE_URL), stop the server before running other commands.`,
  migrate: 'Usage: portcullis migrate [--json]\n\nApplies pending migrations to DATABASE_URL, or to the embedded database in DATA_DIR.',
  serve: 'Usage: portcullis serve\n\nStarts the server on PORT (applies migrations first). SIGTERM drains and stops it.',
  'tenant create': `Usage: portcullis tenant create <id> [--mode sandbox|live] [--name NAME] [--json]

  <id>           tenant identifier (di_fiid / institutionId): letters, digits, . _ -
  --mode         sandbox (default; accepts the fixed OTP 123456) or live
  --name         display name (defaults to the id)
  --json         print one JSON object and nothing else`,
  'client create': `Usage: portcullis client create --tenant <id>... --grant <type>... [options]

  --tenant ID          tenant the client is allowed for (repeat for several)
  --grant TYPE         client_credentials, password or refresh_token (repeat; default client_credentials)
  --scope "A B"        scopes the client may request
  --introspection      the client is a resource server and may introspect tokens
  --admin              an admin client (scope admin); with no --tenant, a platform admin
  --token-format F     opaque (default) or jwt (RFC 9068 access tokens)
  --name NAME          display name
  --json               print {client_id, client_secret, api_key} and nothing else`,
  'user create': `Usage: portcullis user create --tenant <id> [--email E] [--mobile M] [--username U] (--password P | --password-stdin) [options]

  --tenant ID       the user's tenant
  --email E         email address      } at least one
  --mobile M        mobile, E.164      } identifier
  --username U      username           }
  --password P      password (8+ characters, not a common one); visible to \`ps\` and shell history
  --password-stdin  read the password from standard input instead
  --role R          root (default) or authorised
  --json            print {id} and nothing else`,
  'keys rotate': 'Usage: portcullis keys rotate [--json]\n\nPublishes a new signing key at once; it signs after keys.publishBeforeUseSeconds.\nThe old key stays published until every token it signed has expired.',
  'keys list': 'Usage: portcullis keys list [--json]',
};

class UsageError extends Error {}

/** A command's options; an argument it does not take is a usage error (exit 2), never ignored. */
function parse(args: string[], options: ParseArgsConfig['options'], positionals = 0): { values: Record<string, unknown>; positionals: string[] } {
  let parsed;
  try {
    parsed = parseArgs({ args, options: { ...options, help: { type: 'boolean', short: 'h' }, json: { type: 'boolean' } }, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (parsed.positionals.length > positionals) throw new UsageError(`unexpected argument ${parsed.positionals[positionals]}`);
  return parsed;
}

/**
 * A password from standard input (`--password-stdin`): all of it, without the line breaks that end
 * it. Bytes that are not UTF-8 are refused: decoded, each would become U+FFFD, and many passwords one.
 */
async function readSecret(stdin: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stdin) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk)));
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(Buffer.concat(chunks));
  } catch {
    throw new UsageError('the password on standard input is not UTF-8 text');
  }
  return text.replace(/[\r\n]+$/, '');
}

function print(json: unknown, value: unknown, human: string): void {
  process.stdout.write(json ? `${JSON.stringify(value)}\n` : `${human}\n`);
}

/** The audit log's actor for what an operator does from the shell. */
function cliActor(): string {
  try {
    return `cli:${userInfo().username}`;
  } catch {
    return 'cli'; // a user id without a passwd entry (some containers)
  }
}

/**
 * A change made from the shell, committed with its audit record or not at all, as the admin
 * API's are: `audit(type, tenantId, target, details)` records one.
 */
async function audited<T>(
  config: Config,
  fn: (s: Services, audit: (type: string, tenantId: string | undefined, target: string, details?: Record<string, unknown>) => Promise<void>) => Promise<T>,
): Promise<T> {
  const actor = cliActor();
  return withServices(config, (s) =>
    s.tx.transaction(() => fn(s, (type, tenantId, target, details = {}) => s.audit.record({ tenantId, actor, type, target, details }))),
  );
}

async function withServices<T>(config: Config, fn: (s: Services) => Promise<T>): Promise<T> {
  const database = await openDatabase(config, { poolMax: 2 });
  try {
    await migrateLatest(database.knex);
    // Loaded here, not at the top: `serve`'s cluster primary must not load the server (src/cluster.ts).
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { buildServices } = require('../app') as typeof AppModule;
    const services = await buildServices(config, database);
    // Before anything is written: keys sealed and passwords peppered with another SECRETS_KEY
    // than the servers' would stop every server's start and every such user's login.
    await services.keyService.checkSecretsKey();
    return await fn(services);
  } finally {
    await database.close();
  }
}

export async function run(argv: string[], env: NodeJS.ProcessEnv = process.env, stdin: NodeJS.ReadableStream = process.stdin): Promise<number> {
  const [command, ...rest] = argv;
  const sub = command && ['tenant', 'client', 'keys', 'user'].includes(command) ? rest[0] : undefined;
  const name = sub ? `${command} ${sub}` : command;
  const args = sub ? rest.slice(1) : rest;
  if (!name) throw new UsageError(`a command is required\n\n${HELP.main}`);
  if (name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(`${HELP.main}\n`);
    return 0;
  }
  if (!HELP[name]) throw new UsageError(`unknown command "${name}"\n\n${HELP.main}`);
  if (args.includes('--help') || args.includes('-h')) {
    process.stdout.write(`${HELP[name]}\n`);
    return 0;
  }
  const config = loadConfig(env);

  switch (name) {
    case 'migrate': {
      const { values } = parse(args, {});
      const database = await openDatabase(config, { poolMax: 1 });
      try {
        const applied = await migrateLatest(database.knex);
        print(values.json, { applied }, applied.length ? `applied: ${applied.join(', ')}` : 'database is up to date');
      } finally {
        await database.close();
      }
      return 0;
    }
    case 'serve': {
      parse(args, {});
      await serve(config);
      return -1; // keeps running
    }
    case 'tenant create': {
      const { values, positionals } = parse(args, { mode: { type: 'string' }, name: { type: 'string' } }, 1);
      if (positionals.length !== 1) throw new UsageError(`tenant create takes one <id>\n\n${HELP[name]}`);
      const tenant = await audited(config, async (s, audit) => {
        const t = await s.tenantService.create({ id: positionals[0]!, mode: values.mode as 'sandbox' | 'live' | undefined, name: values.name as string | undefined });
        await audit('tenant.created', t.id, t.id, { after: tenantView(t) });
        return t;
      });
      print(values.json, { id: tenant.id, name: tenant.name, mode: tenant.mode }, `created tenant ${tenant.id} (${tenant.mode})`);
      return 0;
    }
    case 'client create': {
      const { values, positionals } = parse(args, {
        tenant: { type: 'string', multiple: true },
        grant: { type: 'string', multiple: true },
        scope: { type: 'string' },
        introspection: { type: 'boolean' },
        admin: { type: 'boolean' },
        'token-format': { type: 'string' },
        name: { type: 'string' },
      });
      if (positionals.length) throw new UsageError(`unexpected argument ${positionals[0]}\n\n${HELP[name]}`);
      const created = await audited(config, async (s, audit) => {
        const made = await s.clientService.create({
          name: (values.name as string | undefined) ?? '',
          tenants: (values.tenant as string[] | undefined) ?? [],
          grant_types: ((values.grant as string[] | undefined) ?? ['client_credentials']) as never,
          scope: (values.scope as string | undefined) ?? '',
          introspection: !!values.introspection,
          admin: !!values.admin,
          token_format: ((values['token-format'] as string | undefined) ?? 'opaque') as 'opaque' | 'jwt',
        });
        for (const r of clientAuditRecords(made.client, (view) => ({ after: view(made.client) }))) await audit('client.created', r.tenantId, made.client.id, r.details);
        return made;
      });
      const out = { client_id: created.client.id, client_secret: created.clientSecret, api_key: created.apiKey };
      print(
        values.json,
        out,
        `client_id:     ${out.client_id}\nclient_secret: ${out.client_secret}\napi_key:       ${out.api_key}\n(the secret and API key are shown only now)`,
      );
      return 0;
    }
    case 'user create': {
      const { values, positionals } = parse(args, {
        tenant: { type: 'string' },
        email: { type: 'string' },
        mobile: { type: 'string' },
        username: { type: 'string' },
        password: { type: 'string' },
        'password-stdin': { type: 'boolean' },
        role: { type: 'string' },
      });
      if (positionals.length) throw new UsageError(`unexpected argument ${positionals[0]}\n\n${HELP[name]}`);
      if (values.password !== undefined && values['password-stdin']) throw new UsageError(`--password or --password-stdin, not both\n\n${HELP[name]}`);
      // On the command line a password shows in `ps` and shell history; from standard input it does not.
      if (values['password-stdin']) values.password = await readSecret(stdin);
      if (!values.tenant || !values.password) throw new UsageError(`--tenant and --password (or --password-stdin) are required\n\n${HELP[name]}`);
      const role = (values.role as string | undefined) ?? 'root';
      if (role !== 'root' && role !== 'authorised') throw new UsageError('--role is root or authorised');
      const user = await audited(config, async (s, audit) => {
        const tenant = await s.tenants.find(values.tenant as string);
        if (!tenant) throw new AppError('NOT_FOUND', 404, `unknown tenant ${String(values.tenant)}`);
        const u = await s.userService.register(
          tenant,
          { email: values.email, mobile: values.mobile, username: values.username, password: values.password, acceptedTerms: true },
          { role },
        );
        await audit('user.created', tenant.id, u.id, { role: u.role });
        return u;
      });
      print(values.json, { id: user.id }, `created user ${user.id} in tenant ${user.tenantId}`);
      return 0;
    }
    case 'keys rotate': {
      const { values } = parse(args, {});
      const key = await audited(config, async (s, audit) => {
        await s.keyService.ensureKey();
        const k = await s.keyService.rotate();
        await audit('key.rotated', undefined, k.kid, { activatesAt: k.activatesAt.toISOString() });
        return k;
      });
      print(values.json, { kid: key.kid, activatesAt: key.activatesAt.toISOString() }, `new key ${key.kid} published; signs from ${key.activatesAt.toISOString()}`);
      return 0;
    }
    case 'keys list': {
      const { values } = parse(args, {});
      const keys = await withServices(config, (s) => s.keyService.list());
      const rows = keys.map((k) => ({ kid: k.kid, alg: k.alg, activatesAt: k.activatesAt, retiredAt: k.retiredAt, expiresAt: k.expiresAt }));
      print(values.json, { keys: rows }, rows.map((k) => `${k.kid}  activates ${k.activatesAt.toISOString()}  retired ${k.retiredAt?.toISOString() ?? '-'}`).join('\n'));
      return 0;
    }
    default:
      throw new UsageError(HELP.main);
  }
}

/** The database URL without what may be secret: its password and its query (?password=, ?sslpassword=…). */
function safeDatabaseUrl(databaseUrl: string): string {
  try {
    const url = new URL(databaseUrl);
    if (url.password) url.password = '***';
    url.search = '';
    return url.toString();
  } catch {
    return '(DATABASE_URL as set)';
  }
}

/**
 * What went wrong at start-up, in one line naming the setting to look at, for failures of the
 * machine around the server rather than of its code; undefined for anything else (its stack is
 * printed then).
 */
export function startupFailure(err: unknown, config?: Pick<Config, 'databaseUrl' | 'dataDir' | 'port'>): string | undefined {
  const e = err as NodeJS.ErrnoException & { port?: number; address?: string };
  if (!e || typeof e !== 'object') return undefined;
  if (err instanceof SecretsKeyMismatchError || err instanceof DatabaseFromNewerReleaseError) return err.message;
  if ((e.syscall === 'listen' || e.syscall === 'bind') && (e.code === 'EADDRINUSE' || e.code === 'EACCES')) {
    return `cannot listen on port ${String(e.port ?? config?.port)} (PORT): ${e.code === 'EADDRINUSE' ? 'another process is using it' : 'permission denied'}`;
  }
  // SQLSTATE 28xxx (authentication), 3D000 (no such database), 57P03 (not accepting connections).
  const pgRefusal = typeof e.code === 'string' && /^(28...|3D000|57P03)$/.test(e.code);
  const unreachable = e.syscall === 'connect' || e.syscall === 'getaddrinfo' || ['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT'].includes(String(e.code));
  if (config?.databaseUrl && (pgRefusal || unreachable)) {
    return `cannot use the database ${safeDatabaseUrl(config.databaseUrl)} (DATABASE_URL): ${e.message}`;
  }
  if (e.path && config?.dataDir && path.resolve(e.path).startsWith(path.resolve(config.dataDir)) && e.code) {
    return `cannot use ${e.path} (DATA_DIR): ${e.code === 'EEXIST' || e.code === 'ENOTDIR' ? 'it is not a directory' : e.code}`;
  }
  return undefined;
}

function fail(message: string, code: number): number {
  process.stderr.write(`portcullis: ${message}\n`);
  return code;
}

if (require.main === module) {
  run(process.argv.slice(2)).then(
    (code) => {
      if (code >= 0) process.exit(code);
    },
    (err: unknown) => {
      let code: number;
      if (err instanceof UsageError) code = fail(err.message, 2);
      else if (err instanceof ConfigError || err instanceof EmbeddedDatabaseBusyError) code = fail(err.message, 1);
      else if (err instanceof AppError) {
        const fields = err.invalidFields?.map((f) => `\n  ${f.fieldName}: ${f.error}`).join('') ?? '';
        code = fail(`${err.message}${fields}`, 1);
      } else {
        let config: Config | undefined;
        try {
          config = loadConfig();
        } catch {
          /* a bad configuration was reported as such */
        }
        code = fail(startupFailure(err, config) ?? (err as Error)?.stack ?? String(err), 1);
      }
      process.exit(code);
    },
  );
}
