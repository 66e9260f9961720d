import { randomBytes } from 'node:crypto';
import { constantTimeEqual, createSealer, generateSecret, hashSecret, verifySecret } from '../../src/crypto/secrets';

describe('secrets', () => {
  test('generated secrets carry at least 256 bits', () => {
    const s = generateSecret();
    expect(Buffer.from(s, 'base64url').length).toBe(32);
    expect(generateSecret()).not.toBe(s);
  });

  test('a secret verifies against its hash only', () => {
    const s = generateSecret();
    const h = hashSecret(s);
    expect(h).not.toContain(s);
    expect(verifySecret(s, h)).toBe(true);
    expect(verifySecret(`${s}x`, h)).toBe(false);
    expect(verifySecret('', h)).toBe(false);
    expect(verifySecret(undefined, h)).toBe(false);
    expect(verifySecret(s, null)).toBe(false);
  });

  test('constantTimeEqual', () => {
    expect(constantTimeEqual('abc', 'abc')).toBe(true);
    expect(constantTimeEqual('abc', 'abd')).toBe(false);
    expect(constantTimeEqual('abc', 'abcd')).toBe(false);
  });

  test('sealed data opens only with its key and detects tampering', () => {
    const key = randomBytes(32);
    const sealer = createSealer(key);
    const sealed = sealer.seal('{"d":"private"}');
    expect(sealed).not.toContain('private');
    expect(sealer.open(sealed)).toBe('{"d":"private"}');
    expect(() => createSealer(randomBytes(32)).open(sealed)).toThrow();
    const parts = sealed.split('.');
    parts[2] = Buffer.from('tampered').toString('base64url');
    expect(() => sealer.open(parts.join('.'))).toThrow();
    expect(() => createSealer(randomBytes(16))).toThrow();
  });
});
