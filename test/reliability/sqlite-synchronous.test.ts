import { afterEach, describe, expect, it } from 'vitest';
import type { Broker } from '../../src/broker.js';
import { ConfigError, loadConfig } from '../../src/config.js';
import { startSqliteFileBroker } from '../support/broker.js';

/**
 * SQLite durability: every connection the broker opens to its file (the knex pool and the
 * synchronous fast path that commits client-read audit batches) runs with synchronous=FULL by
 * default, so a committed write and the audit event of a delivered secret survive power loss.
 * KEYWARDEN_SQLITE_SYNCHRONOUS=normal trades that for speed, on every connection alike.
 * These brokers always use a SQLite file, whatever database the rest of the suite runs on.
 */
const FULL = 2;
const NORMAL = 1;

describe('SQLite synchronous level', () => {
  let started: Awaited<ReturnType<typeof startSqliteFileBroker>> | undefined;
  afterEach(async () => {
    await started?.close();
    started = undefined;
  });

  // no db handle passed: the broker opens its own connections from the configuration, as `serve` does
  async function start(env: Record<string, string>): Promise<Broker> {
    started = await startSqliteFileBroker(env);
    return started.broker;
  }

  async function levels(b: Broker): Promise<{ pool: number; fastPath: number }> {
    const rows = await b.services.db.raw('PRAGMA synchronous');
    const fast = b.services.database.fastPathPragma('synchronous') as number;
    return { pool: rows[0].synchronous, fastPath: fast };
  }

  it('defaults to FULL on the pool and on the fast path', async () => {
    const b = await start({});
    expect(b.services.config.sqliteSynchronous).toBe('full');
    expect(b.services.database.fastPathEnabled).toBe(true);
    expect(await levels(b)).toEqual({ pool: FULL, fastPath: FULL });
  });

  it('KEYWARDEN_SQLITE_SYNCHRONOUS=normal applies NORMAL to every connection', async () => {
    const b = await start({ KEYWARDEN_SQLITE_SYNCHRONOUS: 'normal' });
    expect(await levels(b)).toEqual({ pool: NORMAL, fastPath: NORMAL });
  });

  it('KEYWARDEN_SQLITE_SYNCHRONOUS=full is accepted explicitly, anything else is a configuration error', async () => {
    const b = await start({ KEYWARDEN_SQLITE_SYNCHRONOUS: 'full' });
    expect(await levels(b)).toEqual({ pool: FULL, fastPath: FULL });
    expect(() => loadConfig({ KEYWARDEN_SQLITE_SYNCHRONOUS: 'off' })).toThrow(ConfigError);
  });
});
