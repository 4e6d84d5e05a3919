/**
 * The bytes an audit event's Merkle leaf commits to. Free of Node.js imports: the auditors'
 * console bundles this file to recompute leaf hashes in the browser with WebCrypto.
 */
import { canonicalJson } from './canonical-json.js';
import type { AuditEvent } from './audit-types.js';

/** The fields every event records, whatever binds them: the Merkle leaf, or the hash chain before it. */
export type RecordedFields = Omit<AuditEvent, 'leafIndex' | 'prevHash' | 'hash'>;

/**
 * An event's recorded fields and nothing else, so that a property added to the in-memory event
 * never changes what a leaf or a chain link hashes. Both formats are frozen: this list is theirs.
 */
export function recordedFields(event: RecordedFields): RecordedFields {
  return {
    seq: event.seq,
    ts: event.ts,
    actorKind: event.actorKind,
    actorId: event.actorId,
    actorName: event.actorName,
    action: event.action,
    resourceKind: event.resourceKind,
    resourceName: event.resourceName,
    outcome: event.outcome,
    reason: event.reason,
    requestId: event.requestId,
    sourceIp: event.sourceIp,
    userAgent: event.userAgent,
    details: event.details,
  };
}

/**
 * What a leaf commits to: every field of the event except its position, which the tree itself
 * binds. Events chained before migration 008 keep their chain link and hash inside the leaf, so
 * the old chain stays bound to the tree.
 */
export function leafFields(event: AuditEvent): Record<string, unknown> {
  const fields: Record<string, unknown> = recordedFields(event);
  if (event.prevHash !== undefined) fields.prevHash = event.prevHash;
  if (event.hash !== undefined) fields.hash = event.hash;
  return fields;
}

/** The leaf data: canonical JSON, as the log stores and exports it. */
export function leafData(event: AuditEvent): string {
  return canonicalJson(leafFields(event));
}
