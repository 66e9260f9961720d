/**
 * A client or tenant disabled keeps a second (`tokens_not_before`, epoch seconds;
 * migrations/20261208090000): the tokens issued in or before it stay inactive for good. It is set
 * when the client or tenant is disabled (the second of that), and again when it is enabled (the
 * second before that): a token request already under way at the disabling, finished while it was
 * disabled, made a token that must not come to life with the enabling either. Tokens count `iat`
 * in whole seconds, so the enabling waits for a second to begin (untilNextSecond) and is stamped
 * with the one before: what was issued in that second was issued while disabled. What is issued
 * after the enabling, in its own second, works.
 */
export function issuedBeforeDisabling(iat: unknown, notBefore: number | undefined): boolean {
  if (!notBefore) return false;
  return typeof iat !== 'number' || iat <= notBefore;
}

/** The current second, as a token's `iat` counts it. */
export const epochSecond = (ms = Date.now()): number => Math.floor(ms / 1000);

/**
 * Resolves as the next second begins (at most a second from now). Never inside a transaction: on
 * the embedded database every other request would wait for it.
 */
export async function untilNextSecond(): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, 1000 - (Date.now() % 1000) + 1));
}
