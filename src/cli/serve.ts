import fs from 'node:fs';
import { createBroker } from '../broker.js';
import { loadConfig } from '../config.js';
import { listen } from '../http/server.js';

/**
 * Starts the broker; first start creates the data dir, root key, database and admin key. A root
 * key is created only for an empty database: when the key file is missing (or lacks a version)
 * but the database holds sealed data, start-up stops before writing anything, and the process
 * exits with 66 (ROOT_KEY_UNAVAILABLE_EXIT_CODE; invalid configuration exits 78, see main.ts).
 */
export async function serve(): Promise<void> {
  const config = loadConfig();
  fs.mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  const broker = await createBroker(config);
  const { logger, apiKeys } = broker.services;
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
  const running = await listen(broker.app, config);
  logger.info({ url: running.url, database: config.databaseUrl.split(':')[0], keyProvider: config.keyProvider.kind }, 'keywarden listening');

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down: draining connections');
    await running.close();
    await broker.close();
    logger.info('stopped');
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
  process.on('SIGHUP', () => {
    broker.services.auditSink?.reopen();
    logger.info('audit file reopened');
  });
}
