import type { IncomingMessage } from 'node:http';
import { finished, Readable } from 'node:stream';
import type Koa from 'koa';
import type { Logger } from '../log';
import type { Metrics } from '../metrics';
import { isDatabaseUnavailable } from '../db/unavailable';
import { answerUnavailable } from './middleware';

/**
 * What the fast paths of the token and introspection endpoints share (fast-client-credentials.ts,
 * fast-introspection.ts): reading a form request exactly as oidc-provider reads it, and handing it
 * to the library unchanged whenever the plain case does not hold.
 */

const STRICT_BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** An endpoint's fast path, as app.ts drives it. */
export interface FastPath {
  /** Off: every request goes through oidc-provider (a kill switch, and the tests' reference). */
  enabled: boolean;
  /** Requests answered here (not handed to the library). */
  served: number;
  /** handled: answered; else hand the request to the library, with `body` replayed if it was read. */
  handle(ctx: Koa.Context): Promise<{ handled: true } | { handled: false; body?: Buffer }>;
}

/** Form parameters of client authentication: a request carrying any of them in its body is the library's. */
export const CLIENT_AUTH_PARAMS = ['client_id', 'client_secret', 'client_assertion', 'client_assertion_type'];

/** The library's own limit on a form body (oidc-provider's selective_body). */
const LIBRARY_BODY_LIMIT = 56 * 1024;

/**
 * The largest body the OAuth endpoints take: our limit, or the library's where it is lower (it
 * would refuse a larger one as an unreadable body, 400, where it is one too large, 413).
 */
export function oauthBodyLimit(bodyLimitBytes: number): number {
  return Math.min(LIBRARY_BODY_LIMIT, bodyLimitBytes);
}

/** The library's decoding of one half of a Basic credential; undefined where it would refuse. */
function basicPart(raw: string): string | undefined {
  try {
    const value = decodeURIComponent(raw.replace(/\+/g, '%20'));
    return value && !/[^\x20-\x7E]/.test(value) ? value : undefined;
  } catch {
    return undefined;
  }
}

/** client_secret_basic's id and secret, where the library would read the same; else undefined. */
export function basicCredentials(header: string | undefined): { id: string; secret: string } | undefined {
  if (!header) return undefined;
  const parts = header.split(' ');
  if (parts.length !== 2 || parts[0]!.toLowerCase() !== 'basic' || !parts[1] || !STRICT_BASE64.test(parts[1])) return undefined;
  const decoded = Buffer.from(parts[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon === -1) return undefined;
  const id = basicPart(decoded.slice(0, colon));
  const secret = basicPart(decoded.slice(colon + 1));
  return id && secret ? { id, secret } : undefined;
}

/**
 * A request a fast path may read: a form in UTF-8 (another charset is the library's to decode), of
 * a declared length within the library's limit and ours (so it can always be read here), without
 * an Origin (the app drops it before either path reads the request: src/app.ts, withholdCors) or
 * client attestation.
 */
export function plainFormRequest(ctx: Koa.Context, bodyLimitBytes: number): boolean {
  const h = ctx.headers;
  if (h.origin !== undefined || h['oauth-client-attestation'] !== undefined || h['oauth-client-attestation-pop'] !== undefined) return false;
  if (ctx.is('application/x-www-form-urlencoded') === false) return false;
  const charset = ctx.request.charset.toLowerCase();
  if (charset !== '' && charset !== 'utf-8') return false;
  const length = ctx.request.length;
  return length !== undefined && length <= oauthBodyLimit(bodyLimitBytes);
}

/** A request the library can read as if it arrived now: same headers and socket, body replayed. */
export function replayRequest(req: IncomingMessage, body: Buffer): IncomingMessage {
  const copy = Readable.from(body.length ? [body] : [], { objectMode: false }) as unknown as Record<string, unknown>;
  for (const key of ['headers', 'rawHeaders', 'trailers', 'rawTrailers', 'url', 'method', 'httpVersion', 'httpVersionMajor', 'httpVersionMinor', 'socket', 'complete'] as const) {
    copy[key] = req[key];
  }
  return copy as unknown as IncomingMessage;
}

/**
 * A request's body, collected whole if it stays within `limit` bytes, handed to `done`: 'too large'
 * as soon as it passes it (the rest left unread: discardBody), undefined when the caller went away
 * mid-body. A 'data' listener and finished(), not an async iterator: the same end, error and
 * premature-close handling, without the iterator's promises per request (bench/NOTES.md, allocation).
 */
function collectBody(req: IncomingMessage, limit: number, done: (body: Buffer | 'too large' | undefined) => void): void {
  const chunks: Buffer[] = [];
  let received = 0;
  const onData = (chunk: Buffer) => {
    received += chunk.length;
    if (received <= limit) return void chunks.push(chunk);
    req.off('data', onData);
    req.pause();
    cleanup();
    done('too large');
  };
  req.on('data', onData);
  const cleanup = finished(req, { writable: false }, (err) => {
    cleanup();
    req.off('data', onData);
    done(err ? undefined : chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, received));
  });
}

/** A body of no declared length (chunked), within `limit` bytes (collectBody). */
export function readBodyWithin(req: IncomingMessage, limit: number): Promise<Buffer | 'too large' | undefined> {
  return new Promise((resolve) => collectBody(req, limit, resolve));
}

/** How much of a body refused as too large is still read (and dropped) before the connection is closed. */
const DISCARD_LIMIT = 1024 * 1024;

/**
 * The rest of a body refused as too large, read and dropped, up to `limit` bytes: a client still
 * sending then reads the 413 (a socket closed with data unread is reset, and a client mid-upload
 * sees the reset instead), and the connection stays usable. Past the limit it is closed.
 */
export function discardBody(req: IncomingMessage, limit = DISCARD_LIMIT): void {
  let dropped = 0;
  req.on('error', () => undefined); // the caller going away is no error here
  req.on('data', (chunk: Buffer) => {
    dropped += chunk.length;
    if (dropped > limit) req.socket.destroy();
  });
  req.resume();
}

/**
 * The body, of a length the request declared and plainFormRequest bounded (Node's parser holds it
 * to that); undefined when the caller went away mid-body: then answered as the library does, if
 * anyone still listens, and counted as the endpoint's invalid_request.
 */
export function readBody(ctx: Koa.Context, metrics: Pick<Metrics, 'failures'>, endpoint: string): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    collectBody(ctx.req, Infinity, (body) => {
      if (body instanceof Buffer) return resolve(body);
      ctx.status = 400;
      endpointHeaders(ctx);
      ctx.body = { error: 'invalid_request', error_description: 'failed to parse the request body' };
      metrics.failures.inc({ endpoint, error: 'invalid_request' });
      resolve(undefined);
    });
  });
}

/**
 * The headers the library's client-authenticated endpoints set on every answer: no caching (with
 * the Pragma we add), and their CORS answer to a request without an Origin (the app withholds the
 * CORS headers from an answer to one with an Origin: src/app.ts, withholdCors).
 */
export function endpointHeaders(ctx: Koa.Context): void {
  // In the library's order and spelling: its CORS middleware, then its no_cache.
  // On the raw response: Koa's set() builds two arrays per call. Like set(), nothing once the
  // headers are out (setHeader would throw).
  const res = ctx.res;
  if (res.headersSent) return;
  res.setHeader('Pragma', 'no-cache'); // RFC 6749 §5.1 (noCachePragma in token-errors.ts)
  ctx.vary('Origin');
  res.setHeader('Access-Control-Allow-Origin', '*');
  res.setHeader('Access-Control-Expose-Headers', 'WWW-Authenticate');
  res.setHeader('cache-control', 'no-store');
}

/**
 * A fast path's failure, answered as the library answers it: its generic 500 (its error handler),
 * which our middleware turns into a 503 that says so when the database is away (middleware.ts),
 * in that order, so the headers come in the library's order too — logged by name only, no
 * request data.
 */
export function answerFailure(ctx: Koa.Context, err: unknown, logger: Logger, route: string, what: string): void {
  endpointHeaders(ctx);
  ctx.status = 500;
  ctx.body = { error: 'server_error', error_description: 'oops! something went wrong' };
  if (isDatabaseUnavailable(err)) {
    logger.warn({ err, route }, 'database unavailable');
    answerUnavailable(ctx);
    return;
  }
  logger.error({ err, route }, what);
}
