import fs from 'node:fs';
import path from 'node:path';
import knexFactory, { type Knex } from 'knex';
import pg from 'pg';

// Timestamps are stored as epoch milliseconds in BIGINT columns; node-postgres returns
// int8 as strings by default, which would leak string/number differences between dialects.
pg.types.setTypeParser(20, (value: string) => Number(value));

export type Db = Knex;
export type Dialect = 'sqlite' | 'postgres';

export interface DbHandle {
  knex: Knex;
  dialect: Dialect;
  /** The SQLite file, for the synchronous fast-path connection. */
  sqliteFile?: string;
  /** Transactions open on the knex connection right now (SQLite; always 0 on PostgreSQL). */
  openTransactions(): number;
  close(): Promise<void>;
}

export interface DbOptions {
  /** PostgreSQL schema to use (created when missing); tests use one per run. */
  schema?: string;
  poolMax?: number;
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
  if (dialect === 'sqlite') {
    const filename = sqliteFileFromUrl(url);
    if (filename !== ':memory:') {
      sqliteFile = filename;
      fs.mkdirSync(path.dirname(filename), { recursive: true, mode: 0o700 });
      restrictSqliteFiles(filename);
    }
    knex = knexFactory({
      client: 'better-sqlite3',
      connection: { filename },
      useNullAsDefault: true,
      acquireConnectionTimeout: 10_000,
      pool: {
        min: 1,
        max: 1,
        afterCreate(conn: any, done: (err: Error | null, conn: unknown) => void) {
          conn.pragma('journal_mode = WAL');
          conn.pragma('synchronous = NORMAL');
          conn.pragma('foreign_keys = ON');
          conn.pragma('busy_timeout = 5000');
          done(null, conn);
        },
      },
    });
  } else {
    const schema = options.schema ?? new URL(url).searchParams.get('schema') ?? undefined;
    const connectionString = stripParam(url, 'schema');
    if (schema) {
      if (!/^[a-z_][a-z0-9_]{0,62}$/.test(schema)) throw new Error('invalid PostgreSQL schema name');
      const bootstrap = knexFactory({ client: 'pg', connection: connectionString, pool: { min: 0, max: 1 } });
      try {
        await bootstrap.raw(`CREATE SCHEMA IF NOT EXISTS "${schema}"`);
      } finally {
        await bootstrap.destroy();
      }
    }
    knex = knexFactory({
      client: 'pg',
      connection: connectionString,
      searchPath: schema ? [schema] : undefined,
      acquireConnectionTimeout: 10_000,
      pool: { min: 0, max: options.poolMax ?? 10 },
    });
  }
  // A knex transaction on SQLite can span awaits (a Vault call, say). If the fast-path
  // connection committed in between, the transaction's next write would fail with
  // SQLITE_BUSY_SNAPSHOT; counting open transactions lets the fast path step aside.
  let open = 0;
  if (dialect === 'sqlite') {
    const client = knex.client as { transaction: (...args: unknown[]) => PromiseLike<unknown> };
    const original = client.transaction.bind(client);
    client.transaction = (...args: unknown[]) => {
      const trx = original(...args);
      open++;
      const done = () => {
        open--;
      };
      trx.then(done, done);
      return trx;
    };
  }
  return {
    knex,
    dialect,
    sqliteFile,
    openTransactions: () => open,
    close: () => knex.destroy(),
  };
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
    } catch (err: any) {
      if (err?.code !== 'ENOENT') throw err;
    }
  }
}

function stripParam(url: string, name: string): string {
  const u = new URL(url);
  u.searchParams.delete(name);
  return u.toString();
}
