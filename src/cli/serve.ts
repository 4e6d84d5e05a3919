import fs from 'node:fs';
import { createBroker, type Broker } from '../broker.js';
import { loadConfig } from '../config.js';
import { unknownSettings } from '../config-suggestions.js';
import { createLogger, ignoreBrokenStdio, stdoutLog } from '../http/logging.js';
import { bindServer, DEFAULT_DRAIN_MS } from '../http/server.js';

/** Past this, a shutdown that has not finished (a hung close, a stuck database) exits anyway. */
export const SHUTDOWN_DEADLINE_MS = DEFAULT_DRAIN_MS + 5_000;
/** The longest the last log lines may take to be written before the process exits. */
const LOG_DRAIN_MS = 1_000;

/**
 * Starts the broker; first start creates the data dir, root key, database and admin key. A root
 * key is created only for an empty database: when the key file is missing (or lacks a version)
 * but the database holds sealed data, start-up stops before writing anything, and the process
 * exits with 66 (ROOT_KEY_UNAVAILABLE_EXIT_CODE; invalid configuration exits 78, see main.ts).
 *
 * The listen address is bound first: an address in use ends the start (78) before anything is
 * created or printed. An unreachable database ends it with one line naming the database (78).
 */
export async function serve(): Promise<void> {
  const config = loadConfig();
  // a reader of stdout or stderr that went away must not crash or hang the broker
  ignoreBrokenStdio();
  const logger = createLogger(config.logLevel);
  for (const unknown of unknownSettings(process.env)) logger.warn({ setting: unknown.name, suggestion: unknown.suggestion }, unknown.message);

  let broker: Broker;
  const bound = await bindServer(config, { logger }).catch(async (err) => {
    await stdoutLog().drain(LOG_DRAIN_MS);
    throw err;
  });
  try {
    fs.mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
    broker = await createBroker(config, { logger });
    const { apiKeys } = broker.services;
    const adminKey = await apiKeys.bootstrapAdmin(config.bootstrapAdminKey);
    if (adminKey && !config.bootstrapAdminKey) {
      // printed once, to the terminal only; the database keeps only its hash
      process.stderr.write(
        `\n  Keywarden first start: admin API key (shown once, store it now):\n\n    ${adminKey}\n\n` +
          `  Use it as: Authorization: Bearer <key>\n\n`,
      );
    } else if (adminKey) {
      logger.info('bootstrap admin key installed from KEYWARDEN_BOOTSTRAP_ADMIN_KEY');
    }
  } catch (err) {
    await bound.close();
    await stdoutLog().drain(LOG_DRAIN_MS);
    throw err;
  }
  const running = bound.serve(broker.app);
  logger.info({ url: running.url, database: config.databaseUrl.split(':')[0], keyProvider: config.keyProvider.kind }, 'keywarden listening');

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) {
      // a second signal: the operator does not want to wait for the drain
      process.exit(1);
    }
    stopping = true;
    // whatever hangs below (a client that never lets go, a database that does not answer), the
    // process ends by this deadline; unref'd, so it never keeps a finished process alive
    setTimeout(() => {
      logger.error({ signal, deadlineMs: SHUTDOWN_DEADLINE_MS }, 'shutdown did not finish in time: exiting');
      void stdoutLog().drain(200).finally(() => process.exit(1));
    }, SHUTDOWN_DEADLINE_MS).unref();
    logger.info({ signal }, 'shutting down: draining connections');
    try {
      await running.close({ drainMs: DEFAULT_DRAIN_MS });
      await broker.close();
      logger.info('stopped');
    } catch (err) {
      logger.error({ err: { message: (err as Error).message } }, 'shutdown failed');
      await stdoutLog().drain(LOG_DRAIN_MS);
      process.exit(1);
    }
    await stdoutLog().drain(LOG_DRAIN_MS);
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
  process.on('SIGHUP', () => {
    broker.services.auditSink?.reopen();
    logger.info('audit file reopened');
  });
}
