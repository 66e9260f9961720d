import { createHmac, randomInt, timingSafeEqual } from 'node:crypto';

export const SANDBOX_CODE = '123456';

/** A one-time code from the CSPRNG; live codes are never the sandbox code. */
export function generateCode(length: number): string {
  for (;;) {
    let code = '';
    for (let i = 0; i < length; i += 1) code += String(randomInt(10));
    if (code !== SANDBOX_CODE) return code;
  }
}

/** Codes are stored as an HMAC bound to their challenge: a code hash is useless for any other. */
export function createCodeHasher(pepper: Buffer) {
  const hash = (challengeId: string, code: string) => createHmac('sha256', pepper).update(`${challengeId}:${code}`).digest('base64url');
  return {
    hash,
    matches(challengeId: string, code: string, stored: string | null): boolean {
      if (!stored) return false;
      const a = Buffer.from(hash(challengeId, code));
      const b = Buffer.from(stored);
      return a.length === b.length && timingSafeEqual(a, b);
    },
  };
}
export type CodeHasher = ReturnType<typeof createCodeHasher>;
