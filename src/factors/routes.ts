import Router from '@koa/router';
import type { Context } from 'koa';
import { z } from 'zod';
import { AppError } from '../errors';
import { validateBody } from '../http/validate';
import { isUuid } from '../db/uuid';
import { challengeRejected, PUSH_CHANNELS, pushEnrolmentSchema, type Caller, type FactorService, type PushChannel } from './service';

type Middleware = (ctx: Context, next: () => Promise<void>) => Promise<void>;

export const verificationSchema = z.object({ verificationCode: z.string().regex(/^[0-9]{6,10}$/, 'must be the digits of the code received') }).strict();
export const deviceAnswerBody = z.object({ jws: z.string().min(1).max(8192) }).strict();

function otpChannel(ctx: Context): 'SMS' {
  if (ctx.params.channel !== 'SMS') throw AppError.validation([{ fieldName: 'channel', error: 'must be SMS' }]);
  return 'SMS';
}

function pushChannel(ctx: Context): PushChannel {
  const c = ctx.params.channel as PushChannel;
  if (!PUSH_CHANNELS.includes(c)) throw AppError.validation([{ fieldName: 'channel', error: `must be one of ${PUSH_CHANNELS.join(', ')}` }]);
  return c;
}

/** Seed 001: additional factors of the signed-in user. */
export function factorRoutes(deps: { factors: FactorService; user: Middleware[]; idempotent: Middleware }): Router {
  const router = new Router();
  const caller = (ctx: Context) => ctx.state.caller as Caller;

  router.get('/authentication_factors', ...deps.user, async (ctx) => {
    ctx.set('Cache-Control', 'no-store');
    ctx.body = { factors: await deps.factors.list(caller(ctx)) };
  });

  router.post('/authentication_factors/otp/:channel', ...deps.user, deps.idempotent, async (ctx) => {
    otpChannel(ctx);
    await deps.factors.startSmsEnrolment(caller(ctx));
    ctx.status = 204;
  });

  router.post('/authentication_factors/otp/:channel/verify', ...deps.user, deps.idempotent, async (ctx) => {
    otpChannel(ctx);
    const { verificationCode } = validateBody(ctx, verificationSchema);
    await deps.factors.verifySmsEnrolment(caller(ctx), verificationCode);
    ctx.status = 204;
  });

  router.post('/authentication_factors/push/:channel', ...deps.user, deps.idempotent, async (ctx) => {
    const channel = pushChannel(ctx);
    await deps.factors.startPushEnrolment(caller(ctx), channel, validateBody(ctx, pushEnrolmentSchema));
    ctx.status = 204;
  });

  router.delete('/authentication_factors/push/:channel', ...deps.user, async (ctx) => {
    await deps.factors.unlink(caller(ctx), pushChannel(ctx));
    ctx.status = 204;
  });

  return router;
}

/** The enrolled device's side: it proves itself with its signature, not with a bearer token. */
export function deviceRoutes(deps: { factors: FactorService; idempotent: Middleware }): Router {
  const router = new Router();
  // A challenge id is a UUID: anything else is refused as every wrong answer is, before its
  // idempotency-ref is recorded under it (an id thousands of characters long would not fit the
  // record's key: a 500).
  const knownShape: Middleware = async (ctx, next) => {
    if (!isUuid(ctx.params?.id ?? '')) throw challengeRejected();
    await next();
  };
  router.post('/device/challenges/:id', knownShape, deps.idempotent, async (ctx) => {
    const { jws } = validateBody(ctx, deviceAnswerBody);
    ctx.body = await deps.factors.answerDeviceChallenge(ctx.params.id ?? '', jws);
  });
  return router;
}
