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

/** The stored event; `hash = SHA-256(prev_hash ‖ canonicalJson(hashedFields(event)))`. */
export interface AuditEvent {
  seq: number;
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
  prevHash: string;
  hash: string;
}

export const GENESIS_HASH = '0'.repeat(64);
