import type { Context, Next } from 'koa';

/** Headers every reply carries; set on the raw response so oidc-provider's replies get them too. */
export function securityHeaders(publicUrl: string) {
  const https = publicUrl.startsWith('https://');
  // Not async: it has nothing to do after next(), so it hands back next's promise instead of
  // wrapping it in one more (every request passes here; bench/NOTES.md, allocation).
  return function setSecurityHeaders(ctx: Context, next: Next): Promise<void> {
    const res = ctx.res;
    res.setHeader('X-Content-Type-Options', 'nosniff');
    res.setHeader('X-Frame-Options', 'DENY');
    res.setHeader('Referrer-Policy', 'no-referrer');
    if (https) res.setHeader('Strict-Transport-Security', 'max-age=31536000; includeSubDomains');
    return next();
  };
}
