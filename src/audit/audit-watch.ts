import type { Logger } from 'pino';
import client from 'prom-client';
import { UnavailableError } from '../core/errors.js';
import type { IntegrityViolation } from '../secrets/row-integrity.js';
import type { RowIntegrityScanner } from '../secrets/row-integrity-scanner.js';
import type { AuditService } from './audit-service.js';
import type { AuditVerifyService, VerifiedState } from './audit-verify-service.js';
import type { Clock } from '../core/clock.js';
import type { AuditTreeDal } from './audit-tree-dal.js';
import type { KeptCheckpoints } from './kept-checkpoint.js';

/** How long startup waits for the first pass before serving (the rest continues in the background). */
const STARTUP_BUDGET_MS = 10_000;

export interface ChainFailure {
  firstBadLeaf?: number;
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

  /** Marks the log broken (the first failure is kept). */
  fail(reason: string, at: number, firstBadLeaf?: number): void {
    if (this.status === 'broken') return;
    this.status = 'broken';
    this.failure = { reason, firstBadLeaf, detectedAt: at };
  }

  /** Thrown instead of appending to a log that failed verification. */
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
  audit: AuditService;
  rowIntegrity: RowIntegrityScanner;
  registry: client.Registry;
  logger: Logger;
  clock: Clock;
  /** KEYWARDEN_AUDIT_VERIFY_INTERVAL in ms: the incremental passes; 0 verifies at startup only. */
  intervalMs: number;
  /** KEYWARDEN_AUDIT_FULL_VERIFY_INTERVAL in ms: passes over the whole tree again; 0 at startup only. */
  fullIntervalMs?: number;
  /**
   * The checkpoints kept outside the database (data directory, audit file): every pass checks the
   * tree extends them, the first pass verifies the whole log against the newest, and each verified
   * head is kept. With `tree` to read the stored nodes.
   */
  kept?: { checkpoints: KeptCheckpoints; tree: AuditTreeDal };
}

/**
 * Verifies the Merkle tree at startup (every leaf, node and signed head) and then, every
 * interval, the leaves added since (AuditVerifyService, from the state it verified last). An
 * incremental pass never looks at leaves it verified before, so every full interval a pass goes
 * over the whole tree again, which finds an event, node or head edited after it was verified;
 * that pass must also find the tree verified before (its size and root) as a prefix. Both give
 * the event loop a turn every few milliseconds, so a large log slows requests down, not stops them. That
 * remembered state is this instance's own witness: a newest head below it, or leaves that no
 * longer hash to the root it verified, is a truncation or rewrite that a consistent re-signing
 * could not hide either (the key is not in the database's hands). The database alone decides
 * every pass; the remembered state only adds what this process has already seen. External
 * witnesses (`keywarden audit witness`) do the same from outside the database's trust domain.
 * It also scans the row MACs of secrets, grants, memberships, delegations and versions (row-integrity.ts).
 */
export class AuditChainWatch {
  private verified?: VerifiedState;
  private running?: Promise<void>;
  private timer?: NodeJS.Timeout;
  private fullTimer?: NodeJS.Timeout;
  /** The next pass goes over the whole tree (set by the full-interval timer). */
  private fullDue = false;
  /** Aborted by stop(): a pass over a large log gives up instead of holding the shutdown. */
  private readonly stopping = new AbortController();
  private readonly reported = new Set<string>();
  private readonly gauges: { ok: client.Gauge; seq: client.Gauge; at: client.Gauge; fullAt: client.Gauge; rows: client.Gauge; errors: client.Counter };
  lastVerifiedAt?: number;
  /** When a pass over the whole tree last succeeded (startup's included). */
  lastFullVerifiedAt?: number;
  rowViolations: IntegrityViolation[] = [];

  constructor(private readonly deps: AuditChainWatchDeps) {
    const registers = [deps.registry];
    this.gauges = {
      // read from the shared state when scraped: the sequencer marks it broken too (TreeStateMismatch)
      ok: new client.Gauge({
        name: 'keywarden_audit_chain_ok',
        help: '1 when the last audit log verification passed, 0 when it failed or has not finished',
        registers,
        collect() {
          this.set(deps.state.status === 'ok' ? 1 : 0);
        },
      }),
      seq: new client.Gauge({ name: 'keywarden_audit_chain_verified_tree_size', help: 'Size of the audit Merkle tree this instance has verified', registers }),
      at: new client.Gauge({ name: 'keywarden_audit_chain_last_verified_timestamp_seconds', help: 'When this instance last verified the audit chain successfully (Unix time)', registers }),
      fullAt: new client.Gauge({ name: 'keywarden_audit_chain_last_full_verify_timestamp_seconds', help: 'When this instance last verified the whole audit tree successfully, every leaf again (Unix time)', registers }),
      rows: new client.Gauge({ name: 'keywarden_row_integrity_violations', help: 'Secret, grant, membership, delegation and version rows whose integrity MAC did not verify in the last scan', registers }),
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
    const fullIntervalMs = this.deps.fullIntervalMs ?? 0;
    if (fullIntervalMs > 0) {
      this.fullTimer = setInterval(() => void this.checkAll(), fullIntervalMs);
      this.fullTimer.unref();
    }
  }

  /** A pass over the whole tree: after the one in progress, if any (that may be an incremental one). */
  async checkAll(): Promise<void> {
    this.fullDue = true;
    await this.running?.catch(() => undefined);
    await this.check();
  }

  /** Stops the timer and waits for a pass in progress, so nothing queries a closed database. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    if (this.fullTimer) clearInterval(this.fullTimer);
    this.stopping.abort(new Error('the broker is stopping'));
    await this.running?.catch(() => undefined);
  }

  /** One pass; concurrent callers share the pass in progress. */
  check(): Promise<void> {
    // nothing starts after stop(): the database may be closed already
    if (this.stopping.signal.aborted) return this.running ?? Promise.resolve();
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
      if (this.stopping.signal.aborted) return;
      this.gauges.errors.inc();
      logger.warn({ err: { message: (err as Error).message } }, 'audit chain verification could not run');
    }
    if (this.stopping.signal.aborted) return;
    try {
      await this.scanRows();
    } catch (err) {
      if (this.stopping.signal.aborted) return;
      logger.warn({ err: { message: (err as Error).message } }, 'row integrity scan could not run');
    }
  }

  /** Also called by the sequencer when the stored tree does not match its newest signed head. */
  broken(reason: string, firstBadLeaf?: number): void {
    const { state, logger, clock } = this.deps;
    if (state.status === 'broken') return;
    state.fail(reason, clock(), firstBadLeaf);
    this.gauges.ok.set(0);
    logger.error({ firstBadLeaf, reason }, 'AUDIT LOG VERIFICATION FAILED: audited operations are refused until an operator investigates and restarts the broker');
  }

  private async verifyChain(): Promise<void> {
    const { verifier, state, clock, kept } = this.deps;
    const mismatch = await kept?.checkpoints.check(kept.tree);
    if (mismatch) return this.broken(mismatch.reason, mismatch.firstBadLeaf);
    // the first pass has nothing to start from, so it is a full one too; it recomputes the log's
    // root at the kept checkpoint's size from the leaves themselves
    const full = this.fullDue || !this.verified;
    const { signal } = this.stopping;
    const checkpoint = this.verified ? undefined : kept?.checkpoints.newest()?.note;
    const result = full ? await verifier.verify({ extending: this.verified, checkpoint, signal }) : await verifier.verify({ from: this.verified, signal });
    // a pass that could not run (it threw) leaves the full pass due
    if (full) this.fullDue = false;
    if (!result.ok || !result.state) return this.broken(result.reason ?? 'verification failed', result.firstBadLeaf);
    this.verified = result.state;
    if (result.state.head) kept?.checkpoints.advance(result.state.head);
    if (state.status !== 'broken') state.status = 'ok';
    this.lastVerifiedAt = clock();
    this.gauges.ok.set(1);
    this.gauges.seq.set(result.state.frontier.size);
    this.gauges.at.set(Math.floor(this.lastVerifiedAt / 1000));
    if (full) {
      this.lastFullVerifiedAt = this.lastVerifiedAt;
      this.gauges.fullAt.set(Math.floor(this.lastFullVerifiedAt / 1000));
    }
  }

  private async scanRows(): Promise<void> {
    const violations = await this.deps.rowIntegrity.scan({ signal: this.stopping.signal });
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
