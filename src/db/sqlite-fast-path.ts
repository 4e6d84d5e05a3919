import Database from 'better-sqlite3';
import { applySqlitePragmas, type SqliteSynchronous } from './connection.js';
import type { StatementProgram } from './database.js';

/**
 * Internal to src/db/: code outside reaches it only through the Database port (database.ts).
 *
 * A second, synchronous connection to the broker's SQLite file for the secret-delivery hot
 * path. Every use runs to completion within one tick (no awaits), so its write transactions
 * never hold the lock while other code runs. When knex's connection holds the write lock
 * across an await, an immediate transaction here fails at once (busy_timeout 0) and the caller
 * falls back to the knex path: correctness never depends on the fast path.
 */
export class SqliteFastPath {
  private readonly db: Database.Database;
  private readonly statements = new Map<string, Database.Statement>();

  /** `writerBusy` says whether the main (knex) connection has a transaction open. */
  constructor(
    filename: string,
    private readonly writerBusy: () => boolean = () => false,
    synchronous: SqliteSynchronous = 'full',
  ) {
    this.db = new Database(filename, { fileMustExist: true });
    // audit batches commit here: this connection must be as durable as the knex one
    applySqlitePragmas(this.db, { synchronous, busyTimeoutMs: 0 });
  }

  private statement(sql: string): Database.Statement {
    let stmt = this.statements.get(sql);
    if (!stmt) {
      stmt = this.db.prepare(sql);
      this.statements.set(sql, stmt);
    }
    return stmt;
  }

  get<T>(sql: string, ...params: unknown[]): T | undefined {
    return this.statement(sql).get(...params) as T | undefined;
  }

  run(sql: string, ...params: unknown[]): void {
    this.statement(sql).run(...params);
  }

  /** Runs a statement program to its end, synchronously (call it inside tryImmediate). */
  runProgram<T>(program: StatementProgram<T>): T {
    let step = program.next([]);
    while (!step.done) step = program.next(this.exec(step.value.sql, ...step.value.params));
    return step.value;
  }

  /** Runs one statement: the rows it returns, or none. */
  exec(sql: string, ...params: unknown[]): object[] {
    const stmt = this.statement(sql);
    if (stmt.reader) return stmt.all(...params) as object[];
    stmt.run(...params);
    return [];
  }

  pragma(name: string): unknown {
    return this.db.pragma(name, { simple: true });
  }

  /**
   * Runs `fn` in BEGIN IMMEDIATE. Returns undefined (nothing written) when a knex transaction
   * is open or another connection holds the write lock; any other failure propagates.
   */
  tryImmediate<T>(fn: () => T): { value: T } | undefined {
    if (this.writerBusy()) return undefined;
    try {
      return { value: this.db.transaction(fn).immediate() };
    } catch (err) {
      const code = (err as { code?: unknown } | null)?.code;
      if (code === 'SQLITE_BUSY' || code === 'SQLITE_BUSY_SNAPSHOT' || code === 'SQLITE_LOCKED') return undefined;
      throw err;
    }
  }

  close(): void {
    this.db.close();
  }
}
