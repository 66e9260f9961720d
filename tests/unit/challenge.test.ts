import { authChallenge, basicChallenge, bearerChallenge } from '../../src/http/challenge';

describe('bearerChallenge (RFC 6750 §3)', () => {
  test('the realm alone, then parameters in order; undefined ones left out', () => {
    expect(bearerChallenge('https://as.example')).toBe('Bearer realm="https://as.example"');
    expect(bearerChallenge('https://as.example', { error: undefined })).toBe('Bearer realm="https://as.example"');
    expect(bearerChallenge('r', { error: 'insufficient_scope', scope: 'admin' })).toBe('Bearer realm="r", error="insufficient_scope", scope="admin"');
  });

  test('numbers are tokens, strings quoted-strings with quotes and backslashes escaped', () => {
    expect(bearerChallenge('r', { max_age: 300 })).toBe('Bearer realm="r", max_age=300');
    expect(bearerChallenge('a "b" \\c', { error_description: 'say "no"' })).toBe('Bearer realm="a \\"b\\" \\\\c", error_description="say \\"no\\""');
  });

  test("Basic, in oidc-provider's format for a refused client authentication", () => {
    expect(authChallenge('Basic', 'https://as.example')).toBe('Basic realm="https://as.example"');
    expect(basicChallenge('https://as.example')).toBe('Basic realm="https://as.example", error="invalid_client"');
    expect(basicChallenge('https://as.example', 'client authentication failed')).toBe(
      'Basic realm="https://as.example", error="invalid_client", error_description="client authentication failed"',
    );
  });
});
