import type { Database, ProgramFactory, SqlValue, Statement } from '../db/database.js';
import type { AuditEvent, AuditEventInput, AuditOutcome } from './audit-types.js';

/** An audit_events row as the drivers return it (bigint columns may come back as strings). */
export interface AuditEventRow {
  seq: number | string;
  leaf_index: number | string | null;
  ts: number | string;
  actor_kind: string;
  actor_id: string | null;
  actor_name: string | null;
  action: string;
  resource_kind: string | null;
  resource_name: string | null;
  outcome: AuditOutcome;
  reason: string | null;
  request_id: string | null;
  source_ip: string | null;
  user_agent: string | null;
  details: string | null;
  prev_hash: string | null;
  hash: string | null;
}

export function rowToEvent(row: AuditEventRow): AuditEvent {
  const event: AuditEvent = {
    seq: Number(row.seq),
    leafIndex: row.leaf_index === null || row.leaf_index === undefined ? null : Number(row.leaf_index),
    ts: Number(row.ts),
    actorKind: row.actor_kind,
    actorId: row.actor_id ?? null,
    actorName: row.actor_name ?? null,
    action: row.action,
    resourceKind: row.resource_kind ?? null,
    resourceName: row.resource_name ?? null,
    outcome: row.outcome,
    reason: row.reason ?? null,
    requestId: row.request_id ?? null,
    sourceIp: row.source_ip ?? null,
    userAgent: row.user_agent ?? null,
    details: JSON.parse(row.details || '{}'),
  };
  if (row.prev_hash) event.prevHash = row.prev_hash;
  if (row.hash) event.hash = row.hash;
  return event;
}

/** An event as recorded, before the database numbers it. */
type NewEvent = Omit<AuditEvent, 'seq' | 'leafIndex' | 'prevHash' | 'hash'>;

function newEvent(input: AuditEventInput, now: number): NewEvent {
  return {
    ts: now,
    actorKind: input.actor.kind,
    actorId: input.actor.id ?? null,
    actorName: input.actor.name ?? null,
    action: input.action,
    resourceKind: input.resource?.kind ?? null,
    resourceName: input.resource?.name ?? null,
    outcome: input.outcome,
    reason: input.reason ?? null,
    requestId: input.request?.requestId ?? null,
    sourceIp: input.request?.sourceIp ?? null,
    userAgent: input.request?.userAgent ?? null,
    details: input.details ?? {},
  };
}

export interface SecretReadMark {
  clientId: number;
  secretId: number;
  version: number;
  at: number;
}

/** The last mark per (client, secret), in (client, secret) order. */
function latestReads(reads: SecretReadMark[]): SecretReadMark[] {
  const latest = new Map<string, SecretReadMark>();
  for (const r of reads) latest.set(`${r.clientId}:${r.secretId}`, r);
  return [...latest.values()].sort((a, b) => a.clientId - b.clientId || a.secretId - b.secretId);
}

const INSERT_COLUMNS = [
  'ts', 'actor_kind', 'actor_id', 'actor_name', 'action', 'resource_kind', 'resource_name',
  'outcome', 'reason', 'request_id', 'source_ip', 'user_agent', 'details',
] as const;

/** Rows per INSERT: 200 x 13 parameters stays far below every driver's limit. */
const EVENTS_PER_INSERT = 200;

function insertEventsStatement(events: NewEvent[]): Statement {
  const row = `(${INSERT_COLUMNS.map(() => '?').join(', ')})`;
  const params: SqlValue[] = [];
  for (const e of events) {
    params.push(e.ts, e.actorKind, e.actorId, e.actorName, e.action, e.resourceKind, e.resourceName, e.outcome, e.reason, e.requestId, e.sourceIp, e.userAgent, JSON.stringify(e.details));
  }
  return { sql: `INSERT INTO audit_events (${INSERT_COLUMNS.join(', ')}) VALUES ${events.map(() => row).join(', ')} RETURNING seq`, params };
}

/**
 * The same append as one PostgreSQL statement, for a batch small enough for one INSERT: the
 * last-read marks are a data-modifying CTE (run once and to completion whether or not the outer
 * INSERT reads it), so marks and events commit together without an explicit transaction. The
 * marks keep their (client, secret) order, as the program's upserts do.
 */
function appendEventsInOneStatement(inputs: AuditEventInput[], reads: SecretReadMark[], now: number): ProgramFactory<AuditEvent[]> {
  return function* () {
    const chunk = inputs.map((input) => newEvent(input, now));
    const insert = insertEventsStatement(chunk);
    const marks = latestReads(reads);
    const statement = marks.length === 0
      ? insert
      : {
          sql: `WITH marks AS (INSERT INTO secret_reads (client_id, secret_id, last_read_at, last_version) VALUES ${marks.map(() => '(?, ?, ?, ?)').join(', ')} ON CONFLICT (client_id, secret_id) DO UPDATE SET last_read_at = excluded.last_read_at, last_version = excluded.last_version) ${insert.sql}`,
          params: [...marks.flatMap((r) => [r.clientId, r.secretId, r.at, r.version]), ...insert.params],
        };
    const rows = (yield statement) as Array<{ seq: number | string }>;
    const seqs = rows.map((r) => Number(r.seq)).sort((a, b) => a - b);
    if (seqs.length !== chunk.length) throw new Error(`audit insert returned ${seqs.length} numbers for ${chunk.length} events`);
    return chunk.map((e, k) => ({ seq: seqs[k], leafIndex: null, ...e }));
  };
}

/**
 * Appends events, their last-read marks and any rows that commit with them (`statements`, built
 * by the DAL that owns them) in a transaction of their own: on PostgreSQL in one statement when
 * there are no such rows and the batch fits one INSERT (one round trip), otherwise as the program
 * below.
 */
export function appendEvents(
  db: Pick<Database, 'dialect' | 'writeProgram' | 'writeStatement'>,
  inputs: AuditEventInput[],
  reads: SecretReadMark[],
  now: number,
  statements: readonly Statement[] = [],
): Promise<AuditEvent[]> {
  if (db.dialect === 'postgres' && statements.length === 0 && inputs.length > 0 && inputs.length <= EVENTS_PER_INSERT && reads.length <= EVENTS_PER_INSERT) {
    return db.writeStatement(appendEventsInOneStatement(inputs, reads, now));
  }
  return db.writeProgram(appendEventsProgram(inputs, reads, now, statements));
}

/**
 * Appends events to the queue of unsequenced entries, with the last-read marks they describe:
 * one statement program, run by the Database port on a knex transaction or on SQLite's
 * synchronous connection. Nothing is locked but the rows inserted here: the event number comes
 * from the table's autoincrement (a PostgreSQL sequence, which takes no row lock), and the
 * sequencer (audit-sequencer.ts) gives the events their leaf indexes after they commit. So
 * concurrent writers on any instance share no row, and an event commits or rolls back with the
 * change it records.
 *
 * The secret_reads upserts go in (client, secret) order so that two batches (two instances)
 * cannot lock secret_reads rows in opposite orders (src/db/lock-order.md).
 */
export function appendEventsProgram(inputs: AuditEventInput[], reads: SecretReadMark[], now: number, statements: readonly Statement[] = []): ProgramFactory<AuditEvent[]> {
  return function* () {
    // rows that commit with their events (built by the DAL that owns them)
    for (const st of statements) yield st;
    for (const r of latestReads(reads)) {
      yield {
        sql: 'INSERT INTO secret_reads (client_id, secret_id, last_read_at, last_version) VALUES (?, ?, ?, ?) ON CONFLICT (client_id, secret_id) DO UPDATE SET last_read_at = excluded.last_read_at, last_version = excluded.last_version',
        params: [r.clientId, r.secretId, r.at, r.version],
      };
    }
    const events: AuditEvent[] = [];
    for (let i = 0; i < inputs.length; i += EVENTS_PER_INSERT) {
      const chunk = inputs.slice(i, i + EVENTS_PER_INSERT).map((input) => newEvent(input, now));
      const rows = (yield insertEventsStatement(chunk)) as Array<{ seq: number | string }>;
      // the numbers of one multi-row INSERT are drawn in row order; RETURNING's order is not promised
      const seqs = rows.map((r) => Number(r.seq)).sort((a, b) => a - b);
      if (seqs.length !== chunk.length) throw new Error(`audit insert returned ${seqs.length} numbers for ${chunk.length} events`);
      chunk.forEach((e, k) => events.push({ seq: seqs[k], leafIndex: null, ...e }));
    }
    return events;
  };
}
