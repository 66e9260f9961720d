import { createHmac } from 'node:crypto';
import type { DbSource } from '../db/tx';
import type { Logger } from '../log';

export interface SmsMessage {
  to: string;
  /** Holds the code: never logged. */
  text: string;
  tenant: string;
  userId: string;
}

export interface PushMessage {
  channel: string;
  challengeId: string;
  nonce: string;
  kind: 'enrolment' | 'stepup';
  text: string;
  authorization_details?: unknown;
}

export interface SmsSender {
  send(message: SmsMessage): Promise<void>;
}
export interface PushSender {
  send(message: PushMessage, meta: { tenant: string; userId: string }): Promise<void>;
}

export class DeliveryError extends Error {}

/**
 * `log`: the development outbox. Messages are written to the `outbox` table (once the request's
 * challenge has committed, as every sender is called: a rolled-back request leaves none) and a log
 * line says that one was queued — without its text, which holds the code.
 */
export function createOutboxSenders(source: DbSource, logger: Logger): { sms: SmsSender; push: PushSender } {
  return {
    sms: {
      async send(m) {
        await source.db()('outbox').insert({ kind: 'sms', tenant_id: m.tenant, recipient: m.to, payload: JSON.stringify(m) });
        logger.info({ tenant: m.tenant, userId: m.userId }, 'sms queued in the dev outbox');
      },
    },
    push: {
      async send(m, meta) {
        await source.db()('outbox').insert({ kind: 'push', tenant_id: meta.tenant, recipient: meta.userId, payload: JSON.stringify(m) });
        logger.info({ tenant: meta.tenant, challengeId: m.challengeId }, 'push queued in the dev outbox');
      },
    },
  };
}

export interface WebhookOptions {
  url: string;
  secret: string;
  attempts: number;
  backoffMs: number;
  timeoutMs: number;
}

/**
 * `x-portcullis-signature: t=<unix seconds>,v1=<hex HMAC-SHA-256 of "<t>.<body>" with WEBHOOK_SECRET>`.
 * The receiver recomputes it over the raw body and rejects old timestamps (replays).
 */
export function signWebhook(secret: string, body: string, timestamp: number): string {
  const mac = createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex');
  return `t=${timestamp},v1=${mac}`;
}

async function postWithRetries(opts: WebhookOptions, payload: unknown, logger: Logger): Promise<void> {
  const body = JSON.stringify(payload);
  let lastError = 'no attempt made';
  for (let attempt = 1; attempt <= opts.attempts; attempt += 1) {
    try {
      const res = await fetch(opts.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-portcullis-signature': signWebhook(opts.secret, body, Math.floor(Date.now() / 1000)) },
        body,
        signal: AbortSignal.timeout(opts.timeoutMs),
      });
      await res.arrayBuffer().catch(() => undefined);
      if (res.ok) return;
      lastError = `status ${res.status}`;
      if (res.status >= 400 && res.status < 500 && res.status !== 408 && res.status !== 429) break; // the receiver refuses it: retrying will not help
    } catch (err) {
      lastError = (err as Error).name === 'TimeoutError' ? 'timeout' : 'connection failed';
    }
    if (attempt < opts.attempts) await new Promise((r) => setTimeout(r, opts.backoffMs * 2 ** (attempt - 1)));
  }
  logger.warn({ url: new URL(opts.url).origin, reason: lastError }, 'webhook delivery failed');
  throw new DeliveryError(`delivery failed: ${lastError}`);
}

/** `webhook`: POST JSON to the configured URL, signed, retried with exponential backoff. */
export function createWebhookSmsSender(opts: WebhookOptions, logger: Logger): SmsSender {
  return { send: (m) => postWithRetries(opts, m, logger) };
}

export function createWebhookPushSender(opts: WebhookOptions, logger: Logger): PushSender {
  return { send: (m) => postWithRetries(opts, m, logger) };
}
