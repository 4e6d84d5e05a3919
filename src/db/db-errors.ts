import { UnavailableError } from '../core/errors.js';

/**
 * Which database failures mean "the database cannot serve this right now" (the request may
 * succeed later, unchanged) as opposed to a bug or bad data. The former become
 * DatabaseUnavailableError, a domain error the HTTP layer answers with 503 and Retry-After;
 * everything else stays a 500.
 *
 * Classification looks only at codes and at the few fixed messages node-postgres uses for
 * failures that have no code; the driver's message text is never passed on.
 */

/**
 * - unavailable: no connection (refused, reset, server shutting down or starting, I/O error)
 * - timeout: a connection or a statement did not answer within the configured time
 * - storage_full: the database's disk is full (writes fail, reads may still work)
 * - read_only: the database accepts no writes (a read-only replica or file)
 * - busy: lock contention that outlasted waiting or retrying (deadlock, serialization, SQLITE_BUSY)
 */
export type DatabaseFailureKind = 'unavailable' | 'timeout' | 'storage_full' | 'read_only' | 'busy';

/**
 * What callers are told about each failure, with a Retry-After (seconds) long enough for a
 * restart or failover to finish, short for lock contention. The detail is ours; the driver's
 * message (SQL, addresses) is never echoed.
 */
const DATABASE_FAILURES: Record<DatabaseFailureKind, { code: string; title: string; detail: string; retryAfterSeconds: number }> = {
  unavailable: { code: 'database_unavailable', title: 'Database unavailable', detail: 'the database cannot be reached', retryAfterSeconds: 5 },
  timeout: { code: 'database_timeout', title: 'Database timeout', detail: 'the database did not answer in time', retryAfterSeconds: 5 },
  storage_full: { code: 'storage_full', title: 'Storage full', detail: 'the database has no space left for writes', retryAfterSeconds: 60 },
  read_only: { code: 'database_read_only', title: 'Database read-only', detail: 'the database accepts no writes at the moment', retryAfterSeconds: 30 },
  busy: { code: 'database_busy', title: 'Database busy', detail: 'the database was too busy to complete the request', retryAfterSeconds: 1 },
};

/** A domain-level "the database cannot serve this now"; `cause` keeps the driver error for logs. */
export class DatabaseUnavailableError extends UnavailableError {
  constructor(
    readonly failure: DatabaseFailureKind,
    /** The driver's code (SQLSTATE, SQLITE_*, errno, error name), safe to log. */
    readonly driverCode: string | undefined,
    options?: { cause?: unknown },
  ) {
    const { code, title, detail, retryAfterSeconds } = DATABASE_FAILURES[failure];
    super(detail, { code, title, retryAfterSeconds, cause: options?.cause, message: `database ${failure.replace('_', ' ')}` });
    this.name = 'DatabaseUnavailableError';
  }
}

const SQLSTATE_KINDS: Record<string, DatabaseFailureKind> = {
  '57014': 'timeout', // query_canceled: statement_timeout fired
  '57P01': 'unavailable', // admin_shutdown
  '57P02': 'unavailable', // crash_shutdown
  '57P03': 'unavailable', // cannot_connect_now (starting up, shutting down, recovering)
  '57P04': 'unavailable', // database_dropped
  '57P05': 'unavailable', // idle_session_timeout
  '25P03': 'unavailable', // idle_in_transaction_session_timeout
  '53100': 'storage_full', // disk_full
  '53200': 'unavailable', // out_of_memory
  '53300': 'busy', // too_many_connections
  '53400': 'unavailable', // configuration_limit_exceeded
  '25006': 'read_only', // read_only_sql_transaction
  '40P01': 'busy', // deadlock_detected (after the retries ran out)
  '40001': 'busy', // serialization_failure (after the retries ran out)
  '55P03': 'busy', // lock_not_available
  '58030': 'unavailable', // io_error
};

/** errno codes of a connection that could not be made or was lost. */
const CONNECTION_ERRNOS = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'ECONNABORTED']);

/** node-postgres failures that carry no code, by their fixed messages (knex may prefix the SQL). */
const PG_MESSAGE_KINDS: Array<[RegExp, DatabaseFailureKind]> = [
  [/Query read timeout$/, 'timeout'],
  [/Connection terminated due to connection timeout$/, 'timeout'],
  [/timeout expired$/, 'timeout'],
  [/Connection terminated( unexpectedly)?$/, 'unavailable'],
  [/Client has encountered a connection error and is not queryable$/, 'unavailable'],
  [/Client was closed and is not queryable$/, 'unavailable'],
];

function sqliteKind(code: string): DatabaseFailureKind | undefined {
  if (code === 'SQLITE_FULL') return 'storage_full';
  if (code.startsWith('SQLITE_READONLY')) return 'read_only';
  if (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED') || code === 'SQLITE_PROTOCOL') return 'busy';
  if (code.startsWith('SQLITE_IOERR') || code.startsWith('SQLITE_CANTOPEN') || code === 'SQLITE_NOMEM') return 'unavailable';
  return undefined;
}

/** The fields of a driver error (or a wrapper of one) that are looked at; any may be missing. */
interface DriverErrorLike {
  name?: unknown;
  code?: unknown;
  syscall?: unknown;
  message?: unknown;
  cause?: unknown;
  errors?: unknown;
}

function classifyOne(e: DriverErrorLike): DatabaseUnavailableError | undefined {
  if (e instanceof DatabaseUnavailableError) return e;
  if (e?.name === 'KnexTimeoutError') return new DatabaseUnavailableError('timeout', 'KnexTimeoutError', { cause: e });
  const code = typeof e?.code === 'string' ? e.code : undefined;
  if (code) {
    if (/^[0-9A-Z]{5}$/.test(code) && SQLSTATE_KINDS[code]) return new DatabaseUnavailableError(SQLSTATE_KINDS[code], code, { cause: e });
    // class 08: connection exception
    if (/^08[0-9A-Z]{3}$/.test(code)) return new DatabaseUnavailableError('unavailable', code, { cause: e });
    if (code.startsWith('SQLITE_')) {
      const kind = sqliteKind(code);
      return kind ? new DatabaseUnavailableError(kind, code, { cause: e }) : undefined;
    }
    if (CONNECTION_ERRNOS.has(code) || (code === 'ENOENT' && e.syscall === 'connect')) {
      return new DatabaseUnavailableError('unavailable', code, { cause: e });
    }
  }
  const message = typeof e?.message === 'string' ? e.message : '';
  for (const [pattern, kind] of PG_MESSAGE_KINDS) {
    if (pattern.test(message)) return new DatabaseUnavailableError(kind, undefined, { cause: e });
  }
  return undefined;
}

/**
 * The database failure `err` stands for, or undefined when it is not one. Looks through
 * `cause` chains and AggregateErrors (a connect to a host name with several addresses).
 */
export function classifyDatabaseError(err: unknown): DatabaseUnavailableError | undefined {
  const queue: unknown[] = [err];
  for (let seen = 0; queue.length && seen < 8; seen++) {
    const e = queue.shift() as DriverErrorLike | null | undefined;
    if (!e || typeof e !== 'object') continue;
    const found = classifyOne(e);
    if (found) return found;
    if (e.cause) queue.push(e.cause);
    if (Array.isArray(e.errors)) queue.push(...e.errors.slice(0, 4));
  }
  return undefined;
}

/** Client-side timeouts after which node-postgres leaves the connection in an unknown state. */
export function isClientSideTimeout(err: unknown): boolean {
  const message = (err as { message?: unknown })?.message;
  return typeof message === 'string' && /Query read timeout$/.test(message);
}
