import fs from 'node:fs';
import path from 'node:path';
import { UnavailableError } from '../core/errors.js';
import { StartupError } from '../startup-errors.js';

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

/**
 * The database could not be opened at start (serve, migrate, init and every command that opens
 * it): one line naming where (host, port and database, or the SQLite file; never the user's
 * password) and why, with exit code 78 instead of the driver's stack trace.
 */
export class DatabaseConnectError extends StartupError {
  constructor(
    message: string,
    /** The driver's code (errno, SQLSTATE, SQLITE_*), safe to log. */
    readonly driverCode: string | undefined,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'DatabaseConnectError';
  }
}

/** The first code (and its syscall/path/hostname) found on `err`, its causes and aggregated errors. */
function firstCoded(err: unknown): { code?: string; name?: string; message: string; hostname?: string } {
  const queue: unknown[] = [err];
  let fallback: { name?: string; message: string } | undefined;
  for (let seen = 0; queue.length && seen < 8; seen++) {
    const e = queue.shift() as (DriverErrorLike & { hostname?: unknown }) | null | undefined;
    if (!e || typeof e !== 'object') continue;
    const message = typeof e.message === 'string' ? e.message : '';
    const name = typeof e.name === 'string' ? e.name : undefined;
    fallback ??= { name, message };
    if (typeof e.code === 'string' && e.code) return { code: e.code, name, message, hostname: typeof e.hostname === 'string' ? e.hostname : undefined };
    if (name === 'KnexTimeoutError') return { name, message };
    if (e.cause) queue.push(e.cause);
    if (Array.isArray(e.errors)) queue.push(...e.errors.slice(0, 4));
  }
  return fallback ?? { message: '' };
}

const TLS_CODE = /^(ERR_SSL_|ERR_TLS_|DEPTH_ZERO_SELF_SIGNED_CERT$|SELF_SIGNED_CERT_IN_CHAIN$|UNABLE_TO_|CERT_)/;

/** Why a PostgreSQL connection failed, in words; the driver's message is never echoed. */
function postgresReason(err: unknown, where: { host: string; user: string; database: string }, acquireMs: number): { reason: string; code?: string } {
  const { code, name, message } = firstCoded(err);
  const timeout = `no answer within KEYWARDEN_DB_ACQUIRE_TIMEOUT_MS=${acquireMs} ms`;
  switch (code) {
    case 'ECONNREFUSED':
      return { reason: 'connection refused', code };
    case 'ENOTFOUND':
      return { reason: `host name ${where.host} not found in DNS`, code };
    case 'EAI_AGAIN':
      return { reason: `host name ${where.host} could not be resolved: temporary DNS failure`, code };
    case 'ETIMEDOUT':
      return { reason: timeout, code };
    case 'EHOSTUNREACH':
      return { reason: 'host unreachable', code };
    case 'ENETUNREACH':
      return { reason: 'network unreachable', code };
    case 'ECONNRESET':
      return { reason: 'the server closed the connection', code };
    case 'ENOENT':
      return { reason: 'no server socket at that path', code };
    case '28P01':
      return { reason: `authentication failed for user "${where.user}"`, code };
    case '28000':
      return { reason: `the server refused user "${where.user}": unknown role, or no pg_hba.conf entry`, code };
    case '3D000':
      return { reason: `database "${where.database}" does not exist`, code };
    case '42501':
      return { reason: `user "${where.user}" may not create the broker's schema`, code };
    case '53300':
      return { reason: 'too many connections', code };
    case '57P03':
      return { reason: 'the server is starting up or shutting down', code };
  }
  if (code && TLS_CODE.test(code)) return { reason: `TLS failed: ${code}`, code };
  if (name === 'KnexTimeoutError' || /timeout expired$|connection timeout$/.test(message)) return { reason: timeout, code: code ?? name };
  if (/does not support SSL/.test(message)) return { reason: 'the server does not support TLS, see sslmode in the URL', code };
  if (/Connection terminated/.test(message)) return { reason: 'the server closed the connection', code };
  return { reason: code ? `failed: ${code}` : 'failed', code };
}

/** Why a SQLite file could not be opened or created, in words. */
function sqliteReason(err: unknown, file: string): { reason: string; code?: string } {
  const { code } = firstCoded(err);
  const dir = path.dirname(file);
  switch (code) {
    case 'ENOENT':
      return { reason: `directory ${fs.existsSync(dir) ? dir : nearestMissing(dir)} does not exist`, code };
    case 'EACCES':
    case 'EPERM':
      return { reason: `permission denied: the broker's user cannot write in ${dir}`, code };
    case 'ENOTDIR':
      return { reason: 'a part of the path is a file, not a directory', code };
    case 'EROFS':
      return { reason: 'read-only file system', code };
    case 'EISDIR':
      return { reason: 'the path is a directory', code };
    case 'ENOSPC':
      return { reason: 'no space left on the device', code };
    case 'SQLITE_NOTADB':
      return { reason: 'the file is not a SQLite database', code };
    case 'SQLITE_CORRUPT':
      return { reason: 'the database file is corrupt', code };
  }
  if (code?.startsWith('SQLITE_READONLY')) return { reason: 'the file is read-only', code };
  if (code?.startsWith('SQLITE_BUSY') || code?.startsWith('SQLITE_LOCKED')) return { reason: 'the file is locked by another process', code };
  if (code?.startsWith('SQLITE_CANTOPEN')) return { reason: 'the file cannot be opened', code };
  return { reason: code ? `failed: ${code}` : 'failed', code };
}

/** The outermost directory of `dir` that does not exist (the one the operator has to create). */
function nearestMissing(dir: string): string {
  let missing = dir;
  for (let parent = path.dirname(missing); parent !== missing && !fs.existsSync(parent); parent = path.dirname(parent)) missing = parent;
  return missing;
}

/**
 * The one-line start-up error for a database that could not be opened: where (from the URL,
 * without user or password) and why (from the driver's code, never its message).
 */
export function databaseConnectError(err: unknown, url: string, options: { acquireMs: number; sqliteFile?: string }): DatabaseConnectError {
  if (err instanceof DatabaseConnectError) return err;
  if (options.sqliteFile !== undefined) {
    const { reason, code } = sqliteReason(err, options.sqliteFile);
    return new DatabaseConnectError(`cannot open the SQLite database ${options.sqliteFile} (${reason}); check KEYWARDEN_DATABASE_URL or KEYWARDEN_DATA_DIR`, code, { cause: err });
  }
  let host = 'localhost';
  let port = '5432';
  let database = '';
  let user = '';
  try {
    const u = new URL(url);
    host = u.hostname.replace(/^\[|\]$/g, '') || u.searchParams.get('host') || 'localhost';
    port = u.port || u.searchParams.get('port') || '5432';
    database = decodeURIComponent(u.pathname.replace(/^\//, ''));
    user = decodeURIComponent(u.username);
  } catch {
    // an unparsable URL: config.ts accepted its scheme; the rest stays unnamed
  }
  const shownHost = host.includes(':') ? `[${host}]` : host;
  const where = `${host.startsWith('/') ? host : `${shownHost}:${port}`}${database ? `/${database}` : ''}`;
  const { reason, code } = postgresReason(err, { host, user: user || '(default)', database: database || '(default)' }, options.acquireMs);
  return new DatabaseConnectError(`cannot connect to the database at ${where} (${reason}); check KEYWARDEN_DATABASE_URL`, code, { cause: err });
}
