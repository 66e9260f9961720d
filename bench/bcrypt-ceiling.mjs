// The machine's bcrypt ceiling: hashes per second at a cost with every core busy (one stream of
// comparisons per core; libuv's thread pool has at least that many threads). Measured over at
// least 8 s and up to the last finished hash, so a cost-12 rate (~6/s per core) is not noisy.
import bcrypt from 'bcrypt';
import os from 'node:os';

export async function bcryptCeiling(cost, seconds = 8) {
  const hash = bcrypt.hashSync('benchmark-password', cost);
  const streams = Math.max(1, os.availableParallelism());
  let done = 0;
  const start = Date.now();
  const end = start + Math.max(8, seconds) * 1000;
  let last = start;
  await Promise.all(
    Array.from({ length: streams }, async () => {
      while (Date.now() < end) {
        await bcrypt.compare('benchmark-password', hash);
        done += 1;
        last = Date.now();
      }
    }),
  );
  return done / ((last - start) / 1000);
}
