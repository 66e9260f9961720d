import { chmodSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Config } from '../config';
import type { Services } from '../app';
import { generateSecret } from '../crypto/secrets';
import { clientView } from '../clients/view';
import { tenantView } from '../tenants/view';

export interface DemoCredentials {
  tenant: string;
  user: { id: string; email: string; password: string };
  client: { client_id: string; client_secret: string; api_key: string };
  resourceServer: { client_id: string; client_secret: string; api_key: string };
}

/**
 * First start on an empty embedded database: a sandbox tenant `demo`, an application client
 * (client_credentials and password grants), a resource-server client (introspection) and a user, so the README's curl examples work at once. The
 * credentials are printed once and kept in DATA_DIR/demo-credentials.json (mode 0600).
 */
export async function seedDemo(config: Config, services: Services): Promise<DemoCredentials | undefined> {
  if ((await services.tenants.count()) > 0) return undefined;
  const password = `demo-${generateSecret(12)}`;
  // All or nothing, audited as every change is: a start that fails half-way must not leave a
  // tenant behind, or the next start would skip the demo and print nothing.
  const { app, user, rs } = await services.tx.transaction(async () => {
    const audit = (type: string, target: string, details: Record<string, unknown>) =>
      services.audit.record({ tenantId: 'demo', actor: 'first-start', type, target, details });
    const tenant = await services.tenantService.create({ id: 'demo', name: 'Demo Bank (sandbox)', mode: 'sandbox' });
    await audit('tenant.created', tenant.id, { after: tenantView(tenant) });
    const made = async (input: Parameters<Services['clientService']['create']>[0]) => {
      const c = await services.clientService.create(input);
      await audit('client.created', c.client.id, { after: clientView(c.client) });
      return c;
    };
    const app = await made({ name: 'Demo application', tenants: ['demo'], grant_types: ['client_credentials', 'password'], scope: 'accounts payments' });
    const user = await services.userService.register(tenant, { email: 'demo@example.com', mobile: '+447911123456', password, acceptedTerms: true });
    await audit('user.created', user.id, { role: user.role });
    const rs = await made({ name: 'Demo resource server', tenants: ['demo'], grant_types: ['client_credentials'], introspection: true });
    return { app, user, rs };
  });
  const creds: DemoCredentials = {
    tenant: 'demo',
    user: { id: user.id, email: 'demo@example.com', password },
    client: { client_id: app.client.id, client_secret: app.clientSecret, api_key: app.apiKey },
    resourceServer: { client_id: rs.client.id, client_secret: rs.clientSecret, api_key: rs.apiKey },
  };
  const file = path.join(config.dataDir, 'demo-credentials.json');
  writeFileSync(file, `${JSON.stringify(creds, null, 2)}\n`, { mode: 0o600 });
  chmodSync(file, 0o600); // the mode applies only to a file written anew: an older one keeps its own

  return creds;
}
