import { loadConfig, ConfigError } from '../../src/config';

const base = { NODE_ENV: 'test' };

describe('configuration', () => {
  test('defaults, then NODE_ENV file, then environment', () => {
    const c = loadConfig({ ...base, PORT: '4000', PUBLIC_URL: 'https://auth.example.com/' });
    expect(c.port).toBe(4000);
    expect(c.publicUrl).toBe('https://auth.example.com');
    expect(c.bcryptCost).toBe(4); // config/test.json
    expect(c.tokens.accessTokenTtlSeconds).toBe(1800);
    expect(Object.isFrozen(c)).toBe(true);
    expect(Object.isFrozen(c.tokens)).toBe(true);
  });

  test.each([
    [{ PORT: 'abc' }, /port \(env PORT\)/],
    [{ PORT: '70000' }, /port \(env PORT\)/],
    [{ PUBLIC_URL: 'not a url' }, /publicUrl \(env PUBLIC_URL\)/],
    [{ DATABASE_URL: 'mysql://x' }, /databaseUrl \(env DATABASE_URL\)/],
    [{ SECRETS_KEY: 'c2hvcnQ=' }, /secretsKey \(env SECRETS_KEY\)/],
    [{ LOG_LEVEL: 'loud' }, /logLevel \(env LOG_LEVEL\)/],
    [{ WEB_CONCURRENCY: '0' }, /webConcurrency \(env WEB_CONCURRENCY\)/],
    [{ WORKER_HEAP_LIMIT_MB: '64' }, /workerHeapLimitMb \(env WORKER_HEAP_LIMIT_MB\)/],
    [{ WORKER_HEAP_LIMIT_MB: 'lots' }, /workerHeapLimitMb \(env WORKER_HEAP_LIMIT_MB\)/],
    [{ WORKER_HEAP_LIMIT_MB: '1.5' }, /workerHeapLimitMb \(env WORKER_HEAP_LIMIT_MB\)/],
    [{ WORKER_HEAP_LIMIT_MB: '-1' }, /workerHeapLimitMb \(env WORKER_HEAP_LIMIT_MB\)/],
    [{ EMBEDDED_SHARED_BUFFERS_MB: '0' }, /embeddedSharedBuffersMb \(env EMBEDDED_SHARED_BUFFERS_MB\)/],
    [{ EMBEDDED_SHARED_BUFFERS_MB: '32MB' }, /embeddedSharedBuffersMb \(env EMBEDDED_SHARED_BUFFERS_MB\)/],
    [{ EMBEDDED_SHARED_BUFFERS_MB: '2048' }, /embeddedSharedBuffersMb \(env EMBEDDED_SHARED_BUFFERS_MB\)/], // PGlite's WebAssembly memory cannot hold it
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

  test('TRUST_PROXY reads as a boolean', () => {
    expect(loadConfig({ ...base, TRUST_PROXY: 'true' }).trustProxy).toBe(true);
    expect(loadConfig({ ...base, TRUST_PROXY: '0' }).trustProxy).toBe(false);
  });
});

test('without PUBLIC_URL the issuer follows PORT', () => {
  expect(loadConfig({ NODE_ENV: 'test', PORT: '4100' }).publicUrl).toBe('http://localhost:4100');
});
