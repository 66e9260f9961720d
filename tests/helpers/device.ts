import { CompactSign } from 'jose';
import { newEs256Pair } from './keys';

/** Plays the user's enrolled phone: a P-256 key pair that signs challenge answers. */
export async function newDevice() {
  const { publicJwk: jwk, privateKey } = await newEs256Pair();
  return {
    publicJwk: jwk,
    async answer(challenge: { challengeId: string; nonce: string }, decision: 'APPROVE' | 'DENY' = 'APPROVE', extra: Record<string, unknown> = {}) {
      const payload = new TextEncoder().encode(JSON.stringify({ challengeId: challenge.challengeId, nonce: challenge.nonce, decision, ...extra }));
      return new CompactSign(payload).setProtectedHeader({ alg: 'ES256' }).sign(privateKey);
    },
  };
}
