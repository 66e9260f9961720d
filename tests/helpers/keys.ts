import { generateKeyPair, generateKeyPairSync, type JsonWebKey } from 'node:crypto';
import { promisify } from 'node:util';
import { importJWK, type JWK } from 'jose';
import { signingKeyGeneration, type SigningAlg } from '../../src/keys/service';

/*
 * Test keys are made as the key service makes its own (signingKeyGeneration): JWKs straight from
 * the generation. Exporting a freshly generated key (jose's generateKeyPair then exportJWK, or
 * KeyObject.export) can deadlock Node 20 in a garbage collection
 * (tests/unit/signing-key-generation.test.ts).
 */
type JwkPair = { publicKey: JsonWebKey; privateKey: JsonWebKey };
const generateJwks = promisify(generateKeyPair) as unknown as (type: string, options: object) => Promise<JwkPair>;

/** A key pair for `alg`, as JWKs, made synchronously. */
export function jwkPairSync(alg: SigningAlg): JwkPair {
  return (generateKeyPairSync as unknown as (type: string, options: object) => JwkPair)(...signingKeyGeneration(alg));
}

/** A P-256 key pair for a test's signer: its public JWK, and its private key to sign with. */
export async function newEs256Pair(): Promise<{ publicJwk: JWK; privateKey: Awaited<ReturnType<typeof importJWK>> }> {
  const { publicKey, privateKey } = await generateJwks(...signingKeyGeneration('ES256'));
  return { publicJwk: publicKey as JWK, privateKey: await importJWK(privateKey as JWK, 'ES256') };
}
