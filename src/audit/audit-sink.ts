import fs from 'node:fs';
import path from 'node:path';
import type { AuditEvent } from './audit-types.js';

/**
 * Mirrors committed events to an append-only JSONL file for log shippers. The file is reopened
 * on reopen() (wired to SIGHUP) so logrotate can move it away.
 */
export class JsonlAuditSink {
  private fd: number | null = null;

  constructor(private readonly file: string) {
    fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
    this.open();
  }

  private open(): void {
    this.fd = fs.openSync(this.file, 'a', 0o600);
  }

  write(events: AuditEvent[]): void {
    if (this.fd === null) this.open();
    fs.writeSync(this.fd!, events.map((e) => JSON.stringify(e)).join('\n') + '\n');
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
