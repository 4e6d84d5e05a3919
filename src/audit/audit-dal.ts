import type { Knex } from 'knex';
import type { SqliteFastPath } from '../db/sqlite-fast-path.js';
import { chainHash } from './audit-chain.js';
import type { AuditEvent, AuditEventInput } from './audit-types.js';

export function rowToEvent(row: any): AuditEvent {
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

export function eventToRow(e: AuditEvent) {
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

/**
 * Lock order (src/db/lock-order.md): the audit head is the LAST lock a transaction takes. Every
 * writer on every instance queues on this one row, so a transaction that holds it and then
 * waited for any other lock could close a cycle with a writer that holds that other lock and
 * waits here. Hence: take every other lock first, call this at the end, and after it only
 * insert audit_events rows (no foreign keys, nobody else locks them) and update the head.
 */
async function lockAuditHead(trx: Knex.Transaction): Promise<{ seq: number; hash: string }> {
  const headQuery = trx('audit_head').where({ id: 1 }).select('seq', 'hash');
  // FOR UPDATE on PostgreSQL; SQLite has one writer. (The dialect, not config.client: that is a
  // class, not 'pg', when connection.ts passes its own pg client.)
  const head = trx.client.dialect === 'postgresql' ? await headQuery.forUpdate().first() : await headQuery.first();
  if (!head) throw new Error('audit head row is missing');
  return { seq: Number(head.seq), hash: head.hash as string };
}

/**
 * Appends inside `trx`, as its last locking statement (see lockAuditHead). The head lock gives
 * concurrent writers on any instance consecutive sequence numbers, and each event's prev_hash
 * is its predecessor's hash.
 */
export async function appendEvent(trx: Knex.Transaction, input: AuditEventInput, now: number): Promise<AuditEvent> {
  const [event] = await appendEvents(trx, [input], [], now);
  return event;
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

/**
 * Appends several events under one head lock, with the last-read marks they describe.
 *
 * The secret_reads upserts come BEFORE the head lock (src/db/lock-order.md). Each upsert locks
 * its secret_reads row and, through the foreign keys, takes FOR KEY SHARE on the clients and
 * secrets rows it names; a version write holds its secret row meanwhile. Upserting while
 * holding the head closed the cycle "read batch holds head, waits for secret row; version write
 * holds secret row, waits for head". The upserts go in (client, secret) order so that two
 * batches (two instances) cannot lock secret_reads rows in opposite orders.
 */
export async function appendEvents(trx: Knex.Transaction, inputs: AuditEventInput[], reads: SecretReadMark[], now: number): Promise<AuditEvent[]> {
  for (const r of latestReads(reads)) {
    await trx('secret_reads')
      .insert({ client_id: r.clientId, secret_id: r.secretId, last_read_at: r.at, last_version: r.version })
      .onConflict(['client_id', 'secret_id'])
      .merge({ last_read_at: r.at, last_version: r.version });
  }
  if (inputs.length === 0) return [];
  const head = await lockAuditHead(trx);
  const events: AuditEvent[] = [];
  let prev = head;
  for (const input of inputs) {
    const event = chainEvent(prev, input, now);
    events.push(event);
    prev = { seq: event.seq, hash: event.hash };
  }
  for (let i = 0; i < events.length; i += 200) await trx('audit_events').insert(events.slice(i, i + 200).map(eventToRow));
  await trx('audit_head').where({ id: 1 }).update({ seq: prev.seq, hash: prev.hash });
  return events;
}

const INSERT_EVENT_SQL =
  'INSERT INTO audit_events (seq, ts, actor_kind, actor_id, actor_name, action, resource_kind, resource_name, outcome, reason, request_id, source_ip, user_agent, details, prev_hash, hash) VALUES (@seq, @ts, @actor_kind, @actor_id, @actor_name, @action, @resource_kind, @resource_name, @outcome, @reason, @request_id, @source_ip, @user_agent, @details, @prev_hash, @hash)';
const UPSERT_READ_SQL =
  'INSERT INTO secret_reads (client_id, secret_id, last_read_at, last_version) VALUES (?, ?, ?, ?) ON CONFLICT (client_id, secret_id) DO UPDATE SET last_read_at = excluded.last_read_at, last_version = excluded.last_version';

/** The same append on the synchronous SQLite connection; must run inside its transaction. */
export function appendEventsSync(fast: SqliteFastPath, inputs: AuditEventInput[], reads: SecretReadMark[], now: number): AuditEvent[] {
  // SQLite has one writer, so order cannot deadlock here; it follows lock-order.md all the same
  for (const r of latestReads(reads)) fast.run(UPSERT_READ_SQL, r.clientId, r.secretId, r.at, r.version);
  const head = fast.get<{ seq: number; hash: string }>('SELECT seq, hash FROM audit_head WHERE id = 1');
  if (!head) throw new Error('audit head row is missing');
  const events: AuditEvent[] = [];
  let prev = { seq: Number(head.seq), hash: head.hash };
  for (const input of inputs) {
    const event = chainEvent(prev, input, now);
    fast.run(INSERT_EVENT_SQL, eventToRow(event));
    events.push(event);
    prev = { seq: event.seq, hash: event.hash };
  }
  fast.run('UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1', prev.seq, prev.hash);
  return events;
}
