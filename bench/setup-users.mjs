// Creates benchmark users straight through the services, in one process (the CLI would start a
// process and open the database per user): node bench/setup-users.mjs <tenant> <prefix> <count> <cost>
import { createRequire } from 'node:module';
const require = createRequire(import.meta.url);
const { loadConfig } = require('../dist/src/config/index.js');
const { openDatabase } = require('../dist/src/db/knex.js');
const { migrateLatest } = require('../dist/src/db/migrate.js');
const { buildServices } = require('../dist/src/app.js');

const [tenantId, prefix, count, cost] = process.argv.slice(2);
const config = loadConfig(process.env, { bcryptCost: Number(cost), logLevel: 'warn' });
const db = await openDatabase(config, { poolMax: 4 });
try {
  await migrateLatest(db.knex);
  const s = await buildServices(config, db);
  const tenant = await s.tenants.find(tenantId);
  for (let i = 0; i < Number(count); i += 1) {
    await s.userService.register(tenant, { username: `${prefix}${i}`, password: process.env.BENCH_PASSWORD, acceptedTerms: true });
  }
} finally {
  await db.close();
}
