import Router from '@koa/router';
import type { Context } from 'koa';
import { z } from 'zod';
import { AppError } from '../errors';
import { validateBody } from '../http/validate';
import type { Principal } from '../oidc/bearer';
import { PUSH_CHANNELS, type Caller, type PushChannel } from '../factors/service';
import { authorizationDetailsSchema } from './details';
import type { StepUpRequester, StepUpService } from './service';

type Middleware = (ctx: Context, next: () => Promise<void>) => Promise<void>;

export const startBody = z.object({ authorization_details: authorizationDetailsSchema.optional() }).strict();
export const verifyBody = z
  .object({
    verificationCode: z.string().regex(/^[0-9]{6,10}$/, 'must be the digits of the code received'),
    authorization_details: authorizationDetailsSchema.optional(),
  })
  .strict();

const requester = (ctx: Context): StepUpRequester => {
  const p = ctx.state.principal as Principal;
  return { tokenId: p.tokenId, scope: p.scope, pending: p.pending };
};

/** Seed 000 layer 3: SCA challenges that issue step-up tokens (acr urn:openbanking:psd2:sca). */
export function stepUpRoutes(deps: { stepUp: StepUpService; user: Middleware[]; idempotent: Middleware }): Router {
  const router = new Router();
  const caller = (ctx: Context) => ctx.state.caller as Caller;

  router.post('/stepup/challenges/otp/:channel', ...deps.user, deps.idempotent, async (ctx) => {
    if (ctx.params.channel !== 'SMS') throw AppError.validation([{ fieldName: 'channel', error: 'must be SMS' }]);
    const { authorization_details } = validateBody(ctx, startBody);
    await deps.stepUp.startSms(caller(ctx), requester(ctx), authorization_details);
    ctx.status = 204;
  });

  router.post('/stepup/challenges/otp/:channel/verify', ...deps.user, deps.idempotent, async (ctx) => {
    if (ctx.params.channel !== 'SMS') throw AppError.validation([{ fieldName: 'channel', error: 'must be SMS' }]);
    const { verificationCode, authorization_details } = validateBody(ctx, verifyBody);
    ctx.set('Cache-Control', 'no-store');
    ctx.body = await deps.stepUp.verifySms(caller(ctx), verificationCode, authorization_details);
  });

  router.post('/stepup/challenges/push/:channel', ...deps.user, deps.idempotent, async (ctx) => {
    const channel = ctx.params.channel as PushChannel;
    if (!PUSH_CHANNELS.includes(channel)) throw AppError.validation([{ fieldName: 'channel', error: `must be one of ${PUSH_CHANNELS.join(', ')}` }]);
    const { authorization_details } = validateBody(ctx, startBody);
    ctx.status = 202;
    ctx.body = await deps.stepUp.startPush(caller(ctx), requester(ctx), channel, authorization_details);
  });

  router.get('/stepup/challenges/:id', ...deps.user, async (ctx) => {
    ctx.set('Cache-Control', 'no-store');
    ctx.body = await deps.stepUp.status(caller(ctx), requester(ctx), ctx.params.id ?? '');
  });

  return router;
}
