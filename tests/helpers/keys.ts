import { generateKeyPair as generate, type JsonWebKey } from 'node:crypto';
import { promisify } from 'node:util';
import { importJWK, type JWK } from 'jose';

const generateJwks = promisify(generate) as unknown as (type: 'ec', options: object) => Promise<{ publicKey: JsonWebKey; privateKey: JsonWebKey }>;

/**
 * A P-256 key pair for a test's signer: its public JWK, and its private key to sign with. The
 * JWKs come from the generation itself, as the key service's do: exporting a freshly generated key
 * (jose's generateKeyPair then exportJWK, or KeyObject.export) can deadlock Node 20 in a garbage
 * collection (tests/unit/signing-key-generation.test.ts).
 */
export async function newEs256Pair(): Promise<{ publicJwk: JWK; privateKey: Awaited<ReturnType<typeof importJWK>> }> {
  const { publicKey, privateKey } = await generateJwks('ec', { namedCurve: 'P-256', publicKeyEncoding: { format: 'jwk' }, privateKeyEncoding: { format: 'jwk' } });
  return { publicJwk: publicKey as JWK, privateKey: await importJWK(privateKey as JWK, 'ES256') };
}
