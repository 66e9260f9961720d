import http from 'node:http';
import type { Config } from './config';
import { createApp, type App, type AppOptions } from './app';
import { seedDemo } from './seed/demo';

export interface RunningServer {
  app: App;
  server: http.Server;
  port: number;
  /** Drains: readiness fails, new connections are refused, in-flight requests finish. */
  shutdown(signal?: string): Promise<void>;
}

export async function startServer(
  config: Config,
  opts: { installSignalHandlers?: boolean; seedDemo?: boolean; app?: AppOptions } = {},
): Promise<RunningServer> {
  const app = await createApp(config, opts.app);
  const { logger } = app;
  if (opts.seedDemo !== false && app.database.kind === 'embedded') {
    const demo = await seedDemo(config, app.services);
    if (demo) {
      // Printed once, to the terminal of whoever started the server for the first time.
      process.stdout.write(
        `\nFirst start: created sandbox tenant "demo", clients and a user (also saved in ${config.dataDir}/demo-credentials.json):\n` +
          `  application     client_id=${demo.client.client_id} client_secret=${demo.client.client_secret}\n` +
          `  resource server client_id=${demo.resourceServer.client_id} client_secret=${demo.resourceServer.client_secret}\n` +
          `  user            username=${demo.user.email} password=${demo.user.password}\n\n`,
      );
    }
  }

  const server = http.createServer(app.callback);
  server.keepAliveTimeout = 5000;
  server.headersTimeout = 10000;
  server.requestTimeout = 30000;
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(config.port, () => resolve());
    });
  } catch (err) {
    // The port is taken, say: nothing listens, so nothing else may stay open (pools, timers).
    await app.close();
    throw err;
  }
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;
  logger.info({ port, database: app.database.kind, issuer: config.publicUrl }, 'portcullis listening');
  if (config.env === 'production' && (config.smsSender === 'log' || config.pushSender === 'log')) {
    // The log senders keep what they would send (one-time codes included) in the outbox table.
    logger.warn({ smsSender: config.smsSender, pushSender: config.pushSender }, 'a development sender (log) is in use: set SMS_SENDER/PUSH_SENDER=webhook for real delivery');
  }

  let closing: Promise<void> | undefined;
  const shutdown = (signal = 'shutdown') => {
    closing ??= (async () => {
      logger.info({ signal }, 'draining');
      app.startDraining();
      // Grace: /readyz already fails, so the load balancer stops sending; meanwhile connections the
      // kernel has accepted are still read and answered (with Connection: close) instead of reset.
      const grace = Math.min(config.shutdownGraceMs, Math.floor(config.shutdownTimeoutMs / 2));
      if (grace > 0) await new Promise((r) => setTimeout(r, grace));
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      const timer = setTimeout(() => {
        logger.warn('drain timeout reached; closing remaining connections');
        server.closeAllConnections();
      }, config.shutdownTimeoutMs);
      timer.unref();
      await closed;
      clearTimeout(timer);
      await app.close();
      logger.info('stopped');
    })();
    return closing;
  };

  if (opts.installSignalHandlers) {
    for (const signal of ['SIGTERM', 'SIGINT'] as const) {
      process.once(signal, () => {
        shutdown(signal).then(
          () => process.exit(0),
          (err: unknown) => {
            logger.error({ err }, 'shutdown failed');
            process.exit(1);
          },
        );
      });
    }
  }
  return { app, server, port, shutdown };
}
