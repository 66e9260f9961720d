import { randomBytes, randomUUID } from 'node:crypto';
import { AppError } from '../errors';
import type { TxContext } from '../db/tx';
import type { AuditLog } from '../audit/repository';
import type { Challenge, FactorChannel, FactorRepository } from '../factors/repository';
import type { Caller, FactorService, PushChannel } from '../factors/service';
import { ownerOf, verificationFailed } from '../factors/service';
import type { ProviderHolder } from '../oidc/holder';
import { issueStepUpToken, SessionGoneError } from '../oidc/user-tokens';
import { endPendingLogin } from '../oidc/adapter';
import { bindingHash, describe, type AuthorizationDetails } from './details';
import type { Metrics } from '../metrics';

/** The token asking for a step-up: what the new token inherits, and who may collect it. */
export interface StepUpRequester {
  tokenId: string;
  scope: string[];
  pending: boolean;
}

/** RFC 8176 amr of each factor: SMS one-time code; a software key (Authy) or a hardware-backed key. */
const AMR: Record<FactorChannel, string[]> = {
  SMS: ['pwd', 'otp', 'sms'],
  AUTHY: ['pwd', 'swk'],
  BIOMETRIC: ['pwd', 'hwk'],
};

export type ChallengeView = { challengeId: string; status: 'PENDING' | 'APPROVED' | 'DENIED' | 'EXPIRED'; expiresAt: string };

export function createStepUpService(deps: {
  tx: TxContext;
  factors: FactorRepository;
  factorService: FactorService;
  holder: ProviderHolder;
  audit: AuditLog;
  clock: () => Date;
  metrics: Metrics;
}) {
  const { factors, factorService, tx, clock, audit } = deps;

  async function requireActive(caller: Caller, channel: FactorChannel) {
    const factor = await factors.find(caller.tenant.id, caller.user.id, channel);
    if (factor?.status !== 'ACTIVE') throw new AppError('FACTOR_NOT_ACTIVE', 409, `No active ${channel} factor`);
    return factor;
  }

  async function issue(caller: Caller, challenge: Challenge, channel: FactorChannel) {
    // A login completes once: its pending token ends here, before anything is issued. A second
    // challenge of the same login (SMS and push opened with it, answered at once) finds it gone.
    if (challenge.completesLogin && (!challenge.sessionId || (await endPendingLogin(tx, challenge.sessionId)) === 0)) throw verificationFailed();
    try {
      const token = await issueStepUpToken(deps.holder.userTokenContext(), {
        clientId: challenge.clientId ?? caller.clientId,
        tenant: caller.tenant,
        user: caller.user,
        sessionId: challenge.sessionId ?? '',
        scope: (challenge.scope ?? '').split(' ').filter(Boolean),
        amr: AMR[channel],
        authorizationDetails: challenge.authorizationDetails ?? undefined,
        completesLogin: challenge.completesLogin,
      });
      deps.metrics.stepUps.inc({ channel, tenant: caller.tenant.id });
      await audit.record({
        tenantId: caller.tenant.id, actor: caller.user.id, type: 'stepup.succeeded', target: caller.user.id,
        details: { channel, challengeId: challenge.id, transaction: !!challenge.bindingHash, completesLogin: challenge.completesLogin },
      });
      return token;
    } catch (err) {
      if (err instanceof SessionGoneError) throw verificationFailed();
      throw err;
    }
  }

  const transactionText = (details?: AuthorizationDetails) => (details ? ` to pay ${describe(details)}` : '');

  /**
   * A login waiting for its MFA is completed by a challenge of its own, never by a payment's: the
   * user approved that payment (dynamic linking), not a session, and the approval must not turn
   * into one.
   */
  const loginFirst = (requester: StepUpRequester, details?: AuthorizationDetails) => {
    if (requester.pending && details) {
      throw new AppError('LOGIN_PENDING', 403, 'This login is waiting for its strong customer authentication: complete it before authorising a transaction');
    }
  };

  return {
    async startSms(caller: Caller, requester: StepUpRequester, details?: AuthorizationDetails): Promise<void> {
      loginFirst(requester, details);
      await requireActive(caller, 'SMS');
      const minutes = Math.round(caller.tenant.policy.otpTtlSeconds / 60);
      await factorService.sendSmsCode(caller, 'stepup', {
        text: (code) => `${code} is your ${caller.tenant.name} code${transactionText(details)}. It expires in ${minutes} minutes. Never share it.`,
        authorizationDetails: details,
        bindingHash: details ? bindingHash(details) : undefined,
        clientId: caller.clientId,
        scope: requester.scope.join(' '),
        opener: requester.tokenId,
        completesLogin: requester.pending,
      });
    },

    /**
     * The code and, when details are presented, exactly the details it was issued for. Without them
     * (DESIGN's `{verificationCode}`) the code is checked against its challenge's own details, those
     * the text named and the token will carry: the code is bound to them either way.
     */
    async verifySms(caller: Caller, code: string, details?: AuthorizationDetails) {
      const challenge = await factors.latest(caller.tenant.id, caller.user.id, 'stepup', 'SMS', ownerOf(caller));
      const binding = details ? bindingHash(details) : (challenge?.bindingHash ?? undefined);
      return factorService.verifyCode(caller, challenge, code, (c) => issue(caller, c, 'SMS'), binding);
    },

    async startPush(caller: Caller, requester: StepUpRequester, channel: PushChannel, details?: AuthorizationDetails): Promise<ChallengeView> {
      const { tenant, user } = caller;
      loginFirst(requester, details);
      const factor = await requireActive(caller, channel);
      await factorService.takeCaps([{ key: `push:user:${user.id}`, cap: tenant.policy.pushPerUserPerHour }]);
      return tx.transaction(async () => {
        await factorService.lockCaller(tenant.id, user.id); // first (src/factors/repository.ts, lockUser's rule)
        const now = clock();
        // Against push bombing: one open push challenge at a time, and a capped number per hour.
        const cancelled = await factors.cancelPending(tenant.id, user.id, 'stepup', channel);
        const id = randomUUID();
        const nonce = randomBytes(32).toString('base64url');
        const challenge = await factors.createChallenge({
          id, tenantId: tenant.id, userId: user.id, factorId: factor.id, purpose: 'stepup', channel,
          sessionId: caller.sessionId, nonce, authorizationDetails: details, bindingHash: details ? bindingHash(details) : undefined,
          clientId: caller.clientId, scope: requester.scope.join(' '), opener: requester.tokenId, completesLogin: requester.pending,
          createdAt: now, expiresAt: new Date(now.getTime() + tenant.policy.otpTtlSeconds * 1000),
        });
        await factorService.sendPush(caller, {
          channel, challengeId: id, nonce, kind: 'stepup',
          text: details ? `Approve paying ${describe(details)} at ${tenant.name}?` : `Approve signing in to ${tenant.name}?`,
          ...(details ? { authorization_details: details } : {}),
        }, async () => {
          await factors.lockUser(tenant.id, user.id); // first (lockUser's rule)
          if (!(await factors.discardChallenge(tenant.id, id))) return false;
          await factors.reopen(tenant.id, user.id, 'stepup', channel, cancelled, clock()); // the push sent before can still be answered
          return true;
        });
        return { challengeId: challenge.id, status: 'PENDING' as const, expiresAt: challenge.expiresAt.toISOString() };
      });
    },

    /**
     * The opener polls its challenge. Another token, or another user, sees nothing (404). When
     * approved, the token is issued at this moment — never stored — and handed out once.
     */
    async status(caller: Caller, requester: StepUpRequester, challengeId: string): Promise<ChallengeView & { token?: unknown }> {
      const c = await factors.findChallenge(caller.tenant.id, challengeId);
      if (!c || c.purpose !== 'stepup' || c.userId !== caller.user.id || c.opener !== requester.tokenId) {
        throw new AppError('NOT_FOUND', 404, 'Challenge not found');
      }
      const now = clock();
      const view = (status: ChallengeView['status']): ChallengeView => ({ challengeId: c.id, status, expiresAt: c.expiresAt.toISOString() });
      if (c.status === 'DENIED') return view('DENIED');
      if (c.status === 'CONSUMED') return view('APPROVED');
      if (c.status === 'CANCELLED' || c.expiresAt <= now) return view('EXPIRED');
      if (c.status === 'PENDING') return view('PENDING');
      const token = await tx.transaction(async () => {
        if (!(await factors.collect(caller.tenant.id, c.id, now))) return undefined;
        return issue(caller, c, c.channel);
      });
      return token ? { ...view('APPROVED'), token } : view('APPROVED');
    },
  };
}
export type StepUpService = ReturnType<typeof createStepUpService>;
