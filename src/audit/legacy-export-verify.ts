import fs from 'node:fs';
import readline from 'node:readline';
import type { JWK } from 'jose';
import { ChainVerifier, type ChainedEvent } from './audit-chain.js';
import { compactVerify, decodeProtectedHeader, importJWK } from 'jose';
import { JWT_ALG } from '../identity/jwt-key-service.js';
import { GENESIS_HASH } from './audit-types.js';

export interface OfflineVerifyResult {
  ok: boolean;
  checked: number;
  checkpointsVerified: number;
  /** Checkpoints signed by keys no longer in the JWKS given; they cannot anchor anything. */
  checkpointsSkipped?: number;
  firstBrokenSeq?: number;
  reason?: string;
}

/** The JWS type of the hash chain's checkpoints, before migration 008. */
export const LEGACY_CHECKPOINT_TYPE = 'kw-audit-checkpoint+jws';

interface LegacyCheckpointPayload {
  seq: number;
  headHash: string;
}

/**
 * Exports made before the audit log became a Merkle tree (format 1): a hash chain of events,
 * with JWS checkpoints signed by the broker's JWT key. Kept so that those files still verify,
 * with nothing but the JWKS of that time: the chain, and every checkpoint's signature and hash.
 * An export that starts after seq 1 must include the checkpoint anchoring it.
 */
export async function verifyLegacyExportFile(file: string, jwks: { keys: JWK[] }): Promise<OfflineVerifyResult> {
  const events: ChainedEvent[] = [];
  const checkpoints: Array<{ seq: number; headHash: string; jws: string }> = [];
  const lines = readline.createInterface({ input: fs.createReadStream(file), crlfDelay: Infinity });
  for await (const line of lines) {
    if (!line.trim()) continue;
    const obj = JSON.parse(line);
    if (obj.type === 'checkpoint') checkpoints.push(obj);
    else events.push(obj);
  }
  let checkpointsVerified = 0;
  let checkpointsSkipped = 0;
  const signed = new Map<number, string>();
  for (const cp of checkpoints) {
    const result = await verifyCheckpointJws(cp.jws, jwks);
    if (!result.ok && /is not in the JWKS/.test(result.reason)) {
      checkpointsSkipped++;
      continue;
    }
    if (!result.ok) return { ok: false, checked: 0, checkpointsVerified, reason: `checkpoint at seq ${cp.seq}: ${result.reason}` };
    signed.set(result.payload.seq, result.payload.headHash);
    checkpointsVerified++;
  }
  const lastSigned = Math.max(0, ...signed.keys());
  if (events.length === 0) {
    if (lastSigned > 0) return { ok: false, checked: 0, checkpointsVerified, firstBrokenSeq: 1, reason: `the export has no events, but a signed checkpoint covers seq ${lastSigned}` };
    return { ok: true, checked: 0, checkpointsVerified };
  }
  const first = events[0].seq;
  let anchor = { seq: 0, hash: GENESIS_HASH };
  if (first > 1) {
    const hash = signed.get(first - 1);
    if (!hash) return { ok: false, checked: 0, checkpointsVerified, firstBrokenSeq: first, reason: `no signed checkpoint anchors seq ${first - 1}` };
    anchor = { seq: first - 1, hash };
  }
  const verifier = new ChainVerifier(anchor);
  for (const event of events) {
    if (!verifier.push(event)) break;
    const expected = signed.get(event.seq);
    if (expected !== undefined && expected !== event.hash) {
      return { ok: false, checked: verifier.checked, checkpointsVerified, firstBrokenSeq: event.seq, reason: `event ${event.seq} differs from its signed checkpoint` };
    }
  }
  const result = verifier.result();
  if (result.ok && lastSigned > verifier.last.seq) {
    // a signed checkpoint vouches for events the file no longer has: its tail was cut off
    return { ok: false, checked: result.checked, checkpointsVerified, checkpointsSkipped, firstBrokenSeq: verifier.last.seq + 1, reason: `events after seq ${verifier.last.seq} are missing (a signed checkpoint covers seq ${lastSigned})` };
  }
  return { ...result, checkpointsVerified, checkpointsSkipped };
}

/** Verifies a checkpoint JWS against a JWKS; returns its payload or a reason. */
export async function verifyCheckpointJws(jws: string, jwks: { keys: JWK[] }): Promise<{ ok: true; payload: LegacyCheckpointPayload } | { ok: false; reason: string }> {
  let kid: string | undefined;
  try {
    const header = decodeProtectedHeader(jws);
    if (header.typ !== LEGACY_CHECKPOINT_TYPE || header.alg !== JWT_ALG) return { ok: false, reason: 'not a keywarden audit checkpoint' };
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
