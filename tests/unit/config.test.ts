import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig, ConfigError } from '../../src/config';
import { startupFailure } from '../../src/cli/main';

const base = { NODE_ENV: 'test' };

describe('configuration', () => {
  test('defaults, then NODE_ENV file, then environment', () => {
    const c = loadConfig({ ...base, PORT: '4000', PUBLIC_URL: 'https://auth.example.com/' });
    expect(c.port).toBe(4000);
    expect(c.publicUrl).toBe('https://auth.example.com');
    expect(c.bcryptCost).toBe(4); // config/test.json
    expect(c.tokens.accessTokenTtlSeconds).toBe(1800);
    expect(c.dbPoolMax).toBe(4);
    expect(c.passwordRehash).toBe(true);
    expect(loadConfig({ ...base, PASSWORD_REHASH: 'off' }).passwordRehash).toBe(false);
    expect(loadConfig({ ...base, DB_POOL_MAX: '12' }).dbPoolMax).toBe(12);
    expect(c.batchWaitMs).toBe(1);
    // Any printable ASCII, space and RFC 6749's specials included, is a secret Basic can carry (form-encoded).
    expect(loadConfig({ ...base, PORTCULLIS_ADMIN_CLIENT_ID: 'env-admin', PORTCULLIS_ADMIN_CLIENT_SECRET: ` ${'s'.repeat(30)}:+%/=?&~` }).adminClientSecret).toMatch(/^ s+/);
    expect(loadConfig({ ...base, BATCH_WAIT_MS: '0' }).batchWaitMs).toBe(0);
    expect(Object.isFrozen(c)).toBe(true);
    expect(Object.isFrozen(c.tokens)).toBe(true);
  });

  test('a SECRETS_KEY in either base64 alphabet, padded or not, or ending in a line break, is taken', () => {
    const bytes = Buffer.from(Array.from({ length: 32 }, (_, i) => (i * 37 + 251) % 256));
    const standard = bytes.toString('base64');
    expect(standard).toMatch(/[+/]/);
    for (const key of [standard, standard.replace(/=$/, ''), `${standard}\n`, bytes.toString('base64url')]) {
      expect(Buffer.from(loadConfig({ ...base, SECRETS_KEY: key }).secretsKey!, 'base64')).toEqual(bytes);
    }
  });

  test.each([
    [{ PORT: 'abc' }, /port \(env PORT\)/],
    [{ PORT: '70000' }, /port \(env PORT\)/],
    // Only digits are a number: not a blank, hexadecimal, a fraction or an exponent.
    [{ PORT: ' ' }, /port \(env PORT\): must be a whole number from 0 to 65535/],
    [{ PORT: '0x0D71' }, /port \(env PORT\)/],
    [{ PORT: '3441.0' }, /port \(env PORT\)/],
    [{ BCRYPT_COST: '0x0C' }, /bcryptCost \(env BCRYPT_COST\)/],
    [{ WEB_CONCURRENCY: '1e1' }, /webConcurrency \(env WEB_CONCURRENCY\)/],
    // Past 2^31 - 1 ms Node's timers fire at once: the drain would cut requests off.
    [{ SHUTDOWN_TIMEOUT_MS: '3000000000' }, /shutdownTimeoutMs \(env SHUTDOWN_TIMEOUT_MS\)/],
    // SIGTERM must not cut a delivery off half-done: 3 × 2500 ms + 750 ms of backoff, and a second, is 9.25 s.
    [{ SMS_SENDER: 'webhook', SMS_WEBHOOK_URL: 'https://sms.example/hook', WEBHOOK_SECRET: 'a webhook secret of length', SHUTDOWN_TIMEOUT_MS: '9000' }, /webhook: the longest delivery \(8250 ms/],
    [{ PUBLIC_URL: 'not a url' }, /publicUrl \(env PUBLIC_URL\)/],
    [{ DATABASE_URL: 'mysql://x' }, /databaseUrl \(env DATABASE_URL\)/],
    [{ SECRETS_KEY: 'c2hvcnQ=' }, /secretsKey \(env SECRETS_KEY\)/],
    // 32 bytes all the same once Buffer has skipped the '!': a typo, refused.
    [{ SECRETS_KEY: `${'A'.repeat(20)}!${'A'.repeat(23)}=` }, /secretsKey \(env SECRETS_KEY\)/],
    [{ LOG_LEVEL: 'loud' }, /logLevel \(env LOG_LEVEL\)/],
    [{ WEB_CONCURRENCY: '0' }, /webConcurrency \(env WEB_CONCURRENCY\)/],
    [{ DB_POOL_MAX: '0' }, /dbPoolMax \(env DB_POOL_MAX\): must be a whole number from 1 to 1000/],
    [{ DB_POOL_MAX: 'many' }, /dbPoolMax \(env DB_POOL_MAX\)/],
    [{ BATCH_WAIT_MS: '51' }, /batchWaitMs \(env BATCH_WAIT_MS\): must be a whole number from 0 to 50/],
    [{ BATCH_WAIT_MS: '0.5' }, /batchWaitMs \(env BATCH_WAIT_MS\)/],
    [{ PASSWORD_REHASH: 'ture' }, /passwordRehash \(env PASSWORD_REHASH\)/],
    [{ WORKER_HEAP_LIMIT_MB: '64' }, /workerHeapLimitMb \(env WORKER_HEAP_LIMIT_MB\)/],
    [{ WORKER_HEAP_LIMIT_MB: 'lots' }, /workerHeapLimitMb \(env WORKER_HEAP_LIMIT_MB\)/],
    [{ WORKER_HEAP_LIMIT_MB: '1.5' }, /workerHeapLimitMb \(env WORKER_HEAP_LIMIT_MB\)/],
    [{ WORKER_HEAP_LIMIT_MB: '-1' }, /workerHeapLimitMb \(env WORKER_HEAP_LIMIT_MB\)/],
    [{ WORKER_MIN_SEMI_SPACE_MB: '257' }, /workerMinSemiSpaceMb \(env WORKER_MIN_SEMI_SPACE_MB\)/],
    [{ WORKER_MIN_SEMI_SPACE_MB: 'big' }, /workerMinSemiSpaceMb \(env WORKER_MIN_SEMI_SPACE_MB\)/],
    [{ WORKER_MIN_SEMI_SPACE_MB: '-1' }, /workerMinSemiSpaceMb \(env WORKER_MIN_SEMI_SPACE_MB\)/],
    [{ EMBEDDED_SHARED_BUFFERS_MB: '0' }, /embeddedSharedBuffersMb \(env EMBEDDED_SHARED_BUFFERS_MB\)/],
    [{ EMBEDDED_SHARED_BUFFERS_MB: '32MB' }, /embeddedSharedBuffersMb \(env EMBEDDED_SHARED_BUFFERS_MB\)/],
    [{ EMBEDDED_SHARED_BUFFERS_MB: '2048' }, /embeddedSharedBuffersMb \(env EMBEDDED_SHARED_BUFFERS_MB\)/], // PGlite's WebAssembly memory cannot hold it
    [{ SIGNING_ALG: 'HS256' }, /keys\.alg \(env SIGNING_ALG\)/],
    // Not VSCHAR (RFC 6749 Appendix A.2): client_secret_basic could never carry it.
    [{ PORTCULLIS_ADMIN_CLIENT_ID: 'env-admin', PORTCULLIS_ADMIN_CLIENT_SECRET: `${'s'.repeat(32)}€` }, /adminClientSecret \(env PORTCULLIS_ADMIN_CLIENT_SECRET\): printable ASCII/],
    [{ PORTCULLIS_ADMIN_CLIENT_ID: 'env-admin', PORTCULLIS_ADMIN_CLIENT_SECRET: `${'s'.repeat(32)}\t` }, /adminClientSecret \(env PORTCULLIS_ADMIN_CLIENT_SECRET\): printable ASCII/],
  ])('a bad value names its key: %o', (env, message) => {
    expect(() => loadConfig({ ...base, ...env })).toThrow(ConfigError);
    expect(() => loadConfig({ ...base, ...env })).toThrow(message);
  });

  test('the token audience must be one a request can name as its resource: an absolute URI without a fragment', () => {
    for (const jwtAudience of ['portcullis-api', 'https://api.example/#v1', '']) {
      expect(() => loadConfig(base, { tokens: { jwtAudience } })).toThrow(/tokens\.jwtAudience: must be an absolute URI without a fragment/);
    }
    expect(loadConfig(base, { tokens: { jwtAudience: 'https://api.bank.example/' } }).tokens.jwtAudience).toBe('https://api.bank.example/');
    expect(loadConfig(base, { tokens: { jwtAudience: 'urn:bank:api' } }).tokens.jwtAudience).toBe('urn:bank:api');
  });

  test('SIGNING_ALG sets the algorithm of new signing keys, the rest of keys.* kept', () => {
    expect(loadConfig(base).keys.alg).toBe('ES256');
    const c = loadConfig({ ...base, SIGNING_ALG: 'RS256' });
    expect(c.keys).toEqual({ ...loadConfig(base).keys, alg: 'RS256' });
  });

  test('a key no setting has, in a config file or nested, is named as an error, never silently ignored', () => {
    const typos = () => loadConfig(base, { tokens: { accesTokenTtlSeconds: 60 }, sweepIntervalSecs: 5 });
    expect(typos).toThrow(ConfigError);
    expect(typos).toThrow(/tokens\.accesTokenTtlSeconds: not a setting[\s\S]*sweepIntervalSecs: not a setting/);
    const dir = mkdtempSync(path.join(os.tmpdir(), 'portcullis-config-'));
    try {
      writeFileSync(path.join(dir, 'default.json'), readFileSync(path.resolve(__dirname, '../../config/default.json')));
      writeFileSync(path.join(dir, 'development.json'), JSON.stringify({ prot: 4000 }));
      expect(() => loadConfig({ PORTCULLIS_CONFIG_DIR: dir })).toThrow(/prot: not a setting/);
      writeFileSync(path.join(dir, 'development.json'), '[1, 2]');
      expect(() => loadConfig({ PORTCULLIS_CONFIG_DIR: dir })).toThrow(/development\.json: must hold one JSON object of settings/);
      writeFileSync(path.join(dir, 'development.json'), '{}');
      expect(loadConfig({ PORTCULLIS_CONFIG_DIR: dir }).port).toBe(3000);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('TRUST_PROXY reads as a boolean', () => {
    expect(loadConfig({ ...base, TRUST_PROXY: 'true' }).trustProxy).toBe(true);
    expect(loadConfig({ ...base, TRUST_PROXY: '0' }).trustProxy).toBe(false);
  });

  test('a yes/no setting takes yes or no, never a typo read as no', () => {
    for (const [value, want] of [['1', true], ['TRUE', true], ['yes', true], ['On', true], ['0', false], ['false', false], ['No', false], ['off', false]] as const) {
      expect([value, loadConfig({ ...base, TRUST_PROXY: value }).trustProxy]).toEqual([value, want]);
    }
    for (const [name, key] of [['TRUST_PROXY', 'trustProxy'], ['INTROSPECTION_FAST_PATH', 'introspectionFastPath'], ['CLIENT_CREDENTIALS_FAST_PATH', 'clientCredentialsFastPath'], ['PASSWORD_FAST_PATH', 'passwordFastPath']] as const) {
      for (const typo of ['ture', 'enabled', 'y']) {
        expect(() => loadConfig({ ...base, [name]: typo })).toThrow(`${key} (env ${name}): must be one of 1, true, yes, on (yes) or 0, false, no, off (no)`);
      }
    }
  });

  test('PUBLIC_URL is an issuer identifier: no query, no fragment', () => {
    for (const url of ['http://127.0.0.1:3124/?x=1', 'https://auth.example#frag', 'https://auth.example/?']) {
      expect(() => loadConfig({ ...base, PUBLIC_URL: url })).toThrow('publicUrl (env PUBLIC_URL): must not have a query or fragment (it is the issuer identifier)');
    }
  });

  test('a bad PORT is reported as itself, not as a missing PUBLIC_URL', () => {
    for (const PORT of ['abc', '70000']) {
      let message = '';
      try {
        loadConfig({ ...base, PORT });
      } catch (err) {
        message = (err as Error).message;
      }
      expect([PORT, message]).toEqual([PORT, expect.stringMatching(/port \(env PORT\)/)]);
      expect(message).not.toMatch(/publicUrl/);
    }
  });
});

describe('start-up failures of the machine around the server: one line naming the setting', () => {
  const config = { databaseUrl: 'postgres://app:s3cret@db.internal:5432/portcullis', dataDir: '/var/lib/portcullis', port: 3000 };
  const err = (props: Record<string, unknown>) => Object.assign(new Error(String(props.message ?? 'boom')), props);
  test.each([
    [err({ code: 'EADDRINUSE', syscall: 'listen', port: 3000 }), 'cannot listen on port 3000 (PORT): another process is using it'],
    [err({ code: 'EADDRINUSE', syscall: 'bind', port: 3000 }), 'cannot listen on port 3000 (PORT): another process is using it'],
    [err({ code: 'EACCES', syscall: 'listen', port: 80 }), 'cannot listen on port 80 (PORT): permission denied'],
    [err({ code: 'ECONNREFUSED', syscall: 'connect', message: 'connect ECONNREFUSED 10.0.0.5:5432' }), 'cannot use the database postgres://app:***@db.internal:5432/portcullis (DATABASE_URL): connect ECONNREFUSED 10.0.0.5:5432'],
    [err({ code: '3D000', message: 'database "portcullis" does not exist' }), 'cannot use the database postgres://app:***@db.internal:5432/portcullis (DATABASE_URL): database "portcullis" does not exist'],
    [err({ code: '28P01', message: 'password authentication failed for user "app"' }), 'cannot use the database postgres://app:***@db.internal:5432/portcullis (DATABASE_URL): password authentication failed for user "app"'],
    [err({ code: 'EEXIST', syscall: 'mkdir', path: '/var/lib/portcullis' }), 'cannot use /var/lib/portcullis (DATA_DIR): it is not a directory'],
    [err({ code: 'EACCES', syscall: 'open', path: '/var/lib/portcullis/secrets.key' }), 'cannot use /var/lib/portcullis/secrets.key (DATA_DIR): EACCES'],
  ])('%s', (e, line) => {
    expect(startupFailure(e, config)).toBe(line);
  });

  test("the database URL's query, where a password can also be, is not printed", () => {
    const withQuery = { ...config, databaseUrl: 'postgres://db.internal/portcullis?password=s3cret&sslpassword=x' };
    expect(startupFailure(err({ code: '28P01', message: 'no' }), withQuery)).toBe('cannot use the database postgres://db.internal/portcullis (DATABASE_URL): no');
  });

  test('anything else is not dressed up (its stack is printed)', () => {
    expect(startupFailure(new TypeError('x is undefined'), config)).toBeUndefined();
    expect(startupFailure(err({ code: 'ENOENT', syscall: 'open', path: '/etc/elsewhere' }), config)).toBeUndefined();
  });
});

test('without PUBLIC_URL the issuer follows PORT', () => {
  expect(loadConfig({ NODE_ENV: 'test', PORT: '4100' }).publicUrl).toBe('http://localhost:4100');
});
