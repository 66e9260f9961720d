/**
 * Signing keys come out of their generation as JWKs (src/keys/service.ts, signingKeyGeneration).
 * Exporting a generated KeyObject afterwards can hang Node 20 for good: a garbage collection during
 * the export may finalize the finished generation job, whose destructor takes the key's lock that
 * the export holds (a CI run hung so, in a test that exported a freshly generated key). A child
 * process with V8's --stress-compaction (a full collection at every chance, which reproduces the
 * hang within a few keys) makes keys as the service does, many times: every one must be a JWK
 * straight from the generation, and the child must finish.
 */
import { execFile } from 'node:child_process';
import { SIGNING_ALGS, signingKeyGeneration } from '../../src/keys/service';

const CHILD = `
const { generateKeyPair } = require('node:crypto');
const [type, options] = JSON.parse(process.argv[1]);
const rounds = Number(process.argv[2]);
let made = 0;
const next = () => generateKeyPair(type, options, (err, publicKey, privateKey) => {
  if (err) throw err;
  const jwk = (k) => k !== null && typeof k === 'object' && typeof k.kty === 'string' && typeof k.export !== 'function';
  if (!jwk(privateKey) || !jwk(publicKey) || !('d' in privateKey) || 'd' in publicKey) {
    console.log('not a JWK: ' + Object.prototype.toString.call(privateKey));
    process.exit(2);
  }
  made += 1;
  if (made < rounds) next(); else console.log('made ' + made);
});
next();
`;

function makeKeys(generation: ReturnType<typeof signingKeyGeneration>, rounds: number): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--stress-compaction', '-e', CHILD, JSON.stringify(generation), String(rounds)], { timeout: 25_000 }, (err, stdout) => {
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : null;
      resolve({ code, out: stdout.trim() });
    });
  });
}

describe('signing key generation', () => {
  test.each(SIGNING_ALGS.map((alg) => [alg]))('%s keys come out as JWKs, and making many under constant garbage collection finishes', async (alg) => {
    const rounds = alg === 'RS256' ? 3 : 200;
    expect(await makeKeys(signingKeyGeneration(alg), rounds)).toEqual({ code: 0, out: `made ${rounds}` });
  });
});
