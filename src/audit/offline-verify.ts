import fs from 'node:fs';
import readline from 'node:readline';
import type { JWK } from 'jose';
import { z } from 'zod';
import { leafData } from './audit-leaf-data.js';
import { checkpointTime } from './audit-log-key.js';
import type { AuditEvent } from './audit-types.js';
import { verifyLegacyExportFile } from './legacy-export-verify.js';
import { leafHash, TreeFrontier } from './merkle.js';
import { NoteError, openNote, parseCheckpoint, parseVerifierKey } from './signed-note.js';

/** Format 2: the Merkle tree log (GET /v1/audit/export). */
export const EXPORT_FORMAT = 'keywarden-audit-export/2';

const hex32 = z.string().regex(/^[0-9a-f]{64}$/);
const headerLine = z.object({ type: z.literal('export-header'), format: z.literal(EXPORT_FORMAT), origin: z.string(), fromLeaf: z.number().int().min(0), toLeaf: z.number().int().min(0), treeSize: z.number().int().min(0) }).passthrough();
const prefixLine = z.object({ type: z.literal('prefix'), treeSize: z.number().int().min(1), hashes: z.array(hex32) });
const suffixLine = z.object({ type: z.literal('suffix'), nodes: z.array(z.object({ level: z.number().int().min(0).max(63), index: z.number().int().min(0), hash: hex32 })) });
const checkpointLine = z.object({ type: z.literal('checkpoint'), checkpoint: z.string() });

export interface ExportVerification {
  ok: boolean;
  format: 1 | 2;
  /** Events whose leaf hashes were recomputed (format 2) or chain links checked (format 1). */
  checked: number;
  treeSize?: number;
  /** Format 2: the leaves whose events the file holds, [fromLeaf, toLeaf). */
  fromLeaf?: number;
  toLeaf?: number;
  rootHash?: string;
  checkpointTime?: string;
  firstBadLeaf?: number;
  reason?: string;
  /** Format 1 only. */
  legacy?: Awaited<ReturnType<typeof verifyLegacyExportFile>>;
}

/**
 * Verifies an export offline, with nothing but the log's verifier key: the signed checkpoint at
 * the end, then the root recomputed from the compact range before the first event, every event's
 * leaf hash, and the perfect subtrees after the last one. One event edited, dropped, added or
 * moved, or a checkpoint from elsewhere, and the root differs. Format-1 exports (hash chains,
 * from before the Merkle tree) are verified as before, against the JWKS of that time.
 */
export async function verifyExportFile(file: string, keys: { verifierKey?: string; jwks?: { keys: JWK[] } }): Promise<ExportVerification> {
  const lines = readline.createInterface({ input: fs.createReadStream(file), crlfDelay: Infinity });
  const iterator = lines[Symbol.asyncIterator]();
  let first: string | undefined;
  for (;;) {
    const next = await iterator.next();
    if (next.done) break;
    if (next.value.trim()) {
      first = next.value;
      break;
    }
  }
  const fail = (reason: string, extra: Partial<ExportVerification> = {}): ExportVerification => ({ ok: false, format: 2, checked: 0, reason, ...extra });
  if (first === undefined) {
    lines.close();
    // every export holds at least a checkpoint (format 2) or the export's own event (format 1)
    return fail('the file is empty');
  }
  let parsed: { type?: unknown } | null;
  try {
    parsed = JSON.parse(first);
  } catch {
    lines.close();
    return fail('the first line is not JSON');
  }
  if (parsed?.type !== 'export-header') {
    lines.close();
    // format 1 has no header: its first line is an event or a checkpoint
    if (!keys.jwks) return { ok: false, format: 1, checked: 0, reason: 'this is a format-1 (hash chain) export: verify it with --jwks' };
    let legacy;
    try {
      legacy = await verifyLegacyExportFile(file, keys.jwks);
    } catch (err) {
      // a line that is not JSON: the file was damaged (reported as format 1, not as a missing header)
      return { ok: false, format: 1, checked: 0, reason: `the file is malformed: ${err instanceof Error ? err.message.slice(0, 200) : 'invalid'}` };
    }
    return { ok: legacy.ok, format: 1, checked: legacy.checked, reason: legacy.reason, legacy };
  }
  const header = headerLine.safeParse(parsed);
  if (!header.success) {
    lines.close();
    return fail('the first line is not a valid export header');
  }
  if (!keys.verifierKey) return fail('a format-2 export is verified with the log verifier key (--key)');
  let verifier;
  try {
    verifier = parseVerifierKey(keys.verifierKey);
  } catch (err) {
    return fail(`the verifier key is not valid: ${err instanceof NoteError ? err.reason : 'malformed'}`);
  }

  let frontier = TreeFrontier.empty();
  let checked = 0;
  let checkpoint: z.infer<typeof checkpointLine> | undefined;
  let stage: 'prefix' | 'events' | 'suffix' | 'done' = 'prefix';
  let rangeStart = 0;
  let rangeEnd: number | undefined;
  let lineNo = 1;
  for (;;) {
    const next = await iterator.next();
    if (next.done) break;
    lineNo++;
    if (!next.value.trim()) continue;
    let obj: { type?: unknown };
    try {
      obj = JSON.parse(next.value);
    } catch {
      return fail(`line ${lineNo} is not JSON`, { checked });
    }
    if (stage === 'done') return fail(`line ${lineNo} follows the checkpoint`, { checked });
    try {
      if (obj.type === 'prefix' && stage === 'prefix' && frontier.size === 0) {
        const p = prefixLine.parse(obj);
        frontier = TreeFrontier.fromNodes(p.treeSize, p.hashes.map((h) => Buffer.from(h, 'hex')));
        rangeStart = frontier.size;
        stage = 'events';
      } else if (obj.type === 'suffix' && stage !== 'suffix') {
        rangeEnd = frontier.size;
        for (const n of suffixLine.parse(obj).nodes) frontier.appendSubtree({ level: n.level, index: n.index }, Buffer.from(n.hash, 'hex'));
        stage = 'suffix';
      } else if (obj.type === 'checkpoint') {
        checkpoint = checkpointLine.parse(obj);
        stage = 'done';
      } else if (obj.type === undefined && (stage === 'prefix' || stage === 'events')) {
        stage = 'events';
        const event = obj as AuditEvent;
        if (event.leafIndex !== frontier.size) {
          return fail(`event ${event.seq} claims leaf ${event.leafIndex}, but the next leaf is ${frontier.size}`, { checked, firstBadLeaf: frontier.size });
        }
        frontier.appendLeafHash(leafHash(leafData(event)));
        checked++;
      } else {
        return fail(`line ${lineNo} (${String(obj.type ?? 'event')}) is out of place`, { checked });
      }
    } catch (err) {
      return fail(`line ${lineNo} is malformed: ${err instanceof Error ? err.message.slice(0, 200) : 'invalid'}`, { checked });
    }
  }
  if (!checkpoint) return fail('the export has no signed checkpoint: it was cut short', { checked });
  let cp;
  try {
    cp = parseCheckpoint(openNote(checkpoint.checkpoint, [verifier]).text);
  } catch (err) {
    return fail(`the checkpoint does not verify: ${err instanceof NoteError ? err.reason : 'malformed'}`, { checked });
  }
  if (cp.origin !== verifier.name) return fail(`the checkpoint is for log "${cp.origin}"`, { checked });
  if (frontier.size !== cp.size) {
    return fail(`the export covers ${frontier.size} leaves but its checkpoint has ${cp.size}`, { checked, firstBadLeaf: Math.min(frontier.size, cp.size) });
  }
  const range = { fromLeaf: rangeStart, toLeaf: rangeEnd ?? frontier.size };
  const root = frontier.root();
  const time = checkpointTime(cp.extensions);
  const result = { checked, treeSize: cp.size, ...range, rootHash: root.toString('hex'), checkpointTime: time === undefined ? undefined : new Date(time).toISOString() };
  if (!root.equals(cp.rootHash)) return fail('the exported events do not hash to the signed root: the log or the file was altered', result);
  // the header is not signed, but a reader takes the range from it: it must be the file's
  if (header.data.fromLeaf !== range.fromLeaf || header.data.toLeaf !== range.toLeaf) {
    return fail(`the header announces leaves ${header.data.fromLeaf} to ${header.data.toLeaf}, the file holds ${range.fromLeaf} to ${range.toLeaf}`, result);
  }
  if (header.data.treeSize !== cp.size) return fail('the header and the checkpoint disagree about the tree size', result);
  return { ok: true, format: 2, ...result };
}
