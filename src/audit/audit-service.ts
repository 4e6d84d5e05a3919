import type { Knex } from 'knex';
import type { Logger } from 'pino';
import type { SystemKeys } from '../crypto/system-keys.js';
import { problems } from '../http/problem.js';
import { appendEvent } from './audit-dal.js';
import type { JsonlAuditSink } from './audit-sink.js';
import type { AuditEvent, AuditEventInput } from './audit-types.js';

export interface AuditDeps {
  db: Knex;
  systemKeys: SystemKeys;
  clock: () => number;
  logger?: Logger;
  sink?: JsonlAuditSink;
}

/**
 * The one way events are recorded. Fail-closed: when the event cannot be written the caller
 * gets a 503 problem and the operation it describes must not happen (or is rolled back, when
 * the event is written in the operation's own transaction).
 */
export class AuditService {
  constructor(private readonly deps: AuditDeps) {}

  /** Records in a transaction of its own. */
  async record(input: AuditEventInput): Promise<AuditEvent> {
    let event: AuditEvent;
    try {
      event = await this.deps.db.transaction((trx) => appendEvent(trx, input, this.deps.clock()));
    } catch (err) {
      this.deps.logger?.error({ err: { message: (err as Error).message }, action: input.action }, 'audit write failed');
      throw problems.auditUnavailable();
    }
    this.mirror([event]);
    return event;
  }

  /**
   * Records inside the caller's transaction, so the change and its event commit together.
   * Call `committed()` with the result after the transaction commits to mirror it.
   */
  async recordIn(trx: Knex.Transaction, input: AuditEventInput): Promise<AuditEvent> {
    try {
      return await appendEvent(trx, input, this.deps.clock());
    } catch (err) {
      this.deps.logger?.error({ err: { message: (err as Error).message }, action: input.action }, 'audit write failed');
      throw problems.auditUnavailable();
    }
  }

  /**
   * Runs `fn` in a transaction whose audit events commit with it: if recording fails, the
   * whole change rolls back and the caller gets a 503.
   */
  async transact<T>(
    fn: (trx: Knex.Transaction, record: (input: AuditEventInput) => Promise<AuditEvent>) => Promise<T>,
  ): Promise<T> {
    const events: AuditEvent[] = [];
    const result = await this.deps.db.transaction(async (trx) => {
      const record = async (input: AuditEventInput) => {
        const event = await this.recordIn(trx, input);
        events.push(event);
        return event;
      };
      return fn(trx, record);
    });
    this.mirror(events);
    return result;
  }

  committed(events: AuditEvent[]): void {
    this.mirror(events);
  }

  /** HMAC of a sensitive identifier (a presented token, say), as Vault's audit devices do. */
  async hmac(value: string): Promise<string> {
    return `hmac-sha256:${await this.deps.systemKeys.hmacHex('audit-hmac', value)}`;
  }

  private mirror(events: AuditEvent[]): void {
    if (!this.deps.sink || events.length === 0) return;
    try {
      this.deps.sink.write(events);
    } catch (err) {
      // The database copy is authoritative and already committed; the mirror is for shippers.
      this.deps.logger?.error({ err: { message: (err as Error).message } }, 'audit file mirror failed');
    }
  }
}
