import { DEFAULT_POLICY, resolvePolicy, validOverrides } from '../../src/tenants/policy';

describe('a tenant policy resolves key by key', () => {
  test('a key unknown to this release, or out of range, leaves out only itself', () => {
    const stored = { requireApiKey: true, mfaAtLogin: true, lockoutThreshold: 2, newFutureKey: 5 };
    expect(validOverrides(stored)).toEqual({ valid: { requireApiKey: true, mfaAtLogin: true }, ignored: ['lockoutThreshold', 'newFutureKey'] });
    expect(resolvePolicy(stored)).toEqual({ ...DEFAULT_POLICY, requireApiKey: true, mfaAtLogin: true });
  });

  test('nothing stored, or something that is not an object', () => {
    expect(validOverrides(null)).toEqual({ valid: {}, ignored: [] });
    expect(validOverrides([1])).toEqual({ valid: {}, ignored: ['(the stored policy is not an object)'] });
    expect(resolvePolicy('x', { otpLength: 8 })).toEqual({ ...DEFAULT_POLICY, otpLength: 8 });
  });

  test('inherited names are not policy keys', () => {
    expect(validOverrides(JSON.parse('{"toString": 1, "__proto__": {"requireApiKey": true}}'))).toEqual({ valid: {}, ignored: ['toString', '__proto__'] });
  });
});
