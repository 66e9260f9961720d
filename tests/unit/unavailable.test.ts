import { isDatabaseUnavailable } from '../../src/db/unavailable';

describe('which database errors are the database being unavailable (503), not a bug (500)', () => {
  test.each([
    ['08006', 'connection failure'],
    ['57P01', 'admin shutdown'],
    ['57P04', 'database dropped'],
    ['53300', 'too many connections'],
    ['53100', 'disk full'],
    ['25006', 'cannot execute INSERT in a read-only transaction'],
    ['3D000', 'database "x" does not exist'],
    ['28P01', 'password authentication failed'],
    ['55000', 'database "x" is not currently accepting connections'],
  ])('%s (%s): unavailable', (code, message) => {
    expect(isDatabaseUnavailable(Object.assign(new Error(message), { code }))).toBe(true);
  });

  test.each([
    ['23505', 'duplicate key value violates unique constraint'],
    ['42P01', 'relation "x" does not exist'],
    ['55000', 'currval of sequence "x" is not yet defined in this session'],
    ['22P02', 'invalid input syntax'],
    ['40P01', 'deadlock detected'],
    ['40001', 'could not serialize access'],
  ])('%s (%s): a bug, not the database away', (code, message) => {
    expect(isDatabaseUnavailable(Object.assign(new Error(message), { code }))).toBe(false);
  });
});
