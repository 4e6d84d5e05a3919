import type { Logger } from 'pino';
import client from 'prom-client';
import { UnavailableError } from '../core/errors.js';
import type { IntegrityViolation } from '../secrets/row-integrity.js';
import type { RowIntegrityScanner } from '../secrets/row-integrity-scanner.js';
import type { AuditCheckpoints } from './audit-checkpoints.js';
import type { AuditQueryDal } from './audit-query-dal.js';
import type { AuditService } from './audit-service.js';
import type { AuditVerifyService } from './audit-verify-service.js';
import type { Clock } from '../core/clock.js';

/** Events verified per query batch, and the largest "since the last checkpoint" range re-verified whole each pass. */
const CHUNK_EVENTS = 10_000;
/** How long startup waits for the first pass before serving (the rest continues in the background). */
const STARTUP_BUDGET_MS = 10_000;

export interface ChainFailure {
  firstBrokenSeq?: number;
  reason: string;
  detectedAt: number;
}

/**
 * What this instance knows about the audit chain. Once broken it stays broken until the process
 * restarts (and verifies again from the last signed checkpoint): a chain that was seen broken
 * and then looks whole again has been repaired by someone, which an operator must look at.
 */
export class AuditChainState {
  status: 'pending' | 'ok' | 'broken' = 'pending';
  failure?: ChainFailure;

  /** Thrown instead of appending to a chain that failed verification. */
  assertIntact(): void {
    if (this.status !== 'broken') return;
    throw new UnavailableError(
      'The audit log failed verification, so operations that must be recorded are refused until an operator has investigated and restarted the broker',
      { code: 'audit_chain_broken', title: 'Audit chain broken' },
    );
  }
}

export interface AuditChainWatchDeps {
  state: AuditChainState;
  verifier: AuditVerifyService;
  dal: AuditQueryDal;
  checkpoints: AuditCheckpoints;
  audit: AuditService;
  rowIntegrity: RowIntegrityScanner;
  registry: client.Registry;
  logger: Logger;
  clock: Clock;
  /** KEYWARDEN_AUDIT_VERIFY_INTERVAL in ms; 0 verifies at startup only. */
  intervalMs: number;
}

/**
 * Verifies the chain from the newest signed checkpoint to the head at startup and then every
 * interval, reusing AuditVerifyService. Between passes it remembers the last (seq, hash) it
 * verified: a head that moves below it, or an event there whose hash changed, is a truncation or
 * rewrite that a consistent rehash would otherwise hide. Each instance keeps its own mark; the
 * database alone decides every pass, the mark only adds what this process has already seen.
 * It also scans the MACs of secrets, grants and versions (row-integrity.ts).
 */
export class AuditChainWatch {
  private verified?: { seq: number; hash: string };
  private running?: Promise<void>;
  private timer?: NodeJS.Timeout;
  private readonly reported = new Set<string>();
  private readonly gauges: { ok: client.Gauge; seq: client.Gauge; at: client.Gauge; rows: client.Gauge; errors: client.Counter };
  lastVerifiedAt?: number;
  rowViolations: IntegrityViolation[] = [];

  constructor(private readonly deps: AuditChainWatchDeps) {
    const registers = [deps.registry];
    this.gauges = {
      ok: new client.Gauge({ name: 'keywarden_audit_chain_ok', help: '1 when the last audit chain verification passed, 0 when it failed or has not finished', registers }),
      seq: new client.Gauge({ name: 'keywarden_audit_chain_verified_seq', help: 'Highest audit sequence number this instance has verified', registers }),
      at: new client.Gauge({ name: 'keywarden_audit_chain_last_verified_timestamp_seconds', help: 'When this instance last verified the audit chain successfully (Unix time)', registers }),
      rows: new client.Gauge({ name: 'keywarden_row_integrity_violations', help: 'Secret, grant and version rows whose integrity MAC did not verify in the last scan', registers }),
      errors: new client.Counter({ name: 'keywarden_audit_chain_verify_errors_total', help: 'Verification passes that could not run (database unavailable)', registers }),
    };
  }

  /** First pass (awaited up to a budget, so a small log is verified before serving), then the timer. */
  async start(): Promise<void> {
    const first = this.check();
    await Promise.race([first, new Promise((r) => setTimeout(r, STARTUP_BUDGET_MS).unref())]);
    if (this.deps.intervalMs > 0) {
      this.timer = setInterval(() => void this.check(), this.deps.intervalMs);
      this.timer.unref();
    }
  }

  /** Stops the timer and waits for a pass in progress, so nothing queries a closed database. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.running?.catch(() => undefined);
  }

  /** One pass; concurrent callers share the pass in progress. */
  check(): Promise<void> {
    this.running ??= this.pass().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private async pass(): Promise<void> {
    const { state, logger } = this.deps;
    try {
      if (state.status !== 'broken') await this.verifyChain();
    } catch (err) {
      this.gauges.errors.inc();
      logger.warn({ err: { message: (err as Error).message } }, 'audit chain verification could not run');
    }
    try {
      await this.scanRows();
    } catch (err) {
      logger.warn({ err: { message: (err as Error).message } }, 'row integrity scan could not run');
    }
  }

  private broken(reason: string, firstBrokenSeq?: number): void {
    const { state, logger, clock } = this.deps;
    state.status = 'broken';
    state.failure = { reason, firstBrokenSeq, detectedAt: clock() };
    this.gauges.ok.set(0);
    logger.error({ firstBrokenSeq, reason }, 'AUDIT CHAIN BROKEN: audited operations are refused until an operator investigates and restarts the broker');
  }

  private async verifyChain(): Promise<void> {
    const { dal, checkpoints, verifier, state, clock } = this.deps;
    const head = await dal.head();
    const mark = this.verified;
    if (mark) {
      if (head.seq < mark.seq) {
        return this.broken(`the audit head is at seq ${head.seq}, but this instance had verified events up to seq ${mark.seq}: events were removed and the head rewound`, head.seq + 1);
      }
      const event = await dal.eventAt(mark.seq);
      if (event && event.hash !== mark.hash) {
        return this.broken(`event ${mark.seq} no longer has the hash this instance verified: the log was rewritten`, mark.seq);
      }
      if (!event) {
        // only pruning removes old events, and it leaves none at or below the removed one
        const first = await dal.firstSeq();
        if (first === undefined || first <= mark.seq) {
          return this.broken(`event ${mark.seq}, which this instance verified, has been removed`, mark.seq);
        }
      }
    }

    // from the newest signed checkpoint (or the first stored event when there is none) ...
    const [checkpoint] = await checkpoints.list(1);
    const first = await dal.firstSeq();
    let fromSeq = checkpoint ? Math.max(checkpoint.seq, first ?? checkpoint.seq) : (first ?? head.seq + 1);
    let trusted: { seq: number; hash: string } | undefined;
    // ... unless that range is large and this instance has already verified part of it
    if (mark && head.seq - fromSeq > CHUNK_EVENTS && mark.seq >= fromSeq) {
      fromSeq = mark.seq + 1;
      trusted = mark;
    }
    for (let guard = 0; guard < 1_000_000; guard++) {
      const result = await verifier.verifyDetailed({ fromSeq, toSeq: fromSeq + CHUNK_EVENTS - 1 }, trusted);
      if (!result.ok) return this.broken(result.reason ?? 'verification failed', result.firstBrokenSeq);
      if (!this.verified || result.last.seq >= this.verified.seq) this.verified = result.last;
      if (result.toSeq >= result.head.seq) break;
      fromSeq = result.toSeq + 1;
      trusted = result.last;
    }
    if (state.status !== 'broken') state.status = 'ok';
    this.lastVerifiedAt = clock();
    this.gauges.ok.set(1);
    this.gauges.seq.set(this.verified?.seq ?? 0);
    this.gauges.at.set(Math.floor(this.lastVerifiedAt / 1000));
  }

  private async scanRows(): Promise<void> {
    const violations = await this.deps.rowIntegrity.scan();
    this.rowViolations = violations;
    this.gauges.rows.set(violations.length);
    for (const v of violations) {
      const key = `${v.table}:${v.row}:${v.reason}`;
      if (this.reported.has(key)) continue;
      this.reported.add(key);
      this.deps.logger.error({ table: v.table, row: v.row, reason: v.reason }, 'row integrity violation: a row was changed outside the broker');
      try {
        await this.deps.audit.record({
          actor: { kind: 'system', name: 'keywarden-integrity' },
          action: 'integrity.violation',
          resource: { kind: 'table', name: v.table },
          outcome: 'error',
          reason: `row MAC ${v.reason === 'missing' ? 'missing' : 'does not match'}: ${v.row}`,
          details: { table: v.table, row: v.row },
        });
      } catch {
        // the log refused the event (broken chain or database down); report it again next pass
        this.reported.delete(key);
      }
    }
  }
}
