import type { Knex } from 'knex';
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
 * Appends inside `trx`. The head row is locked first (FOR UPDATE on PostgreSQL; SQLite has one
 * writer), so concurrent writers on any instance get consecutive sequence numbers and each
 * event's prev_hash is its predecessor's hash.
 */
export async function appendEvent(trx: Knex.Transaction, input: AuditEventInput, now: number): Promise<AuditEvent> {
  const headQuery = trx('audit_head').where({ id: 1 }).select('seq', 'hash');
  const head = trx.client.config.client === 'pg' ? await headQuery.forUpdate().first() : await headQuery.first();
  if (!head) throw new Error('audit head row is missing');
  const partial: Omit<AuditEvent, 'hash'> = {
    seq: Number(head.seq) + 1,
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
  const event: AuditEvent = { ...partial, hash: chainHash(partial.prevHash, partial) };
  await trx('audit_events').insert(eventToRow(event));
  await trx('audit_head').where({ id: 1 }).update({ seq: event.seq, hash: event.hash });
  return event;
}
