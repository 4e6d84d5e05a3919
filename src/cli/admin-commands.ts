import fs from 'node:fs';
import { loadConfig } from '../config.js';
import { rewrapAll } from '../crypto/root-key-rotation.js';
import { openDatabase } from '../db/connection.js';
import { migrateLatest } from '../db/migrate.js';
import { createServices } from '../broker.js';
import { createLogger } from '../http/logging.js';

export async function migrateCommand(): Promise<void> {
  const config = loadConfig();
  const db = await openDatabase(config.databaseUrl, { sqliteSynchronous: config.sqliteSynchronous, timeouts: config.dbTimeouts });
  try {
    const applied = await migrateLatest(db.knex);
    process.stdout.write(applied.length ? `applied: ${applied.join(', ')}\n` : 'database is up to date\n');
  } finally {
    await db.close();
  }
}

/** Creates the data dir, root key, schema and the admin key without serving. */
export async function initCommand(): Promise<void> {
  const config = loadConfig();
  fs.mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  const services = await createServices(config, { logger: createLogger('warn') });
  try {
    const key = await services.apiKeys.bootstrapAdmin(config.bootstrapAdminKey);
    // init issues the first admin key only; recovering a lost one is its own, audited command
    const existing = '; an admin key already exists (init issues the first one only). If every admin key is lost or revoked, run on this host: keywarden break-glass --reason "<why>"';
    process.stdout.write(
      key && !config.bootstrapAdminKey
        ? `initialized ${config.dataDir}\nadmin API key (shown once, store it now): ${key}\n`
        : `initialized ${config.dataDir}${key ? ' (admin key from KEYWARDEN_BOOTSTRAP_ADMIN_KEY)' : existing}\n`,
    );
  } finally {
    await services.dbHandle.close();
  }
}

export async function rotateRootKeyCommand(options: { resume?: boolean }): Promise<void> {
  const config = loadConfig();
  // createServices opens the key provider behind the missing-key check, before anything is rotated
  const services = await createServices(config, { logger: createLogger('warn') });
  const provider = services.keyProvider;
  try {
    const before = await provider.currentVersion();
    const version = options.resume ? before : await provider.rotate();
    process.stdout.write(options.resume ? `resuming rewrap to root key version ${version}\n` : `root key rotated: version ${before} -> ${version}\n`);
    const result = await rewrapAll(services.database, provider, {
      onProgress: (p) => process.stdout.write(`  ${p.table}: ${p.rewrapped} rewrapped\n`),
    });
    await services.audit.record({
      actor: { kind: 'system', name: 'keywarden-cli' },
      action: 'rootkey.rotate',
      resource: { kind: 'root-key', name: result.targetVersion },
      outcome: 'allow',
      details: { from: before, to: result.targetVersion, rewrapped: result.rewrapped },
    });
    process.stdout.write(`done: every data key is wrapped by root key version ${result.targetVersion}\n`);
  } finally {
    await services.dbHandle.close();
  }
}
