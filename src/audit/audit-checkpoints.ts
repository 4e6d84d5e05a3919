import { CompactSign, compactVerify, importJWK, decodeProtectedHeader, type JWK } from 'jose';
import type { AuditCheckpointRow, AuditQueryDal } from './audit-query-dal.js';
import { canonicalJson } from './canonical-json.js';
import type { JwtKeyService } from '../identity/jwt-key-service.js';
import { JWT_ALG } from '../identity/jwt-key-service.js';
import type { Clock } from '../core/clock.js';

export const CHECKPOINT_TYPE = 'kw-audit-checkpoint+jws';

export interface CheckpointPayload {
  seq: number;
  headHash: string;
  time: string;
  issuer: string;
}

export interface Checkpoint extends CheckpointPayload {
  id: number;
  kid: string;
  reason: string;
  jws: string;
}

function rowToCheckpoint(row: AuditCheckpointRow): Checkpoint {
  const payload = JSON.parse(Buffer.from(String(row.jws).split('.')[1], 'base64url').toString('utf8')) as CheckpointPayload;
  return { ...payload, id: row.id, kid: row.kid, reason: row.reason, jws: row.jws };
}

/**
 * Signed statements "the log had N events ending in hash H at time T", made with the broker's
 * JWT key so anyone holding the published JWKS can check an exported log offline.
 */
export class AuditCheckpoints {
  constructor(private readonly deps: { dal: AuditQueryDal; jwtKeys: JwtKeyService; clock: Clock; issuer: string; chainGuard?: () => void }) {}

  /** Signs the current head, or the event `atSeq` (used before pruning). */
  async create(reason: 'scheduled' | 'on-demand' | 'prune', atSeq?: number): Promise<Checkpoint | undefined> {
    // signing the head of a chain found broken would vouch for the tampered state after a restart
    this.deps.chainGuard?.();
    let target: { seq: number; hash: string } | undefined;
    if (atSeq === undefined) {
      const head = await this.deps.dal.head();
      if (head.seq === 0) return undefined;
      target = head;
    } else {
      const event = await this.deps.dal.eventAt(atSeq);
      if (!event) return undefined;
      target = { seq: event.seq, hash: event.hash };
    }
    const payload: CheckpointPayload = {
      seq: target.seq,
      headHash: target.hash,
      time: new Date(this.deps.clock()).toISOString(),
      issuer: this.deps.issuer,
    };
    const { kid, privateKey } = await this.deps.jwtKeys.signingKey();
    const jws = await new CompactSign(Buffer.from(canonicalJson(payload)))
      .setProtectedHeader({ alg: JWT_ALG, kid, typ: CHECKPOINT_TYPE })
      .sign(privateKey);
    const id = await this.deps.dal.insertCheckpoint({ seq: payload.seq, head_hash: payload.headHash, created_at: this.deps.clock(), jws, kid, reason });
    return { ...payload, id, kid, reason, jws };
  }

  async list(limit = 100, beforeId?: number): Promise<Checkpoint[]> {
    return (await this.deps.dal.listCheckpoints(limit, beforeId)).map(rowToCheckpoint);
  }

  /** The checkpoint anchoring a chain that starts after `seq` (pruned history). */
  async covering(seq: number): Promise<Checkpoint | undefined> {
    const row = await this.deps.dal.checkpointAt(seq);
    return row ? rowToCheckpoint(row) : undefined;
  }
}

/** Verifies a checkpoint JWS against a JWKS; returns its payload or a reason. */
export async function verifyCheckpointJws(jws: string, jwks: { keys: JWK[] }): Promise<{ ok: true; payload: CheckpointPayload } | { ok: false; reason: string }> {
  let kid: string | undefined;
  try {
    const header = decodeProtectedHeader(jws);
    if (header.typ !== CHECKPOINT_TYPE || header.alg !== JWT_ALG) return { ok: false, reason: 'not a keywarden audit checkpoint' };
    kid = header.kid;
  } catch {
    return { ok: false, reason: 'malformed checkpoint' };
  }
  const jwk = jwks.keys.find((k) => k.kid === kid);
  if (!jwk) return { ok: false, reason: `checkpoint key ${kid} is not in the JWKS` };
  try {
    const key = await importJWK(jwk, JWT_ALG);
    const { payload } = await compactVerify(jws, key, { algorithms: [JWT_ALG] });
    return { ok: true, payload: JSON.parse(Buffer.from(payload).toString('utf8')) };
  } catch {
    return { ok: false, reason: 'checkpoint signature does not verify' };
  }
}
