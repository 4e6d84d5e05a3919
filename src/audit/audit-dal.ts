import type { Dialect } from '../db/connection.js';
import type { ProgramFactory, SqlValue, Statement } from '../db/database.js';
import { chainHash } from './audit-chain.js';
import type { AuditEvent, AuditEventInput, AuditOutcome } from './audit-types.js';

/** An audit_events row as the drivers return it (bigint columns may come back as strings). */
export interface AuditEventRow {
  seq: number | string;
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
  prev_hash: string;
  hash: string;
}

export interface AuditHeadRow {
  seq: number | string;
  hash: string;
}

export function rowToEvent(row: AuditEventRow): AuditEvent {
  return {
    seq: Number(row.seq),
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
    prevHash: row.prev_hash,
    hash: row.hash,
  };
}

export function eventToRow(e: AuditEvent): AuditEventRow & { seq: number; ts: number; details: string } {
  return {
    seq: e.seq,
    ts: e.ts,
    actor_kind: e.actorKind,
    actor_id: e.actorId,
    actor_name: e.actorName,
    action: e.action,
    resource_kind: e.resourceKind,
    resource_name: e.resourceName,
    outcome: e.outcome,
    reason: e.reason,
    request_id: e.requestId,
    source_ip: e.sourceIp,
    user_agent: e.userAgent,
    details: JSON.stringify(e.details),
    prev_hash: e.prevHash,
    hash: e.hash,
  };
}

/** The event that follows `head`: next sequence number, linked and hashed. */
export function chainEvent(head: { seq: number; hash: string }, input: AuditEventInput, now: number): AuditEvent {
  const partial: Omit<AuditEvent, 'hash'> = {
    seq: head.seq + 1,
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
    prevHash: head.hash,
  };
  return { ...partial, hash: chainHash(partial.prevHash, partial) };
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

const AUDIT_EVENT_COLUMNS = [
  'seq', 'ts', 'actor_kind', 'actor_id', 'actor_name', 'action', 'resource_kind', 'resource_name',
  'outcome', 'reason', 'request_id', 'source_ip', 'user_agent', 'details', 'prev_hash', 'hash',
] as const satisfies ReadonlyArray<keyof AuditEventRow>;

/** Rows per INSERT: 200 x 16 parameters stays far below every driver's limit. */
const EVENTS_PER_INSERT = 200;

function insertEventsStatement(events: AuditEvent[]): Statement {
  const row = `(${AUDIT_EVENT_COLUMNS.map(() => '?').join(', ')})`;
  const params: SqlValue[] = [];
  for (const e of events) {
    const r = eventToRow(e);
    for (const c of AUDIT_EVENT_COLUMNS) params.push(r[c]);
  }
  return { sql: `INSERT INTO audit_events (${AUDIT_EVENT_COLUMNS.join(', ')}) VALUES ${events.map(() => row).join(', ')}`, params };
}

/**
 * Lock order (src/db/lock-order.md): the audit head is the LAST lock a transaction takes. Every
 * writer on every instance queues on this one row, so a transaction that holds it and then
 * waited for any other lock could close a cycle with a writer that holds that other lock and
 * waits here. Hence: take every other lock first, lock the head at the end, and after it only
 * insert audit_events rows (no foreign keys, nobody else locks them) and update the head.
 * FOR UPDATE on PostgreSQL; SQLite has one writer.
 */
function lockAuditHeadStatement(dialect: Dialect): Statement {
  return { sql: `SELECT seq, hash FROM audit_head WHERE id = 1${dialect === 'postgres' ? ' FOR UPDATE' : ''}`, params: [] };
}

/**
 * Appends several events under one head lock, with the last-read marks they describe: one
 * statement program, run by the Database port on a knex transaction or on SQLite's synchronous
 * connection. The head lock gives concurrent writers on any instance consecutive sequence
 * numbers, and each event's prev_hash is its predecessor's hash.
 *
 * The secret_reads upserts come BEFORE the head lock (src/db/lock-order.md). Each upsert locks
 * its secret_reads row and, through the foreign keys, takes FOR KEY SHARE on the clients and
 * secrets rows it names; a version write holds its secret row meanwhile. Upserting while
 * holding the head closed the cycle "read batch holds head, waits for secret row; version write
 * holds secret row, waits for head". The upserts go in (client, secret) order so that two
 * batches (two instances) cannot lock secret_reads rows in opposite orders.
 */
export function appendEventsProgram(inputs: AuditEventInput[], reads: SecretReadMark[], now: number): ProgramFactory<AuditEvent[]> {
  return function* (dialect) {
    for (const r of latestReads(reads)) {
      yield {
        sql: 'INSERT INTO secret_reads (client_id, secret_id, last_read_at, last_version) VALUES (?, ?, ?, ?) ON CONFLICT (client_id, secret_id) DO UPDATE SET last_read_at = excluded.last_read_at, last_version = excluded.last_version',
        params: [r.clientId, r.secretId, r.at, r.version],
      };
    }
    if (inputs.length === 0) return [];
    const [head] = (yield lockAuditHeadStatement(dialect)) as AuditHeadRow[];
    if (!head) throw new Error('audit head row is missing');
    const events: AuditEvent[] = [];
    let prev = { seq: Number(head.seq), hash: head.hash };
    for (const input of inputs) {
      const event = chainEvent(prev, input, now);
      events.push(event);
      prev = { seq: event.seq, hash: event.hash };
    }
    for (let i = 0; i < events.length; i += EVENTS_PER_INSERT) yield insertEventsStatement(events.slice(i, i + EVENTS_PER_INSERT));
    yield { sql: 'UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1', params: [prev.seq, prev.hash] };
    return events;
  };
}
