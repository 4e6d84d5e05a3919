import type { Logger } from 'pino';
import type { SystemKeys } from '../crypto/system-keys.js';
import { AuditUnavailableError } from '../core/errors.js';
import type { Database, Statement, Transaction } from '../db/database.js';
import { isRetryableTransactionError, withTransactionRetry } from '../db/transaction-retry.js';
import { appendEvents, appendEventsProgram, type SecretReadMark } from './audit-dal.js';
import type { JsonlAuditSink } from './audit-sink.js';
import type { AuditEvent, AuditEventInput } from './audit-types.js';
import type { Clock } from '../core/clock.js';
import type { CacheEpoch } from '../db/cache-epoch.js';
import { noTelemetry, secondsSince, type AuditAppendPath, type Telemetry } from '../core/telemetry.js';

export interface AuditDeps {
  db: Database;
  systemKeys: SystemKeys;
  clock: Clock;
  logger?: Logger;
  sink?: JsonlAuditSink;
  /** Throws (503 audit_chain_broken) once the log failed verification: nothing is appended to it. */
  chainGuard?: () => void;
  /** Told how many events were queued for the sequencer, after they committed. */
  onQueued?: (count: number) => void;
  /** Append latency for /metrics. */
  telemetry?: Telemetry;
  /**
   * Read again after each audited change commits (`transact`), before the caller answers, so
   * this instance's caches (the delivery path's, the release gate's) drop what it changed.
   */
  cacheEpochs?: Array<Pick<CacheEpoch, 'refreshAfterChange'>>;
}

interface PendingReads {
  inputs: AuditEventInput[];
  reads: SecretReadMark[];
  /** Rows that must commit with the events (a release decision's own row). */
  statements: Statement[];
  resolve: (events: AuditEvent[]) => void;
  reject: (err: unknown) => void;
}

/**
 * The one way events are recorded. Fail-closed: when the event cannot be written the caller
 * gets a 503 problem and the operation it describes must not happen (or is rolled back, when
 * the event is written in the operation's own transaction).
 */
export class AuditService {
  private pending: PendingReads[] = [];
  private flushing = false;
  private readonly telemetry: Telemetry;

  constructor(private readonly deps: AuditDeps) {
    this.telemetry = deps.telemetry ?? noTelemetry;
  }

  /**
   * Records secret reads (and the last-read marks reports use) before the value is handed out.
   * Concurrent reads are group-committed: one transaction, many events (on
   * SQLite, one synchronous transaction when the port's fast path is free). The caller's promise
   * settles only after the commit, so nothing is delivered unrecorded.
   */
  async recordReads(inputs: AuditEventInput[], reads: SecretReadMark[]): Promise<AuditEvent[]> {
    this.deps.chainGuard?.();
    return new Promise<AuditEvent[]>((resolve, reject) => {
      this.enqueue({ inputs, reads, statements: [], resolve, reject });
    });
  }

  /**
   * Records events together with rows of the caller's (DAL-built statements, such as a release
   * decision's row), group-committed like `recordReads`: one transaction for every caller
   * already waiting. Settles after the commit, so the caller answers only what is recorded.
   */
  async recordWithRows(inputs: AuditEventInput[], statements: Statement[]): Promise<AuditEvent[]> {
    this.deps.chainGuard?.();
    return new Promise<AuditEvent[]>((resolve, reject) => {
      this.enqueue({ inputs, reads: [], statements, resolve, reject });
    });
  }

  private enqueue(entry: PendingReads): void {
    this.pending.push(entry);
    if (!this.flushing) {
      this.flushing = true;
      // one macrotask of delay lets every request already read off the sockets join the batch
      setImmediate(() => void this.flush());
    }
  }

  private settle(batch: PendingReads[], events: AuditEvent[]): void {
    this.mirror(events);
    let offset = 0;
    for (const b of batch) {
      b.resolve(events.slice(offset, offset + b.inputs.length));
      offset += b.inputs.length;
    }
  }

  /** One transaction of appends, run again (whole) when the database rolled it back for a deadlock or serialization failure. */
  private async appendRetried(inputs: AuditEventInput[], reads: SecretReadMark[], what: string, path: AuditAppendPath, statements: Statement[] = []): Promise<AuditEvent[]> {
    const started = performance.now();
    const events = await withTransactionRetry(() => appendEvents(this.deps.db, inputs, reads, this.deps.clock(), statements), {
      logger: this.deps.logger,
      what,
    });
    this.telemetry.auditAppend(path, secondsSince(started));
    return events;
  }

  private async flush(): Promise<void> {
    try {
      while (this.pending.length > 0) {
        const batch = this.pending.splice(0, 256);
        try {
          this.settle(batch, await this.appendRetried(batch.flatMap((b) => b.inputs), batch.flatMap((b) => b.reads), 'audit read batch', 'read_batch', batch.flatMap((b) => b.statements)));
        } catch {
          // one bad entry must not fail its neighbours: retry each on its own
          for (const b of batch) {
            try {
              const events = await this.appendRetried(b.inputs, b.reads, 'audit read', 'read_batch', b.statements);
              this.mirror(events);
              b.resolve(events);
            } catch (inner) {
              this.deps.logger?.error({ err: { message: (inner as Error).message, code: (inner as { code?: string }).code } }, 'audit write failed');
              b.reject(new AuditUnavailableError());
            }
          }
        }
      }
    } finally {
      // whatever happened, the next recordReads must start a flush again
      this.flushing = false;
    }
  }

  /** Records in a transaction of its own. */
  async record(input: AuditEventInput): Promise<AuditEvent> {
    this.deps.chainGuard?.();
    let event: AuditEvent;
    try {
      [event] = await this.appendRetried([input], [], input.action, 'record');
    } catch (err) {
      this.deps.logger?.error({ err: { message: (err as Error).message }, action: input.action }, 'audit write failed');
      throw new AuditUnavailableError();
    }
    this.mirror([event]);
    return event;
  }

  /**
   * Records inside the caller's transaction, so the change and its event commit together.
   * Call `committed()` with the result after the transaction commits to mirror it.
   */
  async recordIn(trx: Transaction, input: AuditEventInput): Promise<AuditEvent> {
    const [event] = await this.appendIn(trx, [input]);
    return event;
  }

  /**
   * Appends inside the caller's transaction. A deadlock or serialization failure is rethrown
   * as it is, so that the transaction can be retried (or, when it cannot, the error handler
   * answers 503 for it); any other failure is a 503 audit_unavailable.
   */
  private async appendIn(trx: Transaction, inputs: AuditEventInput[]): Promise<AuditEvent[]> {
    this.deps.chainGuard?.();
    try {
      const started = performance.now();
      const events = await this.deps.db.runIn(trx, appendEventsProgram(inputs, [], this.deps.clock()));
      this.telemetry.auditAppend('transaction', secondsSince(started));
      return events;
    } catch (err) {
      if (isRetryableTransactionError(err)) throw err;
      this.deps.logger?.error({ err: { message: (err as Error).message }, actions: inputs.map((i) => i.action) }, 'audit write failed');
      throw new AuditUnavailableError();
    }
  }

  /**
   * Runs `fn` in a transaction whose audit events commit with it: if recording fails, the
   * whole change rolls back and the caller gets a 503.
   *
   * `record` collects the events; they are inserted into the sequencer's queue when `fn` has
   * returned, still inside the transaction. The insert locks nothing another transaction
   * holds (src/db/lock-order.md).
   *
   * When PostgreSQL rolls the transaction back for a deadlock (40P01) or a serialization
   * failure (40001), the whole of `fn` runs again (bounded, jittered: src/db/transaction-retry.ts);
   * a failure that outlasts the retries is rethrown as it is. So `fn` must have no effect
   * outside the transaction: compute what the caller needs from its rows and return it, and
   * leave responses, caches and other side effects to the caller, after `transact` resolves.
   */
  async transact<T>(fn: (trx: Transaction, record: (input: AuditEventInput) => Promise<void>) => Promise<T>): Promise<T> {
    return withTransactionRetry(
      async () => {
        const { result, events } = await this.deps.db.transaction(async (trx) => {
          const queued: AuditEventInput[] = [];
          const result = await fn(trx, async (input) => {
            queued.push(input);
          });
          return { result, events: queued.length ? await this.appendIn(trx, queued) : [] };
        });
        this.mirror(events);
        await this.refreshCaches();
        return result;
      },
      { logger: this.deps.logger, what: 'audited transaction' },
    );
  }

  private async refreshCaches(): Promise<void> {
    await Promise.all((this.deps.cacheEpochs ?? []).map((epoch) => epoch.refreshAfterChange()));
  }

  committed(events: AuditEvent[]): void {
    this.mirror(events);
  }

  /** HMAC of a sensitive identifier (a presented token, say), as Vault's audit devices do. */
  async hmac(value: string): Promise<string> {
    return `hmac-sha256:${await this.deps.systemKeys.hmacHex('audit-hmac', value)}`;
  }

  private mirror(events: AuditEvent[]): void {
    if (events.length > 0) this.deps.onQueued?.(events.length);
    if (!this.deps.sink || events.length === 0) return;
    try {
      this.deps.sink.write(events);
    } catch (err) {
      // The database copy is authoritative and already committed; the mirror is for shippers.
      this.deps.logger?.error({ err: { message: (err as Error).message } }, 'audit file mirror failed');
    }
  }
}
