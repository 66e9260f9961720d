/**
 * `npm install` runs scripts/patch-oidc-provider.mjs, which gives oidc-provider's per-request
 * `ctx.oidc` one getter shared by every request instead of a new closure each time (V8 kept those
 * closures, and each request's whole graph, until a full collection: bench/NOTES.md). This
 * checks that the installed library behaves so, and that ctx.oidc is still each request's own.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import Provider, { type KoaContextWithOIDC } from 'oidc-provider';
import { jwkPairSync } from '../helpers/keys';

describe("oidc-provider's ctx.oidc, as installed", () => {
  let server: Server;
  let base: string;
  const seen: Array<{ getter: unknown; oidc: unknown; again: unknown; route: unknown }> = [];

  beforeAll(async () => {
    const jwk = { ...jwkPairSync('ES256').privateKey, kid: 'k', alg: 'ES256', use: 'sig' };
    const provider = new Provider('http://127.0.0.1', { jwks: { keys: [jwk] }, features: { devInteractions: { enabled: false } } });
    provider.use(async (ctx: KoaContextWithOIDC, next: () => Promise<void>) => {
      await next();
      const getter = Object.getOwnPropertyDescriptor(ctx, 'oidc')?.get;
      seen.push({ getter, oidc: ctx.oidc, again: ctx.oidc, route: ctx.oidc.route });
    });
    server = createServer(provider.callback());
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await new Promise((resolve) => server?.close(resolve));
  });

  test('one getter for every request, each request its own OIDC context, the same on every read', async () => {
    for (const path of ['/jwks', '/.well-known/openid-configuration', '/jwks']) {
      const res = await fetch(base + path);
      expect(res.status).toBe(200);
      await res.arrayBuffer();
    }
    expect(seen).toHaveLength(3);
    expect(typeof seen[0]!.getter).toBe('function');
    expect(new Set(seen.map((s) => s.getter)).size).toBe(1);
    expect(new Set(seen.map((s) => s.oidc)).size).toBe(3);
    for (const s of seen) expect(s.again).toBe(s.oidc);
    expect(seen.map((s) => s.route)).toEqual(['jwks', 'discovery', 'jwks']);
  });
});
