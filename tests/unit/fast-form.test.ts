import http from 'node:http';
import type { AddressInfo } from 'node:net';
import Koa from 'koa';
import { endpointHeaders } from '../../src/oidc/fast-form';

describe('endpointHeaders', () => {
  test('sets the library’s headers, and does nothing (no throw) once the headers are out, as Koa’s set() does', async () => {
    let afterSent: unknown = 'not run';
    const app = new Koa();
    app.use((ctx) => {
      if (ctx.path === '/sent') {
        ctx.respond = false;
        ctx.res.writeHead(200, { 'content-type': 'text/plain' });
        ctx.res.flushHeaders();
        try {
          endpointHeaders(ctx);
          afterSent = undefined;
        } catch (err) {
          afterSent = err;
        }
        ctx.res.end('ok');
        return;
      }
      endpointHeaders(ctx);
      ctx.body = { ok: true };
    });
    const server = http.createServer(app.callback());
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      const plain = await fetch(`${base}/`);
      expect(plain.headers.get('access-control-allow-origin')).toBe('*');
      expect(plain.headers.get('access-control-expose-headers')).toBe('WWW-Authenticate');
      expect(plain.headers.get('cache-control')).toBe('no-store');
      expect(plain.headers.get('vary')).toBe('Origin');
      const sent = await fetch(`${base}/sent`);
      expect(await sent.text()).toBe('ok');
      expect(afterSent).toBeUndefined();
    } finally {
      await new Promise((r) => server.close(r));
    }
  });
});
