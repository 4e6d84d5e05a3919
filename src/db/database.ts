import type { Knex } from 'knex';
import type { DbHandle, Dialect } from './connection.js';
import { classifyDatabaseError, type DatabaseFailureKind } from './db-errors.js';
import { SqliteFastPath } from './sqlite-fast-path.js';
import { SqliteCheckpointer } from './sqlite-checkpointer.js';

/** The query builder on the pool, or on an open transaction: what repositories query with. */
export type Queryable = Knex;
export type Transaction = Knex.Transaction;

/** A value bound to a `?` placeholder. */
export type SqlValue = string | number | boolean | null | Buffer;

/** One hand-written SQL statement, `?` placeholders, valid on SQLite and PostgreSQL. */
export interface Statement {
  sql: string;
  params: readonly SqlValue[];
}

/**
 * A write written once for both connections: it yields its statements one by one and is given
 * each statement's rows back (an empty array for statements that return none). The synchronous
 * SQLite connection runs it within one tick; a knex transaction runs it with awaits.
 */
export type StatementProgram<T> = Generator<Statement, T, readonly object[]>;

/** Builds a program for the dialect it runs on (row locks are PostgreSQL-only SQL). */
export type ProgramFactory<T> = (dialect: Dialect) => StatementProgram<T>;

export interface DatabaseOptions {
  /**
   * The synchronous SQLite connection for the delivery path (default on, SQLite files only).
   * Off (KEYWARDEN_SQLITE_FAST_PATH=off) every statement goes through knex: a test and
   * diagnostic setting, to show that nothing depends on the fast path.
   */
  fastPath?: boolean;
  /**
   * Told the kind of every database failure (db-errors.ts), for metrics: statements on the pool
   * and in transactions (knex's query-error), failed connection acquires, and the fast path.
   * Failures that are not a database failure (a unique violation, say) are not reported.
   */
  onFailure?: (kind: DatabaseFailureKind) => void;
  /**
   * The WAL checkpoint worker (sqlite-checkpointer.ts; default on, SQLite files only). Off for a
   * short-lived port opened beside the serving one (the root key's, before migrations): one
   * worker per database file is enough, and a port nobody closes must not hold a connection open.
   */
  checkpoints?: boolean;
}

/** The pool's connections, as tarn counts them. */
export interface PoolStats {
  used: number;
  free: number;
  /** Callers waiting for a connection, and connections being opened. */
  pending: number;
  max: number;
}

/** tarn's TimeoutError (its name property says only "Error"): no connection came free in time. */
function isPoolTimeout(err: unknown): boolean {
  return (err as { constructor?: { name?: unknown } } | null)?.constructor?.name === 'TimeoutError';
}

/** What is read of knex's pool (tarn). */
interface TarnPool {
  numUsed(): number;
  numFree(): number;
  numPendingAcquires(): number;
  numPendingCreates(): number;
  max: number;
  on(event: 'acquireFail', listener: (eventId: number, err: unknown) => void): void;
  removeListener(event: 'acquireFail', listener: (eventId: number, err: unknown) => void): void;
}

/** knex's raw() answers with the driver's own shape: rows for better-sqlite3, `{ rows }` for pg. */
function rowsOf(result: unknown): readonly object[] {
  if (Array.isArray(result)) return result as object[];
  const rows = (result as { rows?: unknown } | undefined)?.rows;
  return Array.isArray(rows) ? (rows as object[]) : [];
}

/** Runs `program` on a knex transaction (or the pool): the asynchronous driver. */
export async function runProgramOn<T>(executor: Queryable, program: StatementProgram<T>): Promise<T> {
  let step = program.next([]);
  while (!step.done) {
    const { sql, params } = step.value;
    step = program.next(rowsOf(await executor.raw(sql, params)));
  }
  return step.value;
}

/**
 * The database port repositories are built on. Two ways in:
 *
 * - read: `reader` (the query builder on the pool) and `readOne` (one row of a hand-written,
 *   indexed statement; on SQLite a prepared statement on a second, synchronous connection,
 *   the "fast path", when it is on).
 * - write in a transaction: `transaction`, and `writeProgram` for a statement program that may
 *   run synchronously on the fast path.
 *
 * The fast path is an implementation detail of this class: callers never pick the connection
 * or see a driver's result shapes. Every knex transaction must be opened through `transaction`
 * (never `knex.transaction`): it counts the open ones, and the fast path steps aside while one
 * is open. A knex transaction on SQLite can span awaits (a Vault call, say); had the fast-path
 * connection committed meanwhile, that transaction's next write would fail with
 * SQLITE_BUSY_SNAPSHOT.
 */
export class Database {
  readonly dialect: Dialect;
  /** Reads outside a transaction. */
  readonly reader: Knex;
  private readonly fast?: SqliteFastPath;
  private readonly checkpointer?: SqliteCheckpointer;
  private openTransactions = 0;
  private readonly onFailure?: (kind: DatabaseFailureKind) => void;
  private readonly unwatch: Array<() => void> = [];

  constructor(handle: DbHandle, options: DatabaseOptions = {}) {
    this.dialect = handle.dialect;
    this.reader = handle.knex;
    if (handle.sqliteFile && options.fastPath !== false) {
      this.fast = new SqliteFastPath(handle.sqliteFile, () => this.openTransactions > 0, handle.sqliteSynchronous);
    }
    // with or without the fast path: the knex connection's automatic checkpoint is only a fallback (connection.ts)
    if (handle.sqliteFile && options.checkpoints !== false) this.checkpointer = new SqliteCheckpointer(handle.sqliteFile, handle.sqliteSynchronous ?? 'full');
    const onFailure = options.onFailure;
    if (onFailure) {
      this.onFailure = onFailure;
      const onQueryError = (err: unknown) => this.noteFailure(err);
      handle.knex.on('query-error', onQueryError);
      this.unwatch.push(() => handle.knex.removeListener('query-error', onQueryError));
      const pool = this.pool;
      if (pool) {
        // a connection that could not be had: the pool timed out, or opening one failed
        const onAcquireFail = (_id: number, err: unknown) => onFailure(classifyDatabaseError(err)?.failure ?? (isPoolTimeout(err) ? 'timeout' : 'unavailable'));
        pool.on('acquireFail', onAcquireFail);
        this.unwatch.push(() => pool.removeListener('acquireFail', onAcquireFail));
      }
    }
  }

  private get pool(): TarnPool | undefined {
    return (this.reader as unknown as { client?: { pool?: TarnPool } }).client?.pool ?? undefined;
  }

  private noteFailure(err: unknown): void {
    const kind = classifyDatabaseError(err)?.failure;
    if (kind) this.onFailure?.(kind);
  }

  /** The knex pool's connections now (the SQLite fast path's own connection is not in the pool). */
  poolStats(): PoolStats | undefined {
    const pool = this.pool;
    if (!pool) return undefined;
    return { used: pool.numUsed(), free: pool.numFree(), pending: pool.numPendingAcquires() + pool.numPendingCreates(), max: pool.max };
  }

  /** Whether the synchronous SQLite connection is in use (diagnostics and tests). */
  get fastPathEnabled(): boolean {
    return this.fast !== undefined;
  }

  /** A pragma's value on the fast-path connection (diagnostics and tests); undefined when it is off. */
  fastPathPragma(name: string): unknown {
    return this.fast?.pragma(name);
  }

  /** One row of an indexed statement: no knex on SQLite's fast path, one round trip elsewhere. */
  async readOne<T extends object>(sql: string, params: readonly SqlValue[]): Promise<T | undefined> {
    if (this.fast) {
      try {
        return this.fast.get<T>(sql, ...params);
      } catch (err) {
        this.noteFailure(err);
        throw err;
      }
    }
    return rowsOf(await this.reader.raw(sql, params))[0] as T | undefined;
  }

  /** All rows of a hand-written statement, on the pool (the driver's result shape stays in here). */
  async readAll<T extends object>(sql: string, params: readonly SqlValue[]): Promise<T[]> {
    return rowsOf(await this.reader.raw(sql, params)) as T[];
  }

  /** One trivial round trip on the pool (the readiness probe); rejects with the driver's error when the database does not answer. */
  async ping(): Promise<void> {
    await this.reader.raw('select 1');
  }

  /** Runs `fn` in a knex transaction; it commits when `fn` resolves and rolls back when it throws. */
  async transaction<T>(fn: (trx: Transaction) => Promise<T>): Promise<T> {
    this.openTransactions++;
    try {
      return await this.reader.transaction(fn);
    } finally {
      this.openTransactions--;
    }
  }

  /**
   * Runs a statement program in one transaction: synchronously on the fast path (BEGIN
   * IMMEDIATE, within one tick) when it is on and free, otherwise in a knex transaction.
   */
  async writeProgram<T>(program: ProgramFactory<T>): Promise<T> {
    const fast = this.fast;
    let done: { value: T } | undefined;
    try {
      done = fast?.tryImmediate(() => fast.runProgram(program('sqlite')));
    } catch (err) {
      this.noteFailure(err);
      throw err;
    }
    if (done) return done.value;
    return this.transaction((trx) => runProgramOn(trx, program(this.dialect)));
  }

  /**
   * A write that is one statement, atomic by itself: on PostgreSQL it runs on the pool without
   * BEGIN and COMMIT, one round trip instead of three; on SQLite as writeProgram does. The program
   * must yield exactly one statement (checked: a second is refused before it runs).
   */
  async writeStatement<T>(program: ProgramFactory<T>): Promise<T> {
    if (this.dialect === 'sqlite') return this.writeProgram(program);
    const steps = program(this.dialect);
    const first = steps.next([]);
    if (first.done) return first.value;
    const after = steps.next(rowsOf(await this.reader.raw(first.value.sql, first.value.params)));
    if (!after.done) throw new Error('writeStatement: the program yielded a second statement; use writeProgram');
    return after.value;
  }

  /** Runs a statement program inside the caller's transaction. */
  runIn<T>(trx: Transaction, program: ProgramFactory<T>): Promise<T> {
    return runProgramOn(trx, program(this.dialect));
  }

  /** The worker's last WAL checkpoint on SQLite (diagnostics and tests): frames in the log, and how many it copied. */
  get lastCheckpoint(): { log: number; checkpointed: number; busy: number } | undefined {
    return this.checkpointer?.last;
  }

  /**
   * Closes the port's own connections. Resolves once the checkpoint worker's connection is closed
   * too: a connection left open would keep whichever connection closes last from folding the log
   * back into the database file, so a stopped broker would leave the file and its log apart.
   */
  async close(): Promise<void> {
    for (const unwatch of this.unwatch.splice(0)) unwatch();
    const checkpointer = this.checkpointer?.close();
    this.fast?.close();
    await checkpointer;
  }
}
