import pino from 'pino';

export type Logger = pino.Logger;

/**
 * Structured logs. Requests are logged by method, path, status and duration only; the redact list
 * is a second line of defence should a secret-bearing object ever be logged by mistake.
 */
export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'portcullis' },
      serializers: {
        // Database errors carry the query and its parameters (emails, hashes): never logged.
        // The first stack line repeats the message, which may quote a value, so it goes too.
        // What says why without a value: the error's code (a SQLSTATE, an errno) as `errorCode`
        // (`code` is redacted everywhere, for one-time codes), and the table, column, constraint
        // and routine PostgreSQL names.
        err: (e: { name?: string; code?: unknown; stack?: string; table?: unknown; column?: unknown; constraint?: unknown; routine?: unknown }) => {
          const name = (v: unknown) => (typeof v === 'string' && /^[\w.$-]{1,128}$/.test(v) ? v : undefined);
          return {
            type: e?.name,
            errorCode: typeof e?.code === 'string' || typeof e?.code === 'number' ? String(e.code).slice(0, 32) : undefined,
            table: name(e?.table),
            column: name(e?.column),
            constraint: name(e?.constraint),
            routine: name(e?.routine),
            stack: e?.stack?.split('\n').slice(1, 8).join('\n'),
          };
        },
      },
      redact: {
        paths: [
          'password', '*.password', 'client_secret', '*.client_secret', 'clientSecret', '*.clientSecret',
          'token', '*.token', 'access_token', '*.access_token', 'refresh_token', '*.refresh_token',
          'authorization', '*.authorization', 'headers.authorization', 'api_key', '*.api_key', 'apiKey',
          'verificationCode', '*.verificationCode', 'code', '*.code',
        ],
        censor: '[redacted]',
      },
    },
    destination,
  );
}
