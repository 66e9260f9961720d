import http from 'node:http';
import type { AddressInfo } from 'node:net';
import Koa from 'koa';
import type { IncomingMessage } from 'node:http';
import { PassThrough } from 'node:stream';
import { discardBody, endpointHeaders, readBodyWithin } from '../../src/oidc/fast-form';

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

describe('readBodyWithin', () => {
  const stream = () => new PassThrough() as unknown as IncomingMessage & PassThrough;

  test('the whole body within the limit, to the byte; "too large" one byte past it, without reading on', async () => {
    const within = stream();
    const a = readBodyWithin(within, 10);
    within.write('12345');
    within.end('67890');
    expect((await a as Buffer).toString()).toBe('1234567890');

    const over = stream();
    const b = readBodyWithin(over, 10);
    over.write('123456');
    over.write('78901');
    expect(await b).toBe('too large');
    expect(over.isPaused()).toBe(true);
    for (const event of ['data', 'end', 'error', 'close', 'finish']) expect(over.listenerCount(event)).toBe(0);
  });

  test('undefined when the caller goes away mid-body', async () => {
    const gone = stream();
    const c = readBodyWithin(gone, 10);
    gone.write('123');
    gone.destroy(new Error('aborted'));
    expect(await c).toBeUndefined();

    const closed = stream(); // a connection closed without an error
    const d = readBodyWithin(closed, 10);
    closed.write('123');
    closed.destroy();
    expect(await d).toBeUndefined();
  });
});

describe('discardBody', () => {
  test('reads and drops the rest up to its limit, then closes the connection', async () => {
    const destroy = jest.fn();
    const req = Object.assign(new PassThrough(), { socket: { destroy } }) as unknown as IncomingMessage & PassThrough;
    req.pause();
    discardBody(req, 10);
    req.write('12345');
    req.write('67890');
    await new Promise((r) => setImmediate(r));
    expect(destroy).not.toHaveBeenCalled();
    req.write('1');
    await new Promise((r) => setImmediate(r));
    expect(destroy).toHaveBeenCalledTimes(1);
    req.destroy(new Error('aborted')); // the caller gone: no unhandled error
    await new Promise((r) => setImmediate(r));
  });
});
