import type { AuditLogSigner } from './audit-log-key.js';
import { checkpointTime } from './audit-log-key.js';
import type { AuditTreeDal, StoredTreeHead } from './audit-tree-dal.js';
import { openNote, parseCheckpoint } from './signed-note.js';

/** A signed tree head as the API publishes it. */
export interface PublishedTreeHead {
  id: number;
  treeSize: number;
  rootHash: string;
  /** When it was signed (from the checkpoint's Timestamp line). */
  time: string;
  origin: string;
  keyId: string;
  /** The C2SP note verifier key to check `checkpoint` with. */
  verifierKey: string;
  /** The signed note: a tlog-checkpoint body and its signature line. */
  checkpoint: string;
}

/** Publishes the signed tree heads the sequencer stored, with the key that checks them. */
export class TreeHeadsService {
  constructor(private readonly deps: { tree: AuditTreeDal; signer: () => Promise<AuditLogSigner> }) {}

  async describe(head: StoredTreeHead): Promise<PublishedTreeHead> {
    const signer = await this.deps.signer();
    let time = head.createdAt;
    try {
      // the time published is the one signed, not the column beside it
      time = checkpointTime(parseCheckpoint(openNote(head.note, [signer.verifier]).text).extensions) ?? head.createdAt;
    } catch {
      // a head that no longer verifies is published as stored; verification reports it
    }
    return {
      id: head.id,
      treeSize: head.treeSize,
      rootHash: head.rootHash,
      time: new Date(time).toISOString(),
      origin: signer.origin,
      keyId: head.keyId,
      verifierKey: signer.verifierKey,
      checkpoint: head.note,
    };
  }

  /** Newest first. */
  async list(limit: number, beforeId?: number): Promise<PublishedTreeHead[]> {
    return Promise.all((await this.deps.tree.listHeads(limit, beforeId)).map((h) => this.describe(h)));
  }
}
