import { startTestServer, type TestServer } from '../helpers/server';
import { dbLabel } from '../helpers/env';

// The server's sweep timer (src/app.ts): each round, the process that takes the lease sweeps.
describe(`the sweep timer follows the cluster's lease (${dbLabel})`, () => {
  let srv: TestServer;
  beforeAll(async () => {
    srv = await startTestServer({ config: { sweepIntervalSeconds: 0.1 } });
  });
  afterAll(async () => srv?.close());

  const knex = () => srv.running.app.database.knex;
  const expiredRow = async (id: string) => {
    await knex()('rate_limits').insert({ key: id, points: 1, expire: Date.now() - 1000 });
  };
  const present = async (id: string) => !!(await knex()('rate_limits').where({ key: id }).first());
  /** Waits for `done` up to `ms`; false if it never held. */
  const eventually = async (done: () => Promise<boolean>, ms: number) => {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      if (await done()) return true;
      await new Promise((r) => setTimeout(r, 50));
    }
    return false;
  };

  test('while another process holds the lease this one does not sweep; once it is over, it does', async () => {
    // Another process's lease, an hour long.
    await knex().raw(
      `INSERT INTO sweep_leases (name, next_at) VALUES ('expired-rows', now() + interval '1 hour')
       ON CONFLICT (name) DO UPDATE SET next_at = EXCLUDED.next_at`,
    );
    await expiredRow('held-lease');
    // Ten of its 100 ms rounds go by: the row stays.
    expect(await eventually(async () => !(await present('held-lease')), 1000)).toBe(false);
    await knex()('sweep_leases').where({ name: 'expired-rows' }).update({ next_at: new Date(Date.now() - 1000) });
    expect(await eventually(async () => !(await present('held-lease')), 5000)).toBe(true);
    // It took the lease for its own round.
    const lease = (await knex()('sweep_leases').where({ name: 'expired-rows' }).first()) as { next_at: Date };
    expect(new Date(lease.next_at).getTime()).toBeGreaterThan(Date.now() - 1000);
  });
});
