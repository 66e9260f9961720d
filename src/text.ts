/**
 * Why a string cannot be stored as text: U+0000, which PostgreSQL refuses, or a lone surrogate
 * (JSON can carry one, "\ud800"), which is no text: jsonb refuses it, and encoded to UTF-8 it would
 * become U+FFFD, every lone surrogate the same. Undefined for a string that can.
 */
export function textProblem(s: string): string | undefined {
  if (s.includes('\u0000')) return 'must not contain NUL characters';
  if (/\p{Cs}/u.test(s)) return 'must be valid Unicode text';
  return undefined;
}
