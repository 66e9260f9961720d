import type { Context, Next } from 'koa';

/** Headers every reply carries; set on the raw response so oidc-provider's replies get them too. */
export function securityHeaders(publicUrl: string) {
  const https = publicUrl.startsWith('https://');
  return async function setSecurityHeaders(ctx: Context, next: Next): Promise<void> {
    const res = ctx.res;
    res.setHeader('X-Content-Type-Options', 'nosniff');
    res.setHeader('X-Frame-Options', 'DENY');
    res.setHeader('Referrer-Policy', 'no-referrer');
    if (https) res.setHeader('Strict-Transport-Security', 'max-age=31536000; includeSubDomains');
    await next();
  };
}
