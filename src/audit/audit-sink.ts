import fs from 'node:fs';
import path from 'node:path';
import type { AuditEvent } from './audit-types.js';
import type { StoredTreeHead } from './audit-tree-dal.js';

/**
 * Mirrors committed events to an append-only JSONL file for log shippers. The file is reopened
 * on reopen() (wired to SIGHUP) so logrotate can move it away.
 */
export class JsonlAuditSink {
  private fd: number | null = null;
  /** When a write last succeeded, and the last write's failure (cleared by a success): the console's sink status. */
  readonly health: { lastWriteAt: number | null; lastError: string | null } = { lastWriteAt: null, lastError: null };

  constructor(private readonly file: string) {
    fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true, mode: 0o700 });
    this.open();
  }

  private open(): void {
    const fd = fs.openSync(this.file, 'a', 0o600);
    // the mode above applies only when the file is created; an existing one is tightened too
    // (audit events name secrets, clients and addresses), unless another user owns it: then
    // its mode is that owner's deliberate choice (a log shipper's group, say)
    try {
      fs.fchmodSync(fd, 0o600);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EPERM') {
        fs.closeSync(fd);
        throw err;
      }
    }
    this.fd = fd;
  }

  write(events: AuditEvent[]): void {
    this.tracked(() => {
      if (this.fd === null) this.open();
      fs.writeSync(this.fd!, events.map((e) => JSON.stringify(e)).join('\n') + '\n');
    });
  }

  private tracked(write: () => void): void {
    try {
      write();
      this.health.lastWriteAt = Date.now();
      this.health.lastError = null;
    } catch (err) {
      this.health.lastError = (err as NodeJS.ErrnoException).code ?? 'write failed';
      throw err;
    }
  }

  /** A signed tree head, as a line of its own: shippers keep the checkpoints beside the events they cover. */
  writeTreeHead(head: StoredTreeHead): void {
    this.tracked(() => {
      if (this.fd === null) this.open();
      fs.writeSync(this.fd!, JSON.stringify({ type: 'tree-head', treeSize: head.treeSize, rootHash: head.rootHash, checkpoint: head.note }) + '\n');
    });
  }

  reopen(): void {
    const old = this.fd;
    this.open();
    if (old !== null) fs.closeSync(old);
  }

  close(): void {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
  }
}
