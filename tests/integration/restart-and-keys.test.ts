import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';
import { startTestServer, type TestServer } from '../helpers/server';
import { clientCredentialsToken, createClient, createTenant, createUser, introspect, login, type ClientCreds } from '../helpers/flows';
import { randomBytes } from 'node:crypto';
import { createTestStore, dbLabel, type TestStore } from '../helpers/env';
import { startupFailure } from '../../src/cli/main';

async function jwksKids(srv: TestServer): Promise<string[]> {
  const body = (await (await fetch(`${srv.base}/jwks`)).json()) as { keys: Array<{ kid: string }> };
  return body.keys.map((k) => k.kid);
}

async function verify(srv: TestServer, token: string) {
  const jwks = createRemoteJWKSet(new URL(`${srv.base}/jwks`));
  return jwtVerify(token, jwks, { issuer: srv.running.app.config.publicUrl, typ: 'at+jwt' });
}

describe(`restarts and key rotation (${dbLabel})`, () => {
  let store: TestStore;
  let srv: TestServer;
  let app: ClientCreds;
  let rs: ClientCreds;
  let jwtApp: ClientCreds;

  beforeAll(async () => {
    store = await createTestStore();
    srv = await startTestServer({ store });
    await createTenant(srv, 'bank-a');
    app = await createClient(srv, { tenants: ['bank-a'] });
    rs = await createClient(srv, { tenants: ['bank-a'], introspection: true });
    jwtApp = await createClient(srv, { tenants: ['bank-a'], token_format: 'jwt' });
  });
  afterAll(async () => {
    await srv?.stop();
    await store?.cleanup();
  });

  test('a token issued before a restart still introspects active after it, with the same keys', async () => {
    const opaque = (await clientCredentialsToken(srv, app)).access_token;
    const jwt = (await clientCredentialsToken(srv, jwtApp)).access_token;
    const kidsBefore = await jwksKids(srv);
    await srv.stop();

    srv = await startTestServer({ store, port: srv.running.port });
    expect(await jwksKids(srv)).toEqual(kidsBefore);
    const info = await introspect(srv, rs, opaque);
    expect(info.json).toMatchObject({ active: true, tenant: 'bank-a', client_id: app.client_id });
    await expect(verify(srv, jwt)).resolves.toBeDefined();
  });

  test('keys rotate: the new key is published, the old one keeps verifying its tokens', async () => {
    const before = (await clientCredentialsToken(srv, jwtApp)).access_token;
    const oldKid = decodeProtectedHeader(before).kid!;
    const rotated = await srv.running.app.services.keyService.rotate();
    expect(await srv.running.app.holder.refresh()).toBe(true);

    const kids = await jwksKids(srv);
    expect(kids).toEqual(expect.arrayContaining([oldKid, rotated.kid]));
    await expect(verify(srv, before)).resolves.toBeDefined();

    // test config publishes with no delay: new tokens are signed by the new key
    const after = (await clientCredentialsToken(srv, jwtApp)).access_token;
    expect(decodeProtectedHeader(after).kid).toBe(rotated.kid);
    await expect(verify(srv, after)).resolves.toBeDefined();

    // and a restarted server agrees
    await srv.stop();
    srv = await startTestServer({ store, port: srv.running.port });
    await expect(verify(srv, before)).resolves.toBeDefined();
    await expect(verify(srv, after)).resolves.toBeDefined();
  });

  test('SIGNING_ALG=RS256 (RFC 9068 §4): the next rotation makes an RSA key; tokens of both keys verify everywhere', async () => {
    await srv.stop();
    srv = await startTestServer({ store, config: { keys: { alg: 'RS256' } } });
    const before = (await clientCredentialsToken(srv, jwtApp)).access_token;
    expect(decodeProtectedHeader(before).alg).toBe('ES256'); // a change of algorithm takes effect at the next rotation

    const rotated = await srv.running.app.services.keyService.rotate();
    expect(rotated.alg).toBe('RS256');
    await srv.running.app.holder.refresh();
    const jwks = (await (await fetch(`${srv.base}/jwks`)).json()) as { keys: Array<Record<string, unknown>> };
    const rsa = jwks.keys.find((k) => k.kid === rotated.kid)!;
    expect(rsa).toMatchObject({ kty: 'RSA', alg: 'RS256', use: 'sig', e: 'AQAB' });
    expect(Buffer.from(rsa.n as string, 'base64url').length).toBe(256); // 2048 bits
    for (const secret of ['d', 'p', 'q', 'dp', 'dq', 'qi']) expect(rsa[secret]).toBeUndefined();

    const after = (await clientCredentialsToken(srv, jwtApp)).access_token;
    expect(decodeProtectedHeader(after)).toMatchObject({ alg: 'RS256', kid: rotated.kid, typ: 'at+jwt' });
    for (const token of [before, after]) {
      await expect(verify(srv, token)).resolves.toBeDefined();
      expect((await introspect(srv, rs, token)).json).toMatchObject({ active: true, client_id: jwtApp.client_id });
    }
    // Our own routes take it as a bearer token too (a user's RS256 JWT).
    const users = await createClient(srv, { tenants: ['bank-a'], grant_types: ['password'], token_format: 'jwt' });
    await createUser(srv, 'bank-a', { username: 'rsa-user', password: 'a long and unusual passphrase' });
    const userJwt = (await login(srv, users, 'rsa-user', 'a long and unusual passphrase')).access_token;
    expect(decodeProtectedHeader(userJwt).alg).toBe('RS256');
    expect((await fetch(`${srv.base}/users/me`, { headers: { authorization: `Bearer ${userJwt}` } })).status).toBe(200);
    const meta = (await (await fetch(`${srv.base}/.well-known/oauth-authorization-server`)).json()) as { id_token_signing_alg_values_supported: string[] };
    expect(meta.id_token_signing_alg_values_supported).toEqual(expect.arrayContaining(['ES256', 'RS256']));
  });

  test('a rotated key is published before it signs; the old one is scheduled to retire', async () => {
    await srv.stop();
    srv = await startTestServer({ store, config: { keys: { publishBeforeUseSeconds: 3600, maxTokenLifetimeSeconds: 60 } } });
    const signingBefore = decodeProtectedHeader((await clientCredentialsToken(srv, jwtApp)).access_token).kid;
    const next = await srv.running.app.services.keyService.rotate();
    await srv.running.app.holder.refresh();
    expect(await jwksKids(srv)).toContain(next.kid);
    // published, not yet signing
    expect(decodeProtectedHeader((await clientCredentialsToken(srv, jwtApp)).access_token).kid).toBe(signingBefore);

    const keys = await srv.running.app.services.keyService.list();
    const old = keys.find((k) => k.kid === signingBefore)!;
    expect(old.retiredAt?.getTime()).toBe(next.activatesAt.getTime());
    expect(old.expiresAt!.getTime() - next.activatesAt.getTime()).toBe(60_000);
  });

  test('restarted with another SECRETS_KEY: it says so in one line, not a stack trace', async () => {
    const port = srv.running.port;
    await srv.stop();
    const failure = await startTestServer({ store, port, config: { secretsKey: randomBytes(32).toString('base64') } }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(startupFailure(failure)).toMatch(/^cannot decrypt signing key \S+: SECRETS_KEY is not the key it was sealed with$/);
    srv = await startTestServer({ store, port });
    expect((await jwksKids(srv)).length).toBeGreaterThan(0);
  });
});
