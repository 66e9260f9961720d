// Baseline: bare oidc-provider, in-memory adapter, static clients with plaintext secrets,
// client_credentials and introspection, opaque tokens, an ES256 key — what Portcullis is measured against.
import Provider from 'oidc-provider';
import { generateKeyPairSync } from 'node:crypto';

const port = Number(process.env.PORT);
// The JWK from the generation itself: exporting a generated KeyObject can deadlock Node 20 (src/keys/service.ts).
const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256', publicKeyEncoding: { format: 'jwk' }, privateKeyEncoding: { format: 'jwk' } });
const jwk = { ...privateKey, kid: 'bench', alg: 'ES256', use: 'sig' };
const provider = new Provider(`http://127.0.0.1:${port}`, {
  jwks: { keys: [jwk] },
  clients: [
    { client_id: 'app', client_secret: 'app-secret-0123456789', grant_types: ['client_credentials'], response_types: [], redirect_uris: [], scope: 'accounts' },
    { client_id: 'rs', client_secret: 'rs-secret-0123456789', grant_types: ['client_credentials'], response_types: [], redirect_uris: [] },
  ],
  clientDefaults: { id_token_signed_response_alg: 'ES256' },
  scopes: ['accounts'],
  features: { devInteractions: { enabled: false }, clientCredentials: { enabled: true }, introspection: { enabled: true, allowedPolicy: () => true }, revocation: { enabled: true } },
  ttl: { ClientCredentials: 1800 },
  routes: { token: '/token', introspection: '/token/introspection' },
});
provider.listen(port, '127.0.0.1', () => process.send?.('ready'));
