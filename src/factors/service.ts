import { randomBytes, randomUUID, timingSafeEqual, type JsonWebKey } from 'node:crypto';
import { compactVerify, importJWK } from 'jose';
import { z } from 'zod';
import { AppError } from '../errors';
import type { TxContext } from '../db/tx';
import type { AuditLog } from '../audit/repository';
import type { Tenant } from '../tenants/repository';
import type { User } from '../users/repository';
import type { Logger } from '../log';
import { generateCode, SANDBOX_CODE, type CodeHasher } from './codes';
import type { SendCaps } from './caps';
import { DeliveryError, type PushMessage, type PushSender, type SmsSender } from './senders';
import type { Challenge, ChallengePurpose, Factor, FactorChannel, FactorRepository, NewChallenge } from './repository';

export const PUSH_CHANNELS = ['AUTHY', 'BIOMETRIC'] as const;
export type PushChannel = (typeof PUSH_CHANNELS)[number];

/** The signed-in user calling a factor route, with what their token says about the login. */
export interface Caller {
  tenant: Tenant;
  user: User;
  clientId: string;
  /** The access token calling (a non-secret id): codes are bound to it. */
  tokenId?: string;
  transactionBound?: boolean;
  sessionId?: string;
  acr?: string;
  amr?: string[];
  authTime?: number;
}

export const p256PublicJwk = z
  .object({
    kty: z.literal('EC'),
    crv: z.literal('P-256'),
    x: z.string().regex(/^[A-Za-z0-9_-]{43}$/, 'base64url P-256 coordinate'),
    y: z.string().regex(/^[A-Za-z0-9_-]{43}$/, 'base64url P-256 coordinate'),
    kid: z.string().max(200).optional(),
    alg: z.literal('ES256').optional(),
    use: z.literal('sig').optional(),
    // A device that sends its private key has exposed it: refused, never silently dropped.
    d: z.never({ error: 'must be the public key alone: the private key ("d") never leaves the device' }).optional(),
  })
  .strip();

export const pushEnrolmentSchema = z
  .object({ publicKey: p256PublicJwk, deviceName: z.string().min(1).max(100).optional() })
  .strict();

export const deviceAnswerSchema = z.object({
  challengeId: z.string(),
  nonce: z.string(),
  decision: z.enum(['APPROVE', 'DENY']),
  bindingHash: z.string().optional(),
});

/** One answer for every failed verification: never which element failed, nor whether it is blocked. */
export const verificationFailed = () => new AppError('VERIFICATION_FAILED', 403, 'Verification failed');
export const challengeRejected = () => new AppError('CHALLENGE_REJECTED', 403, 'Challenge response rejected');

/** What a successful device answer means for the challenge's purpose (enrolment here; step-up adds its own). */
export type ApprovalHandler = (challenge: Challenge, factor: Factor) => Promise<Record<string, unknown> | undefined>;

export interface FactorServiceDeps {
  tx: TxContext;
  factors: FactorRepository;
  codes: CodeHasher;
  sms: SmsSender;
  push: PushSender;
  caps: SendCaps;
  audit: AuditLog;
  logger: Logger;
  clock: () => Date;
  /** Is this caller's authentication strong/fresh enough to change factors that protect the account? */
  isSteppedUp(caller: Caller): boolean;
  /** RFC 9470's challenge, with the freshness this caller's tenant asks for. */
  stepUpRequired(caller: Caller): AppError;
  /** The answer to a request of a user deleted while it ran (the deletion ended its token too). */
  callerGone(): AppError;
  onBlocked?: () => void;
}

/** A code is bound to the token (and so the session) that asked for it. */
export function ownerOf(caller: Caller): { sessionId: string | null; opener: string | null } {
  return { sessionId: caller.sessionId ?? null, opener: caller.tokenId ?? null };
}

const safeEqual = (a: string, b: string) => {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
};

/** Inside verifyCode's savepoint: the challenge was consumed meanwhile, so the reset is undone. */
class CodeAlreadyUsed extends Error {}

export function createFactorService(deps: FactorServiceDeps) {
  const { factors, tx, audit, clock } = deps;
  const approvalHandlers = new Map<string, ApprovalHandler>();

  /**
   * The caller's own row locked first (lockUser's rule), for a request of the user's. A user deleted
   * meanwhile (an administrator's erasure, which also ended this token) is gone: the request fails
   * as a revoked token does, before it writes anything for them.
   */
  async function lockCaller(tenantId: string, userId: string): Promise<{ mobile: string | null }> {
    const row = await factors.lockUser(tenantId, userId);
    if (!row) throw deps.callerGone();
    return row;
  }

  async function requireStepUpIfProtected(caller: Caller, existing?: Factor[]): Promise<void> {
    const all = existing ?? (await factors.list(caller.tenant.id, caller.user.id));
    if (all.some((f) => f.status === 'ACTIVE') && !deps.isSteppedUp(caller)) throw deps.stepUpRequired(caller);
  }

  /**
   * Hands a message to its sender once the challenge it carries has committed: a call to another
   * service (a webhook may take seconds, retries and all) never holds a database connection or its
   * locks — the embedded database has only one. A message that cannot be delivered takes back what
   * its request stored for it (`undo`: the challenge, an enrolment's pending factor) and fails the
   * request with 503; the send still counts against the caps. `undo` says false when the challenge
   * was answered meanwhile: the message did arrive, whatever the sender said, and the request stands.
   */
  async function send(deliver: () => Promise<void>, undo: () => Promise<boolean>): Promise<void> {
    await tx.afterCommit(async () => {
      try {
        await deliver();
      } catch (err) {
        let takenBack = true;
        try {
          takenBack = await tx.transaction(undo);
        } catch (e) {
          deps.logger.error({ err: e }, 'an undelivered challenge could not be taken back');
        }
        if (!takenBack) return;
        if (err instanceof DeliveryError) {
          throw new AppError('DELIVERY_FAILED', 503, 'The message could not be delivered; try again later', undefined, { 'Retry-After': '30' });
        }
        throw err;
      }
    });
  }

  /**
   * One verification attempt with a code: reserved against the user's consecutive-failure budget
   * before anything is compared, consumed by one atomic UPDATE, and answered generically.
   */
  /** A code is hashed with its challenge id and, for a transaction, the binding hash of its details. */
  const codeInput = (code: string, binding?: string) => (binding ? `${code}|${binding}` : code);

  async function verifyCode<T>(
    caller: Caller,
    challenge: Challenge | undefined,
    code: string,
    onSuccess: (c: Challenge) => Promise<T>,
    binding?: string,
  ): Promise<T> {
    const { tenant, user } = caller;
    const now = clock();
    // Committed on its own: a failed attempt must count even though the request fails.
    const attempt = await factors.reserveAttempt(tenant.id, user.id, tenant.policy.factorMaxFailures, now, tenant.policy.factorBlockSeconds);
    if (!attempt.reserved) throw verificationFailed();
    const { failures, epoch } = attempt;
    // The details presented now must be the ones challenged: else the code simply does not match.
    // The sandbox's fixed code is good only while the tenant is a sandbox: a challenge made before
    // it went live must not pass with it (live codes are never that code).
    const fixedCodeRefused = tenant.mode !== 'sandbox' && code === SANDBOX_CODE;
    const matches = !!challenge && !fixedCodeRefused && deps.codes.matches(challenge.id, codeInput(code, binding), challenge.codeHash);
    if (matches && challenge) {
      // Reset the count, consume and apply the effect together: all or nothing, also inside a
      // request's transaction (an idempotency-ref's), where this is a savepoint of it. The user's
      // row is locked before the challenge's, the order a request with an idempotency-ref takes
      // them in (it holds the user's row from reserveAttempt on): in the other order, two right
      // codes at once, one with a ref, could deadlock.
      try {
        return await tx.savepoint(async () => {
          await factors.resetFailures(tenant.id, user.id);
          if (!(await factors.transition(tenant.id, challenge.id, 'CONSUMED', now))) throw new CodeAlreadyUsed();
          return onSuccess(challenge);
        });
      } catch (err) {
        // The right code, already used by a concurrent request, or whose effect could not be
        // applied (its login completed meanwhile by another of its challenges, its session ended,
        // a failure): rolled back, and not a guess, so its attempt goes back too — unless the count
        // was started afresh meanwhile (the concurrent request's success): it then holds only later
        // attempts, each a real one.
        await factors.releaseAttempt(tenant.id, user.id, epoch).catch(() => undefined);
        throw err instanceof CodeAlreadyUsed ? verificationFailed() : err;
      }
    }
    if (failures >= tenant.policy.factorMaxFailures) {
      const until = new Date(now.getTime() + tenant.policy.factorBlockSeconds * 1000);
      if (await factors.block(tenant.id, user.id, until)) {
        await audit.record({ tenantId: tenant.id, actor: user.id, type: 'factor.blocked', target: user.id, details: { until: until.toISOString(), failures } });
        deps.logger.warn({ tenant: tenant.id, userId: user.id }, 'factors blocked after consecutive failures');
        deps.onBlocked?.();
      }
    }
    throw verificationFailed();
  }

  /** Sends a fresh code for `purpose` by SMS; returns the challenge. Sandbox tenants send nothing. */
  async function sendSmsCode(
    caller: Caller,
    purpose: 'enrolment' | 'stepup',
    extra: { text: (code: string) => string; undo?: () => Promise<void> } & Pick<NewChallenge, 'authorizationDetails' | 'bindingHash' | 'clientId' | 'scope' | 'opener' | 'completesLogin'>,
  ) {
    const { tenant, user } = caller;
    const mobile = user.mobile;
    if (!mobile) throw new AppError('MOBILE_REQUIRED', 409, 'The user has no mobile number');
    // While the user's codes are refused (too many wrong ones), a code could not be used: the
    // request goes as any other (its caps counted, its challenge made, the open one cancelled) but
    // no message is sent. Its answer must not say the user is blocked, as a failed verification
    // never does: a caller holding only the password (a login waiting for its MFA) could otherwise
    // ask, for nothing, whether the user is blocked and until when.
    const refused = await factors.codesRefused(tenant.id, user.id, tenant.policy.factorMaxFailures, clock(), tenant.policy.factorBlockSeconds);
    // Each tenant's sends count against its own number cap: another tenant's users registering the
    // same number (a sandbox's, which sends nothing, among them) must not use up this one's.
    await deps.caps.take([
      { key: `sms:number:${tenant.id}:${mobile}`, cap: tenant.policy.smsPerNumberPerHour },
      { key: `sms:user:${user.id}`, cap: tenant.policy.smsPerUserPerHour },
      // The tenant's whole budget, against SMS pumping spread over many numbers and users.
      { key: `sms:tenant:${tenant.id}`, cap: tenant.policy.smsPerTenantPerHour },
    ]);
    /** For a step-up, whether the user's SMS factor is still active (an enrolment needs none). */
    const factorStands = async () => purpose !== 'stepup' || (await factors.find(tenant.id, user.id, 'SMS'))?.status === 'ACTIVE';
    return tx.transaction(async () => {
      // The user's row first (lockUser's rule). The number read when the request was authenticated
      // must still be the user's, and for a step-up their SMS factor still active: an admin's edit
      // of the mobile (which removes the factor and cancels its codes) waits for this send, or this
      // waits for it and refuses.
      const current = await lockCaller(tenant.id, user.id);
      if (current.mobile !== mobile) throw new AppError('MOBILE_CHANGED', 409, 'The mobile number changed while the request ran; send it again');
      if (!(await factorStands())) throw new AppError('FACTOR_NOT_ACTIVE', 409, 'No active SMS factor');
      const now = clock();
      const cancelled = await factors.cancelPending(tenant.id, user.id, purpose, 'SMS');
      const id = randomUUID();
      const sandbox = tenant.mode === 'sandbox';
      const code = sandbox ? SANDBOX_CODE : generateCode(tenant.policy.otpLength);
      const challenge = await factors.createChallenge({
        id,
        tenantId: tenant.id,
        userId: user.id,
        purpose,
        channel: 'SMS',
        sessionId: caller.sessionId,
        codeHash: deps.codes.hash(id, codeInput(code, extra.bindingHash)),
        authorizationDetails: extra.authorizationDetails,
        bindingHash: extra.bindingHash,
        clientId: extra.clientId,
        scope: extra.scope,
        opener: extra.opener,
        completesLogin: extra.completesLogin,
        createdAt: now,
        expiresAt: new Date(now.getTime() + tenant.policy.otpTtlSeconds * 1000),
      });
      if (refused) {
        deps.logger.info({ tenant: tenant.id, userId: user.id, purpose }, 'no code sent: the user\'s codes are blocked');
      } else if (!sandbox) {
        await send(
          () => deps.sms.send({ to: mobile, text: extra.text(code), tenant: tenant.id, userId: user.id }),
          async () => {
            // The user's row first (lockUser's rule): a change of the mobile (or a factor removed)
            // since this send committed has cancelled the codes sent before, and reopening one
            // would bring back a code for a number or factor that is gone.
            const current = await factors.lockUser(tenant.id, user.id);
            if (!(await factors.discardChallenge(tenant.id, id))) return false;
            if (current?.mobile === mobile && (await factorStands())) await factors.reopen(tenant.id, user.id, purpose, 'SMS', cancelled, clock()); // the code sent before still works
            await extra.undo?.();
            return true;
          },
        );
      }
      return challenge;
    });
  }

  /**
   * After an enrolment's undo: opens again the challenges its upsert cancelled (by purpose, as
   * `reopen` takes them), those still unexpired while no newer one of their kind is open.
   */
  async function reopenCancelled(caller: Caller, channel: FactorChannel, cancelled: Array<{ id: string; purpose: ChallengePurpose }>) {
    for (const purpose of new Set(cancelled.map((c) => c.purpose))) {
      const ids = cancelled.filter((c) => c.purpose === purpose).map((c) => c.id);
      await factors.reopen(caller.tenant.id, caller.user.id, purpose, channel, ids, clock());
    }
  }

  /** A push to the user's device, after the commit; a delivery failure takes back `undo` and is the 503 of `send`. */
  const sendPush = (caller: Caller, message: PushMessage, undo: () => Promise<boolean>) =>
    send(() => deps.push.send(message, { tenant: caller.tenant.id, userId: caller.user.id }), undo);

  return {
    lockCaller,
    sendSmsCode,
    sendPush,
    verifyCode,
    requireStepUpIfProtected,
    takeCaps: (keys: Array<{ key: string; cap: number }>) => deps.caps.take(keys),

    /** Step-up registers what a device approval of its challenges does. */
    onApproval(purpose: string, handler: ApprovalHandler) {
      approvalHandlers.set(purpose, handler);
    },

    async list(caller: Caller) {
      return (await factors.list(caller.tenant.id, caller.user.id)).map((f) => ({ type: f.type, channel: f.channel, status: f.status }));
    },

    async startSmsEnrolment(caller: Caller): Promise<void> {
      const existing = await factors.list(caller.tenant.id, caller.user.id);
      await requireStepUpIfProtected(caller, existing);
      await tx.transaction(async () => {
        // The user's row before the slot and the factor (lockUser's rule).
        await lockCaller(caller.tenant.id, caller.user.id);
        // Read under the slot's lock: an undo restores the factor as the enrolment before this one left it.
        await factors.lockSlot(caller.tenant.id, caller.user.id, 'SMS');
        const before = await factors.find(caller.tenant.id, caller.user.id, 'SMS');
        const pending = before?.status === 'ACTIVE'
          ? undefined
          : await factors.upsertPending({ id: randomUUID(), tenantId: caller.tenant.id, userId: caller.user.id, type: 'OTP', channel: 'SMS', now: clock() });
        await sendSmsCode(caller, 'enrolment', {
          opener: caller.tokenId,
          undo: async () => {
            // SMS challenges carry no factor, so its upsert cancelled none: sendSmsCode's undo
            // reopens what its cancelPending closed.
            if (pending) await factors.undoPending(caller.tenant.id, pending.factor, before);
          },
          text: (code) => `${code} is your ${caller.tenant.name} code to enrol this phone. It expires in ${Math.round(caller.tenant.policy.otpTtlSeconds / 60)} minutes. Never share it.`,
        });
        await audit.record({ tenantId: caller.tenant.id, actor: caller.user.id, type: 'factor.enrolment_started', target: caller.user.id, details: { channel: 'SMS' } });
      });
    },

    async verifySmsEnrolment(caller: Caller, code: string): Promise<void> {
      const { tenant, user } = caller;
      const challenge = await factors.latest(tenant.id, user.id, 'enrolment', 'SMS', ownerOf(caller));
      await verifyCode(caller, challenge, code, async () => {
        const factor = await factors.find(tenant.id, user.id, 'SMS');
        if (!factor) throw verificationFailed();
        await factors.activate(tenant.id, factor.id, clock());
        await audit.record({ tenantId: tenant.id, actor: user.id, type: 'factor.enrolled', target: user.id, details: { channel: 'SMS' } });
      });
    },

    async startPushEnrolment(caller: Caller, channel: PushChannel, input: z.infer<typeof pushEnrolmentSchema>): Promise<void> {
      const { tenant, user } = caller;
      try {
        await importJWK({ ...input.publicKey, alg: 'ES256' } as JsonWebKey & { kty: string }, 'ES256');
      } catch {
        throw AppError.validation([{ fieldName: 'publicKey', error: 'not a valid P-256 public key' }]);
      }
      await requireStepUpIfProtected(caller);
      await deps.caps.take([{ key: `push:user:${user.id}`, cap: tenant.policy.pushPerUserPerHour }]);
      const publicJwk: JsonWebKey = { kty: 'EC', crv: 'P-256', x: input.publicKey.x, y: input.publicKey.y };
      await tx.transaction(async () => {
        await lockCaller(tenant.id, user.id); // first (lockUser's rule)
        // Read under the slot's lock: an undo restores the factor as the enrolment before this one left it.
        await factors.lockSlot(tenant.id, user.id, channel);
        const before = await factors.find(tenant.id, user.id, channel);
        const now = clock();
        const { factor, cancelled } = await factors.upsertPending({
          id: randomUUID(), tenantId: tenant.id, userId: user.id, type: 'PUSH', channel, publicJwk, deviceName: input.deviceName, now,
        });
        const id = randomUUID();
        const nonce = randomBytes(32).toString('base64url');
        await factors.createChallenge({
          id, tenantId: tenant.id, userId: user.id, factorId: factor.id, purpose: 'enrolment', channel, sessionId: caller.sessionId, nonce,
          createdAt: now, expiresAt: new Date(now.getTime() + tenant.policy.otpTtlSeconds * 1000),
        });
        await sendPush(caller, { channel, challengeId: id, nonce, kind: 'enrolment', text: `Confirm ${input.deviceName ?? 'this device'} for ${tenant.name}` }, async () => {
          await factors.lockUser(tenant.id, user.id); // first (lockUser's rule)
          if (!(await factors.discardChallenge(tenant.id, id))) return false;
          // A step-up push to the device the factor had can then still be approved on it; not when
          // another enrolment has written the factor since (its key is the one that counts now).
          if (await factors.undoPending(tenant.id, factor, before)) await reopenCancelled(caller, channel, cancelled);
          return true;
        });
        await audit.record({ tenantId: tenant.id, actor: user.id, type: 'factor.enrolment_started', target: user.id, details: { channel } });
      });
    },

    async unlink(caller: Caller, channel: FactorChannel): Promise<void> {
      const { tenant, user } = caller;
      await requireStepUpIfProtected(caller);
      const removed = await tx.transaction(async () => {
        const ok = await factors.remove(tenant.id, user.id, channel);
        if (ok) await audit.record({ tenantId: tenant.id, actor: user.id, type: 'factor.unlinked', target: user.id, details: { channel } });
        return ok;
      });
      if (!removed) throw new AppError('NOT_FOUND', 404, 'No such factor');
    },

    /**
     * The enrolled device answers a challenge with a compact JWS (ES256, its enrolled key) over
     * {challengeId, nonce, decision, bindingHash?}. A wrong key, nonce, binding or a replay is
     * rejected with one generic answer; the challenge changes state by one atomic UPDATE.
     */
    async answerDeviceChallenge(challengeId: string, jws: string): Promise<{ status: string }> {
      const challenge = await factors.findChallengeById(challengeId);
      if (!challenge?.factorId || !challenge.nonce || challenge.status !== 'PENDING') throw challengeRejected();
      const factor = await factors.findById(challenge.tenantId, challenge.factorId);
      if (!factor?.publicJwk || factor.userId !== challenge.userId) throw challengeRejected();
      let answer: z.infer<typeof deviceAnswerSchema>;
      try {
        const key = await importJWK({ ...factor.publicJwk, alg: 'ES256' } as JsonWebKey & { kty: string }, 'ES256');
        const { payload } = await compactVerify(jws, key, { algorithms: ['ES256'] });
        answer = deviceAnswerSchema.parse(JSON.parse(new TextDecoder().decode(payload)));
      } catch {
        throw challengeRejected();
      }
      if (answer.challengeId !== challenge.id || !safeEqual(answer.nonce, challenge.nonce)) throw challengeRejected();
      if (challenge.bindingHash && !(answer.bindingHash && safeEqual(answer.bindingHash, challenge.bindingHash))) throw challengeRejected();
      const now = clock();
      const { tenantId } = challenge;
      return tx.transaction(async () => {
        await factors.lockUser(tenantId, challenge.userId); // first (lockUser's rule)
        if (answer.decision === 'DENY') {
          if (!(await factors.transition(tenantId, challenge.id, 'DENIED', now))) throw challengeRejected();
          await audit.record({ tenantId, actor: challenge.userId, type: `${challenge.purpose}.denied`, target: challenge.userId, details: { channel: challenge.channel, challengeId: challenge.id } });
          return { status: 'DENIED' };
        }
        if (challenge.purpose === 'enrolment') {
          if (!(await factors.transition(tenantId, challenge.id, 'CONSUMED', now))) throw challengeRejected();
          await factors.activate(tenantId, factor.id, now);
          await audit.record({ tenantId, actor: challenge.userId, type: 'factor.enrolled', target: challenge.userId, details: { channel: challenge.channel } });
          return { status: 'APPROVED' };
        }
        const handler = approvalHandlers.get(challenge.purpose);
        if (!handler) throw challengeRejected();
        const result = await handler(challenge, factor);
        if (!(await factors.transition(tenantId, challenge.id, 'APPROVED', now, result))) throw challengeRejected();
        return { status: 'APPROVED' };
      });
    },
  };
}
export type FactorService = ReturnType<typeof createFactorService>;
