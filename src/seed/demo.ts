import { writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Config } from '../config';
import type { Services } from '../app';
import { generateSecret } from '../crypto/secrets';

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
  await services.tenantService.create({ id: 'demo', name: 'Demo Bank (sandbox)', mode: 'sandbox' });
  const app = await services.clientService.create({
    name: 'Demo application',
    tenants: ['demo'],
    grant_types: ['client_credentials', 'password'],
    scope: 'accounts payments',
  });
  const tenant = (await services.tenants.find('demo'))!;
  const password = `demo-${generateSecret(12)}`;
  const user = await services.userService.register(tenant, { email: 'demo@example.com', mobile: '+447911123456', password, acceptedTerms: true });
  const rs = await services.clientService.create({
    name: 'Demo resource server',
    tenants: ['demo'],
    grant_types: ['client_credentials'],
    introspection: true,
  });
  const creds: DemoCredentials = {
    tenant: 'demo',
    user: { id: user.id, email: 'demo@example.com', password },
    client: { client_id: app.client.id, client_secret: app.clientSecret, api_key: app.apiKey },
    resourceServer: { client_id: rs.client.id, client_secret: rs.clientSecret, api_key: rs.apiKey },
  };
  writeFileSync(path.join(config.dataDir, 'demo-credentials.json'), `${JSON.stringify(creds, null, 2)}\n`, { mode: 0o600 });
  return creds;
}
