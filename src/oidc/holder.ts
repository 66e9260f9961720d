import type Provider from 'oidc-provider';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { JSONWebKeySet } from 'jose';
import { publicJwk, type KeyService } from '../keys/service';
import type { Metrics } from '../metrics';
import type { Logger } from '../log';
import { tokenAudience } from '../config';
import { createProvider, type ProviderDeps } from './provider';
import { createBearerVerifier, type Principal } from './bearer';
import type { OidcClient, UserTokenContext } from './user-tokens';
import { installProviderMiddleware } from './middleware';
import { createIntrospectionPolicy, type IntrospectionPolicy } from './introspection';
import type { TenantRepository } from '../tenants/repository';
import type { ClientRepository } from '../clients/repository';

type Handler = (req: IncomingMessage, res: ServerResponse) => Promise<void>;

/**
 * oidc-provider takes its key set at construction. When the published keys change (a rotation by
 * any process), the holder builds a new provider and swaps it in; requests in flight finish on
 * the old one. All state is in the database, so the swap loses nothing.
 */
export interface ProviderHolder {
  readonly provider: Provider;
  /** Who may learn what about a token (introspection.ts); the same for every provider built. */
  readonly introspectionPolicy: IntrospectionPolicy;
  handle: Handler;
  /** Verifies a bearer token for our own routes (see bearer.ts). */
  verifyBearer(token: string): Promise<Principal | undefined>;
  /** What user-token issuance outside a token request needs (registration). */
  userTokenContext(): UserTokenContext;
  findClient(clientId: string): Promise<OidcClient | undefined>;
  /** Reloads the key set; rebuilds the provider when it changed. Returns true on a swap. */
  refresh(): Promise<boolean>;
  start(intervalSeconds: number): void;
  stop(): void;
}

/** Counts what the library does: tokens issued by grant and tenant, failures by endpoint and error. */
function observe(provider: Provider, metrics: Metrics): void {
  const issued = (token: { gty?: string; kind: string; extra?: Record<string, unknown> }) => {
    const grant = token.kind === 'ClientCredentials' ? 'client_credentials' : (token.gty ?? 'unknown').split(' ').pop()!;
    metrics.tokensIssued.inc({ grant, tenant: String(token.extra?.tenant ?? '-') });
  };
  // The library's typings list its events as a closed set; these are its model events.
  const on = provider.on.bind(provider) as unknown as (event: string, fn: (...args: never[]) => void) => void;
  for (const event of ['access_token.saved', 'access_token.issued', 'client_credentials.saved', 'client_credentials.issued']) on(event, issued);
  for (const [event, endpoint] of [['grant.error', 'token'], ['introspection.error', 'introspection'], ['revocation.error', 'revocation']] as const) {
    on(event, (_ctx: unknown, err: { error?: string }) => metrics.failures.inc({ endpoint, error: err?.error ?? 'unknown' }));
  }
}

export async function createProviderHolder(
  deps: Omit<ProviderDeps, 'keys' | 'introspectionPolicy'> & {
    keyService: KeyService;
    logger: Logger;
    metrics: Metrics;
    /** Uncached lookups, for checks that must not be answered from memory (see introspection.ts). */
    fresh: { tenants: Pick<TenantRepository, 'find'>; clients: Pick<ClientRepository, 'find'> };
  },
): Promise<ProviderHolder> {
  const introspectionPolicy = createIntrospectionPolicy({ tenants: deps.tenants, clients: deps.clients, fresh: deps.fresh, users: deps.users });
  const build = (keys: ProviderDeps['keys']) => {
    const provider = createProvider({ ...deps, keys, introspectionPolicy });
    const publicKeys = keys.jwks.keys.map(publicJwk);
    installProviderMiddleware(provider, { keys: publicKeys } as JSONWebKeySet, introspectionPolicy, deps.logger);
    observe(provider, deps.metrics);
    return {
      provider,
      handler: provider.callback() as unknown as Handler,
      fingerprint: keys.fingerprint,
      verify: createBearerVerifier(provider, { keys: publicKeys } as JSONWebKeySet, deps.tenants),
      context: {
        provider,
        audience: tokenAudience(deps.config),
        defaultTtl: deps.config.tokens.accessTokenTtlSeconds,
        signingKid: keys.signingKid,
        signingAlg: keys.signingAlg,
        clock: deps.clock,
      },
    };
  };
  let current = build(await deps.keyService.load());
  let timer: NodeJS.Timeout | undefined;

  const holder: ProviderHolder = {
    get provider() {
      return current.provider;
    },
    introspectionPolicy,
    handle: (req, res) => current.handler(req, res),
    verifyBearer: (token) => current.verify(token),
    userTokenContext: () => current.context,
    findClient: async (clientId) => (await current.provider.Client.find(clientId)) as OidcClient | undefined,
    async refresh() {
      const keys = await deps.keyService.load();
      if (keys.fingerprint === current.fingerprint) return false;
      current = build(keys);
      deps.logger.info({ signingKid: keys.signingKid }, 'signing keys changed; provider rebuilt');
      return true;
    },
    start(intervalSeconds) {
      if (!intervalSeconds) return;
      timer = setInterval(() => {
        holder.refresh().catch((err: unknown) => deps.logger.warn({ err }, 'key refresh failed; keeping the current keys'));
      }, intervalSeconds * 1000);
      timer.unref();
    },
    stop() {
      if (timer) clearInterval(timer);
    },
  };
  return holder;
}
