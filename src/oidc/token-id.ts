import { createHash } from 'node:crypto';

/** Non-secret identifier of an opaque token (its jti in introspection, logs and audit). */
export function opaqueTokenId(token: string): string {
  return createHash('sha256').update(token).digest('base64url').slice(0, 32);
}
