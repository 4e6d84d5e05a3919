import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { writeFileAtomic } from '../core/atomic-file.js';
import type { AuditTreeDal, TreeHeadOpener } from './audit-tree-dal.js';

/** The checkpoint file in the data directory. */
export const CHECKPOINT_FILE_NAME = 'audit-checkpoint';

/** The copy beside the audit file sink (KEYWARDEN_AUDIT_FILE): often on another disk, or shipped. */
export function sinkCheckpointFile(auditFile: string): string {
  return `${auditFile}.checkpoint`;
}

/** A signed tree head this broker verified, as kept in one file outside the database. */
export interface KeptCheckpoint {
  file: string;
  treeSize: number;
  rootHash: string;
  /** The signed note (tlog-checkpoint), as the sequencer stored it. */
  note: string;
}

/** Why the stored tree is not an extension of a kept checkpoint. */
export interface CheckpointMismatch {
  reason: string;
  firstBadLeaf?: number;
}

/**
 * The verdict on the database's tree against one kept checkpoint, given the newest signed head's
 * size and the tree's root at the checkpoint's size (undefined when its nodes are missing).
 */
export function compareWithKept(cp: Pick<KeptCheckpoint, 'file' | 'treeSize' | 'rootHash'>, size: number, rootAtKept: string | undefined): CheckpointMismatch | undefined {
  if (size < cp.treeSize) {
    return { firstBadLeaf: size, reason: `the newest signed head has ${size} leaves, but the checkpoint kept in ${cp.file} has ${cp.treeSize}: the log was cut back` };
  }
  if (rootAtKept === undefined) return { firstBadLeaf: 0, reason: `nodes of the tree of size ${cp.treeSize} (the checkpoint kept in ${cp.file}) are missing: the log was rewritten` };
  if (rootAtKept !== cp.rootHash) {
    return { firstBadLeaf: cp.treeSize - 1, reason: `the log's first ${cp.treeSize} leaves do not hash to the root of the checkpoint kept in ${cp.file}: the log was cut back and rewritten` };
  }
  return undefined;
}

/**
 * The newest verified checkpoint, kept outside the database: in the data directory and, when an
 * audit file is configured, beside it. Someone who can rewrite the database can cut the log back
 * to an older signed head (events, nodes and heads together) and the database alone is consistent
 * again; the files are what a restarted broker compares with. On start and whenever a head is
 * taken, the database's tree must extend every kept checkpoint: a size not smaller, and the same
 * root at the checkpoint's size. A file is replaced (atomically, mode 0600) only by a head that
 * verified, i.e. extends what it held, and only grows.
 *
 * Only the serving broker writes the files (`persist`): a CLI command run as root would leave a
 * file the broker's user cannot read. Those commands still check against them.
 */
export class KeptCheckpoints {
  private readonly kept = new Map<string, KeptCheckpoint>();
  private writeFailure?: string;

  constructor(
    private readonly deps: {
      files: string[];
      /** Opens a signed note with the log key (throws when it does not verify). */
      open: TreeHeadOpener;
      logger: Pick<Logger, 'warn' | 'error' | 'info'>;
      persist: boolean;
    },
  ) {}

  /**
   * Reads the files. A missing file is no checkpoint yet (first start, or a new audit file); a
   * file that cannot be read or is not a checkpoint signed by this log's key is a failure (the
   * database was replaced, or the file edited): the caller fails closed with the reason.
   */
  load(): CheckpointMismatch | undefined {
    for (const file of this.deps.files) {
      let note: string;
      try {
        note = fs.readFileSync(file, 'utf8');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        return { reason: `the audit checkpoint kept in ${file} cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})` };
      }
      try {
        const { treeSize, rootHash } = this.deps.open(note);
        this.kept.set(file, { file, treeSize, rootHash, note });
      } catch (err) {
        return {
          reason:
            `the audit checkpoint kept in ${file} is not a tree head signed by this log's key (${(err as Error).message}): ` +
            'the database was replaced or the file edited; if the database was replaced on purpose, remove the file',
        };
      }
    }
    return undefined;
  }

  list(): KeptCheckpoint[] {
    return [...this.kept.values()];
  }

  /** The largest kept checkpoint. */
  newest(): KeptCheckpoint | undefined {
    let best: KeptCheckpoint | undefined;
    for (const cp of this.kept.values()) if (!best || cp.treeSize > best.treeSize) best = cp;
    return best;
  }

  /**
   * Compares the stored tree with every kept checkpoint: the newest signed head's size, and the
   * root at each checkpoint's size from the stored perfect subtrees (which the verification pass
   * checks against the leaves and every signed head).
   */
  async check(tree: AuditTreeDal): Promise<CheckpointMismatch | undefined> {
    if (this.kept.size === 0) return undefined;
    const size = (await tree.latestHead())?.treeSize ?? 0;
    for (const cp of this.kept.values()) {
      let root: string | undefined;
      if (cp.treeSize > 0 && cp.treeSize <= size) root = await tree.storedRootAt(cp.treeSize);
      else if (cp.treeSize === 0) root = cp.rootHash;
      const mismatch = compareWithKept(cp, size, root);
      if (mismatch) return mismatch;
    }
    return undefined;
  }

  /**
   * Keeps `head`, which verified: the sequencer signed it over a tree it found extending every
   * kept checkpoint, or the verification pass checked it. Written to each file whose checkpoint it
   * is larger than (the same size again, re-signed with a new time, changes nothing).
   */
  advance(head: { treeSize: number; rootHash: string; note: string }): void {
    if (!this.deps.persist) return;
    for (const file of this.deps.files) {
      const cp = this.kept.get(file);
      if (cp && cp.treeSize >= head.treeSize) continue;
      try {
        fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true, mode: 0o700 });
        writeFileAtomic(file, head.note);
        this.kept.set(file, { file, treeSize: head.treeSize, rootHash: head.rootHash, note: head.note });
        if (this.writeFailure) this.deps.logger.info({ file }, 'audit checkpoint file written again');
        this.writeFailure = undefined;
      } catch (err) {
        // the log itself is intact: this only weakens the check at the next start, so it is
        // reported (once per kind of failure), not a reason to refuse writes
        const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
        if (this.writeFailure !== code) this.deps.logger.error({ file, err: { message: (err as Error).message } }, 'cannot write the audit checkpoint file: a restart cannot compare the database with it');
        this.writeFailure = code;
      }
    }
  }
}
