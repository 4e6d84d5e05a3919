import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import knexFactory, { type Knex } from 'knex';
import pg from 'pg';
import { databaseConnectError, isClientSideTimeout } from './db-errors.js';
import { AUTOCHECKPOINT_FALLBACK_PAGES } from './sqlite-checkpointer.js';

/**
 * Timestamps are stored as epoch milliseconds in BIGINT columns; node-postgres returns int8 as
 * strings by default, which would leak string/number differences between dialects. Given to
 * each of our connections (pg's per-client `types`) rather than set on pg's global registry,
 * so importing this module changes nothing for anyone else using pg in the process.
 */
const int8AsNumber = (value: string) => Number(value);
const pgTypes: Knex.PgCustomTypesConfig = {
  getTypeParser: (oid: number, format: string) =>
    oid === pg.types.builtins.INT8 && format !== 'binary' ? int8AsNumber : pg.types.getTypeParser(oid, format === 'binary' ? 'binary' : 'text'),
};

export type Db = Knex;
export type Dialect = 'sqlite' | 'postgres';

export interface DbHandle {
  knex: Knex;
  dialect: Dialect;
  /** The SQLite file, for the synchronous fast-path connection (database.ts). */
  sqliteFile?: string;
  /** SQLite `synchronous` level of this handle's connections; the fast path uses the same. */
  sqliteSynchronous?: SqliteSynchronous;
  close(): Promise<void>;
}

export interface DbOptions {
  /** PostgreSQL schema to use (created when missing); tests use one per run. */
  schema?: string;
  poolMax?: number;
  /** SQLite durability: 'full' (default) survives power loss, 'normal' only a process crash. */
  sqliteSynchronous?: SqliteSynchronous;
  /** Time limits for getting a connection and running a statement (KEYWARDEN_DB_*_TIMEOUT_MS). */
  timeouts?: Partial<DbTimeouts>;
}

export interface DbTimeouts {
  /** Longest wait for a pooled connection, a new connection's handshake included. */
  acquireMs: number;
  /** Longest a statement may run: PostgreSQL statement_timeout, SQLite busy_timeout. */
  statementMs: number;
}

export const DEFAULT_DB_TIMEOUTS: DbTimeouts = { acquireMs: 3000, statementMs: 5000 };

/**
 * How much longer than statement_timeout the client waits for an answer before it gives up on
 * its own. A live server cancels the statement first (57014, the connection stays usable); a
 * frozen or unreachable one never answers, and only the client-side limit ends the wait.
 */
const CLIENT_TIMEOUT_MARGIN_MS = 250;

export type SqliteSynchronous = 'full' | 'normal';

/**
 * Pragmas every SQLite connection to the broker's file gets (the knex pool and the fast path).
 * In WAL mode, synchronous=FULL fsyncs the log at every commit, so an acknowledged write, and the
 * audit event of a delivered secret, are on disk before the response; NORMAL may lose the last
 * commits on power loss (not on a process crash).
 */
export function applySqlitePragmas(conn: { pragma(source: string): unknown }, options: { synchronous: SqliteSynchronous; busyTimeoutMs: number }): void {
  conn.pragma('journal_mode = WAL');
  conn.pragma(`synchronous = ${options.synchronous === 'normal' ? 'NORMAL' : 'FULL'}`);
  conn.pragma('foreign_keys = ON');
  conn.pragma(`busy_timeout = ${options.busyTimeoutMs}`);
  // the broker checkpoints from a worker thread (SqliteCheckpointer): a commit on the event loop
  // checkpoints only if that falls far behind (a short-lived CLI process checkpoints at close)
  conn.pragma(`wal_autocheckpoint = ${AUTOCHECKPOINT_FALLBACK_PAGES}`);
}

// knex's PostgreSQL dialect (no typings of its own; knex accepts a dialect class as `client`)
const KnexPgClient = createRequire(import.meta.url)('knex/lib/dialects/postgres/index.js') as typeof Knex.Client;
/** The dialect's raw query runner (not in knex's typings). */
const runPgQuery = (KnexPgClient.prototype as unknown as { _query(connection: unknown, obj: unknown): Promise<unknown> })._query;

/** What _query touches of a pooled node-postgres client. */
interface PgPooledConnection {
  __knex__disposed?: unknown;
  connection?: { stream?: { destroy(): void } };
}

/**
 * knex's pg dialect, except that a connection whose query hit the client-side timeout is
 * closed at once and never reused. node-postgres leaves such a query pending on the socket:
 * the next query there (a ROLLBACK, the next request's) would wait behind it for a server
 * that may never answer. knex's own `__knex__disposed` mark makes the pool destroy it.
 * Overridden on the class, not an instance, because transactions run on a copy of the client.
 */
class TimeBoundedPgClient extends KnexPgClient {
  constructor(config: Knex.Config) {
    super(config);
    // still 'pg' to code that picks PostgreSQL-only SQL (row locks) by config.client
    this.config.client = 'pg';
  }

  async _query(connection: PgPooledConnection, obj: unknown): Promise<unknown> {
    try {
      return await runPgQuery.call(this, connection, obj);
    } catch (err) {
      if (isClientSideTimeout(err)) {
        connection.__knex__disposed = err;
        connection.connection?.stream?.destroy();
      }
      throw err;
    }
  }
}

export function dialectOf(url: string): Dialect {
  if (url.startsWith('sqlite:')) return 'sqlite';
  if (url.startsWith('postgres:') || url.startsWith('postgresql:')) return 'postgres';
  throw new Error(`unsupported database URL scheme in ${url.split(':')[0]}:`);
}

export function sqliteFileFromUrl(url: string): string {
  const rest = url.slice('sqlite:'.length).replace(/^\/\/(?=\/)/, '');
  return rest === ':memory:' ? rest : path.resolve(rest);
}

export async function openDatabase(url: string, options: DbOptions = {}): Promise<DbHandle> {
  const dialect = dialectOf(url);
  let knex: Knex;
  let sqliteFile: string | undefined;
  const sqliteSynchronous = options.sqliteSynchronous ?? 'full';
  const timeouts = { ...DEFAULT_DB_TIMEOUTS, ...options.timeouts };
  if (dialect === 'sqlite') {
    const filename = sqliteFileFromUrl(url);
    if (filename !== ':memory:') {
      sqliteFile = filename;
      try {
        createSqliteDirectory(filename);
        restrictSqliteFiles(filename);
      } catch (err) {
        throw databaseConnectError(err, url, { acquireMs: timeouts.acquireMs, sqliteFile: filename });
      }
    }
    knex = knexFactory({
      client: 'better-sqlite3',
      connection: { filename },
      log: KNEX_LOG,
      useNullAsDefault: true,
      acquireConnectionTimeout: timeouts.acquireMs,
      // error messages carry the SQL but not the bound values (secrets, hashes) into logs
      compileSqlOnError: false,
      pool: {
        min: 1,
        max: 1,
        afterCreate(conn: Parameters<typeof applySqlitePragmas>[0], done: (err: Error | null, conn: unknown) => void) {
          applySqlitePragmas(conn, { synchronous: sqliteSynchronous, busyTimeoutMs: timeouts.statementMs });
          done(null, conn);
        },
      },
    });
  } else {
    const schema = options.schema ?? new URL(url).searchParams.get('schema') ?? undefined;
    const connection = {
      connectionString: stripParam(url, 'schema'),
      // server side: the statement is cancelled (57014) and the connection stays usable
      statement_timeout: timeouts.statementMs,
      // client side, for a server that does not answer at all (frozen, or the network is gone)
      query_timeout: timeouts.statementMs + CLIENT_TIMEOUT_MARGIN_MS,
      connectionTimeoutMillis: timeouts.acquireMs,
      // notices a peer that vanished without closing the connection (host down, cable cut)
      keepAlive: true,
      keepAliveInitialDelayMillis: 10_000,
      types: pgTypes,
    };
    if (schema) {
      if (!/^[a-z_][a-z0-9_]{0,62}$/.test(schema)) throw new Error('invalid PostgreSQL schema name');
      const bootstrap = knexFactory({ client: TimeBoundedPgClient, connection, log: KNEX_LOG, acquireConnectionTimeout: timeouts.acquireMs, pool: { min: 0, max: 1 } });
      try {
        await bootstrap.raw(`CREATE SCHEMA IF NOT EXISTS "${schema}"`);
      } catch (err) {
        throw databaseConnectError(err, url, { acquireMs: timeouts.acquireMs });
      } finally {
        await bootstrap.destroy();
      }
    }
    knex = knexFactory({
      client: TimeBoundedPgClient,
      connection,
      log: KNEX_LOG,
      searchPath: schema ? [schema] : undefined,
      acquireConnectionTimeout: timeouts.acquireMs,
      compileSqlOnError: false,
      pool: { min: 0, max: options.poolMax ?? 10 },
    });
  }
  // one round trip now, so an unreachable database fails the start with one line naming it
  // (bounded by the acquire timeout) instead of a driver error at the first migration
  try {
    await knex.raw('select 1');
  } catch (err) {
    await knex.destroy().catch(() => undefined);
    throw databaseConnectError(err, url, { acquireMs: timeouts.acquireMs, sqliteFile });
  }
  return {
    knex,
    dialect,
    sqliteFile,
    sqliteSynchronous: dialect === 'sqlite' ? sqliteSynchronous : undefined,
    close: () => knex.destroy(),
  };
}

/**
 * knex's own warnings go to stderr, except "Acquire connection error" with the driver's stack:
 * that failure reaches the caller anyway (a one-line start-up error, or a 503 with its log line).
 */
const KNEX_LOG: Knex.Config['log'] = {
  warn(message: string) {
    if (!/^Acquire connection error/.test(message)) process.stderr.write(`knex: ${message}\n`);
  },
};

/**
 * The SQLite file's directory is created (0700) when its own parent exists, as the data dir is;
 * a missing tree above it is a mistyped path, reported instead of created.
 */
function createSqliteDirectory(filename: string): void {
  try {
    fs.mkdirSync(path.dirname(filename), { mode: 0o700 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
}

/**
 * The database holds secrets (encrypted) and everything about who may read them: only the
 * broker's user may open it. SQLite gives the -wal and -shm files it creates the mode of the
 * database file, so the file is created 0600 before SQLite opens it; files left by an older
 * version with looser modes are tightened.
 */
export function restrictSqliteFiles(filename: string): void {
  fs.closeSync(fs.openSync(filename, fs.constants.O_CREAT | fs.constants.O_RDWR, 0o600));
  for (const file of [filename, `${filename}-wal`, `${filename}-shm`, `${filename}-journal`]) {
    try {
      if ((fs.statSync(file).mode & 0o777) !== 0o600) fs.chmodSync(file, 0o600);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }
}

function stripParam(url: string, name: string): string {
  const u = new URL(url);
  u.searchParams.delete(name);
  return u.toString();
}
