import { Writable } from 'node:stream';
import { createLogger } from '../../src/log';

describe('an error in the log', () => {
  test('says why (its code, the table and constraint) without a value from the query', () => {
    const lines: string[] = [];
    const logger = createLogger('info', new Writable({ write: (chunk, _enc, cb) => { lines.push(String(chunk)); cb(); } }));
    const err = Object.assign(new Error('duplicate key value violates unique constraint "users_email_key"'), {
      code: '23505',
      table: 'users',
      constraint: 'users_email_key',
      detail: 'Key (email)=(carol@example.com) already exists.',
      parameters: ['carol@example.com', 'v1$2b$04$hash'],
    });
    logger.error({ err }, 'unexpected error');
    const line = JSON.parse(lines[0]!) as { err: Record<string, unknown> };
    expect(line.err).toMatchObject({ type: 'Error', errorCode: '23505', table: 'users', constraint: 'users_email_key' });
    expect(lines[0]).not.toContain('carol@example.com');
    expect(lines[0]).not.toContain('$2b$');
    // A one-time code elsewhere in a line is still redacted.
    logger.info({ body: { code: '123456' } }, 'x');
    expect(lines[1]).not.toContain('123456');
  });
});
