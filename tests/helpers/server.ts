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
  const { running, port } = await startOnFreePort(store, opts);
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

/**
 * The server on `opts.port`, or on a port found free. The port is chosen before the app opens (its
 * issuer URL names it), and in between any process's outgoing connection may take it from the same
 * ephemeral range (a parallel test's PostgreSQL pool, say): then the listen fails with EADDRINUSE,
 * the server closes what it opened, and another port is tried.
 */
async function startOnFreePort(
  store: TestStore,
  opts: { config?: Record<string, unknown>; port?: number; clock?: () => Date; logger?: Logger },
): Promise<{ running: RunningServer; port: number }> {
  for (let attempt = 1; ; attempt += 1) {
    const port = opts.port ?? (await freePort());
    try {
      const running = await startServer(testConfig(store, opts.config, port), { seedDemo: false, app: { clock: opts.clock, logger: opts.logger } });
      return { running, port };
    } catch (err) {
      if (opts.port !== undefined || attempt >= 5 || (err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
    }
  }
}
