import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openDatabase, type DbHandle } from '../../src/db/connection.js';
import { TEST_DATABASE_URL } from './broker.js';

/**
 * A broker host as an operator has it, for tests that run the real CLI against it: a data
 * directory, and its database (the default SQLite file there, or a private PostgreSQL schema when
 * KEYWARDEN_TEST_DATABASE_URL is set).
 */
export interface Site {
  dataDir: string;
  /** The database URL the CLI gets ('' means the default SQLite file in the data dir). */
  databaseUrl: string;
  keyFile: string;
  sqliteFile?: string;
  schema?: string;
}

export function newSite(prefix: string): Site {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}-`));
  const keyFile = path.join(dataDir, 'root-key.json');
  if (!TEST_DATABASE_URL) return { dataDir, databaseUrl: '', keyFile, sqliteFile: path.join(dataDir, 'keywarden.db') };
  const schema = `kw_test_${crypto.randomBytes(6).toString('hex')}`;
  const url = new URL(TEST_DATABASE_URL);
  url.searchParams.set('schema', schema);
  return { dataDir, databaseUrl: url.toString(), keyFile, schema };
}

export function openSite(site: Site): Promise<DbHandle> {
  return site.sqliteFile ? openDatabase(`sqlite:${site.sqliteFile}`) : openDatabase(TEST_DATABASE_URL!, { schema: site.schema });
}

/** Drops the site's PostgreSQL schema (if any) and its data directory. */
export async function dropSite(site: { dataDir: string; schema?: string }): Promise<void> {
  if (site.schema) {
    const handle = await openDatabase(TEST_DATABASE_URL!);
    try {
      await handle.knex.raw(`DROP SCHEMA IF EXISTS "${site.schema}" CASCADE`);
    } finally {
      await handle.close();
    }
  }
  fs.rmSync(site.dataDir, { recursive: true, force: true });
}
