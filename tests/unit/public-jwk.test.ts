import { publicJwk } from '../../src/keys/service';
import { jwkPairSync } from '../helpers/keys';

// What the verifiers and /jwks get from a signing key: its public members only, for RSA keys
// (whose p and q alone rebuild the private key) as for EC ones.
describe('publicJwk', () => {
  test('an RSA private JWK keeps n, e and its labels; d, p, q, dp, dq and qi go', () => {
    const jwk = { ...jwkPairSync('RS256').privateKey, kid: 'k1', alg: 'RS256', use: 'sig' };
    expect(Object.keys(jwk).sort()).toEqual(['alg', 'd', 'dp', 'dq', 'e', 'kid', 'kty', 'n', 'p', 'q', 'qi', 'use']);
    expect(Object.keys(publicJwk(jwk)).sort()).toEqual(['alg', 'e', 'kid', 'kty', 'n', 'use']);
  });

  test('an EC private JWK keeps crv, x and y; d goes', () => {
    const jwk = jwkPairSync('ES256').privateKey;
    expect(publicJwk(jwk)).toEqual({ kty: 'EC', crv: 'P-256', x: jwk.x, y: jwk.y });
  });
});
