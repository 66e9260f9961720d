// bcrypt hashes per second at a cost, using every core (libuv threadpool sized to the cores).
import bcrypt from 'bcrypt';
import os from 'node:os';

export async function bcryptCeiling(cost, seconds = 4) {
  const hash = bcrypt.hashSync('benchmark-password', cost);
  const workers = Math.max(1, os.availableParallelism());
  let done = 0;
  const end = Date.now() + seconds * 1000;
  await Promise.all(
    Array.from({ length: workers }, async () => {
      while (Date.now() < end) {
        await bcrypt.compare('benchmark-password', hash);
        done += 1;
      }
    }),
  );
  return done / seconds;
}
