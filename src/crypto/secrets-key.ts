import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { ConfigError, type Config } from '../config';

/**
 * SECRETS_KEY from the environment; in development and tests without it, a key file in DATA_DIR
 * created on first use (mode 0600). Production refuses to start without SECRETS_KEY, because a key
 * that lives beside the data protects nothing.
 */
export function loadSecretsKey(config: Config): Buffer {
  if (config.secretsKey) return Buffer.from(config.secretsKey, 'base64');
  if (config.env === 'production') {
    throw new ConfigError('SECRETS_KEY is required in production (32 random bytes, base64): openssl rand -base64 32');
  }
  const file = path.join(config.dataDir, 'secrets.key');
  if (existsSync(file)) {
    const key = Buffer.from(readFileSync(file, 'utf8').trim(), 'base64');
    if (key.length !== 32) throw new ConfigError(`${file} does not hold a 32-byte base64 key`);
    return key;
  }
  mkdirSync(config.dataDir, { recursive: true });
  const key = randomBytes(32);
  try {
    writeFileSync(file, `${key.toString('base64')}\n`, { mode: 0o600, flag: 'wx' });
    return key;
  } catch (err) {
    // Another process created it first: use theirs.
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return loadSecretsKey(config);
    throw err;
  }
}
