export type AuditOutcome = 'allow' | 'deny' | 'error';

export interface AuditActor {
  kind: string;
  id?: string | null;
  name?: string | null;
}

export interface AuditEventInput {
  actor: AuditActor;
  action: string;
  resource?: { kind: string; name: string } | null;
  outcome: AuditOutcome;
  reason?: string | null;
  details?: Record<string, unknown>;
  request?: { requestId?: string | null; sourceIp?: string | null; userAgent?: string | null } | null;
}

/**
 * A recorded event. `seq` is its number, given when it is recorded (increasing; a rolled-back
 * transaction leaves a gap). `leafIndex` is its position in the Merkle tree, given by the
 * sequencer shortly after, null until then. The leaf hash is RFC 6962's
 * SHA-256(0x00 || canonicalJson(leafFields(event))) (audit-leaf-data.ts): everything but leafIndex.
 */
export interface AuditEvent {
  seq: number;
  leafIndex: number | null;
  ts: number;
  actorKind: string;
  actorId: string | null;
  actorName: string | null;
  action: string;
  resourceKind: string | null;
  resourceName: string | null;
  outcome: AuditOutcome;
  reason: string | null;
  requestId: string | null;
  sourceIp: string | null;
  userAgent: string | null;
  details: Record<string, unknown>;
  /** Only on events hash-chained before the log became a Merkle tree (migration 008). */
  prevHash?: string;
  /** Only on events hash-chained before the log became a Merkle tree (migration 008). */
  hash?: string;
}

export const GENESIS_HASH = '0'.repeat(64);
