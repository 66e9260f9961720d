import { generateKeyPairSync as generate, type JsonWebKey } from 'node:crypto';
import { publicJwk } from '../../src/keys/service';

// Private JWKs straight from the generation: exporting a generated KeyObject can deadlock Node 20
// (tests/unit/signing-key-generation.test.ts).
const AS_JWK = { publicKeyEncoding: { format: 'jwk' }, privateKeyEncoding: { format: 'jwk' } };
const generateKeyPairSync = generate as unknown as (type: 'rsa' | 'ec', options: object) => { privateKey: JsonWebKey };

// What the verifiers and /jwks get from a signing key: its public members only, for RSA keys
// (whose p and q alone rebuild the private key) as for EC ones.
describe('publicJwk', () => {
  test('an RSA private JWK keeps n, e and its labels; d, p, q, dp, dq and qi go', () => {
    const jwk = { ...generateKeyPairSync('rsa', { modulusLength: 2048, ...AS_JWK }).privateKey, kid: 'k1', alg: 'RS256', use: 'sig' };
    expect(Object.keys(jwk).sort()).toEqual(['alg', 'd', 'dp', 'dq', 'e', 'kid', 'kty', 'n', 'p', 'q', 'qi', 'use']);
    expect(Object.keys(publicJwk(jwk)).sort()).toEqual(['alg', 'e', 'kid', 'kty', 'n', 'use']);
  });

  test('an EC private JWK keeps crv, x and y; d goes', () => {
    const jwk = generateKeyPairSync('ec', { namedCurve: 'P-256', ...AS_JWK }).privateKey;
    expect(publicJwk(jwk)).toEqual({ kty: 'EC', crv: 'P-256', x: jwk.x, y: jwk.y });
  });
});
