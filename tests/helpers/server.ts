import { startServer, type RunningServer } from '../../src/server';
import type { Logger } from '../../src/log';
import { createTestStore, freePort, testConfig, type TestStore } from './env';

export interface TestServer {
  base: string;
  running: RunningServer;
  store: TestStore;
  /** Stops the server, keeping its data (for restart tests). */
  stop(): Promise<void>;
  /** Stops the server and removes its data. */
  close(): Promise<void>;
}

/** The real app on a real port against a real database (fresh unless `store` is passed). */
export async function startTestServer(
  opts: { store?: TestStore; config?: Record<string, unknown>; port?: number; clock?: () => Date; logger?: Logger } = {},
): Promise<TestServer> {
  const store = opts.store ?? (await createTestStore());
  const port = opts.port ?? (await freePort());
  const config = testConfig(store, opts.config, port);
  const running = await startServer(config, { seedDemo: false, app: { clock: opts.clock, logger: opts.logger } });
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await running.shutdown();
  };
  return {
    base: `http://127.0.0.1:${port}`,
    running,
    store,
    stop,
    async close() {
      await stop();
      await store.cleanup();
    },
  };
}
