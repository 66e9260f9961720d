import type { KoaContextWithOIDC } from 'oidc-provider';
import { passwordGrantHandler } from '../../src/oidc/password-grant';
import type { UserTokenContext } from '../../src/oidc/user-tokens';
import type { Tenant } from '../../src/tenants/repository';
import type { LoginEnd } from '../../src/users/login-end';
import type { User } from '../../src/users/repository';
import type { UserService } from '../../src/users/service';

/**
 * A right password whose session is never stored must not stay counted as a failed attempt: at the
 * lockout threshold, an attempt counted and never followed by a lock would keep the user out. The
 * handler gives it back apart (the database behaviour of both ways of closing a login is covered by
 * tests/integration/adapter.contract.test.ts).
 */
describe('password grant: a login whose session is not stored is closed apart', () => {
  const tenant = { id: 't1', policy: {} } as unknown as Tenant;
  const user = { id: '10000000-0000-4000-8000-000000000009', tenantId: 't1' } as unknown as User;
  const end: LoginEnd = { tenantId: 't1', userId: user.id, key: 'login_ip:198.51.100.7', now: 1, epoch: 0, windowEnd: 60_001 };

  function setup(failure: { mfa?: Error; session?: Error }) {
    const closed: LoginEnd[] = [];
    const users = {
      authenticate: async () => ({ user, end }),
      closeLogin: async (e: LoginEnd) => {
        closed.push(e);
      },
    } as unknown as UserService;
    const handler = passwordGrantHandler({
      users,
      tenantFor: async () => tenant,
      mfaPending: async () => {
        if (failure.mfa) throw failure.mfa;
        return false;
      },
      // startUserSession's first use of its context: failing there stores nothing.
      context: () => {
        if (failure.session) throw failure.session;
        return {} as UserTokenContext;
      },
    });
    const ctx = {
      oidc: { client: { clientId: 'c1', scope: 'accounts' }, params: { username: 'ann', password: 'right one' } },
      ip: '198.51.100.7',
      get: () => '',
      set: () => undefined,
    } as unknown as KoaContextWithOIDC;
    return { run: () => handler(ctx), closed };
  }

  test('login-time MFA cannot be looked up: the error stands, the attempt is given back', async () => {
    const s = setup({ mfa: new Error('factors unavailable') });
    await expect(s.run()).rejects.toThrow('factors unavailable');
    expect(s.closed).toEqual([end]);
  });

  test('the session cannot be started: the error stands, the attempt is given back', async () => {
    const s = setup({ session: new Error('no provider') });
    await expect(s.run()).rejects.toThrow('no provider');
    expect(s.closed).toEqual([end]);
  });
});
