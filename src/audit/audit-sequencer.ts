import type { Logger } from 'pino';
import client from 'prom-client';
import type { Clock } from '../core/clock.js';
import type { Database } from '../db/database.js';
import type { AuditLogSigner } from './audit-log-key.js';
import type { JsonlAuditSink } from './audit-sink.js';
import type { KeptCheckpoints } from './kept-checkpoint.js';
import { LoopSlicer } from '../core/loop-slicer.js';
import { queuedLeafHash, sequenceProgram, TreeStateMismatch, type AuditTreeDal, type SequenceOutcome } from './audit-tree-dal.js';

export interface AuditSequencerDeps {
  db: Database;
  /** Read at each metrics scrape for the queue gauges, and before each batch for the events to hash. */
  tree: AuditTreeDal;
  signer: () => Promise<AuditLogSigner>;
  clock: Clock;
  logger: Logger;
  registry: client.Registry;
  /** KEYWARDEN_AUDIT_SEQUENCE_INTERVAL_MS */
  intervalMs: number;
  /** KEYWARDEN_AUDIT_CHECKPOINT_INTERVAL in ms: an unchanged tree's head is signed again this often (0: never). */
  resignAfterMs: number;
  /** Leaves per sequencing transaction. */
  batch?: number;
  sink?: JsonlAuditSink;
  /** A scrape reuses the queue figures read from the database this recently (default 1000 ms): scrapers do not multiply the query. */
  queueStatsMaxAgeMs?: number;
  /** Called when the stored tree no longer matches its signed head: the log is tampered with. */
  onTreeMismatch?: (reason: string, firstBadLeaf?: number) => void;
  /** Throws (503 audit_chain_broken) once the log failed verification: no head is signed over it. */
  chainGuard?: () => void;
  /** Checkpoints kept outside the database: the tree must extend them, and each run's newest head is kept. */
  kept?: KeptCheckpoints;
}

/**
 * Leaves per sequencing transaction. On SQLite a batch runs synchronously (the port's fast
 * path), so one batch is one stall of the event loop: its leaves are hashed before the
 * transaction, in slices (hashLeaves), and what is left, the UPDATE of the leaf indexes, the node
 * inserts, signing and the commit, is a fixed 1-2 ms and about 10-20 µs per event
 * (bench/loop-stalls.ts). 100 keeps a batch at a few milliseconds; a backlog drains in batches
 * with the event loop let in between. Every batch signs a tree head, so a smaller one costs a
 * head row per 100 events under sustained load.
 */
const DEFAULT_BATCH = { postgres: 1000, sqlite: 100 } as const;
/** A run drains the queue in batches, but never for longer than this, so stop() stays prompt. */
const MAX_BATCHES_PER_RUN = 50;

/**
 * Turns queued events into leaves of the Merkle tree, one sequencing transaction per batch
 * (sequenceProgram). Every instance runs one on a timer; the database lets one at a time in,
 * so when an instance dies the next tick of another one carries on. It also runs early when this
 * instance has queued a batch's worth of events since its last run.
 */
export class AuditSequencer {
  private timer?: NodeJS.Timeout;
  private running?: Promise<SequenceOutcome[]>;
  private appendedSinceRun = 0;
  private stopped = false;
  private readonly batch: number;
  private readonly metrics: { sequenced: client.Counter; runs: client.Counter<'status'>; delay: client.Histogram; treeSize: client.Gauge; duration: client.Histogram };

  constructor(private readonly deps: AuditSequencerDeps) {
    this.batch = deps.batch ?? DEFAULT_BATCH[deps.db.dialect];
    const registers = [deps.registry];
    this.metrics = {
      sequenced: new client.Counter({ name: 'keywarden_audit_sequenced_events_total', help: 'Audit events this instance gave a leaf index', registers }),
      runs: new client.Counter({ name: 'keywarden_audit_sequencer_runs_total', help: 'Sequencing transactions by outcome (sequenced, resigned, idle, busy: another instance held the sequencer lock, error)', labelNames: ['status'], registers }),
      delay: new client.Histogram({
        name: 'keywarden_audit_inclusion_delay_seconds',
        help: 'Time from an audit event being recorded to its inclusion in a signed tree head',
        buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30],
        registers,
      }),
      treeSize: new client.Gauge({ name: 'keywarden_audit_tree_size', help: 'Leaves in the newest signed tree head this instance wrote', registers }),
      duration: new client.Histogram({ name: 'keywarden_audit_sequencer_batch_seconds', help: 'Duration of one sequencing transaction', buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1], registers }),
    };
    // read from the database at a scrape (one indexed count over the queue's partial index): the
    // queue is shared by every instance, so no in-process count could say how deep it is
    const maxAgeMs = deps.queueStatsMaxAgeMs ?? 1000;
    let stats: { at: number; value: Promise<{ queued: number; oldestTs: number | null } | undefined> } | undefined;
    const queueStats = () => {
      const now = performance.now();
      if (!stats || now - stats.at >= maxAgeMs) stats = { at: now, value: deps.tree.queueStats().catch(() => undefined) };
      return stats.value;
    };
    new client.Gauge({
      name: 'keywarden_audit_queue_depth',
      help: 'Audit events recorded but not yet in the Merkle tree (all instances)',
      registers,
      async collect() {
        const s = await queueStats();
        if (s) this.set(s.queued);
      },
    });
    new client.Gauge({
      name: 'keywarden_audit_queue_oldest_seconds',
      help: 'Age of the oldest audit event waiting for the sequencer (0 when none): sequencing has stalled when it grows',
      registers,
      async collect() {
        const s = await queueStats();
        if (s) this.set(s.oldestTs === null ? 0 : Math.max(0, deps.clock() - s.oldestTs) / 1000);
      },
    });
  }

  start(): void {
    if (this.deps.intervalMs <= 0) return;
    this.timer = setInterval(() => void this.run().catch(() => undefined), this.deps.intervalMs);
    this.timer.unref();
  }

  /** Stops the timer and waits for a run in progress. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    await this.running?.catch(() => undefined);
  }

  /** Told by the audit service how many events it queued; a batch's worth starts a run now. */
  noteAppended(count: number): void {
    this.appendedSinceRun += count;
    if (this.appendedSinceRun >= this.batch && !this.running && !this.stopped) void this.run().catch(() => undefined);
  }

  /** One run: batches until the queue is empty (or another instance holds the lock). Concurrent callers share it. */
  run(): Promise<SequenceOutcome[]> {
    this.running ??= this.runBatches().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  /**
   * Runs until every event queued before the call is in a signed tree head (tests, the admin
   * route, shutdown). Waits for another instance's run when it holds the lock, up to `timeoutMs`.
   */
  async flush(timeoutMs = 10_000): Promise<SequenceOutcome> {
    const deadline = Date.now() + timeoutMs;
    await this.running?.catch(() => undefined);
    for (;;) {
      const outcomes = await this.run();
      const last = outcomes[outcomes.length - 1];
      // a run stops after MAX_BATCHES_PER_RUN full batches: the queue may hold more
      const drained = last && last.status !== 'busy' && !(last.status === 'sequenced' && last.sequenced >= this.batch);
      if (drained) return last;
      if (Date.now() > deadline) throw new Error(last?.status === 'busy' ? 'the audit sequencer lock stayed busy' : 'the audit queue did not drain in time');
      if (last?.status === 'busy') await new Promise((r) => setTimeout(r, 50));
    }
  }

  private async runBatches(): Promise<SequenceOutcome[]> {
    this.appendedSinceRun = 0;
    this.deps.chainGuard?.();
    const signer = await this.deps.signer();
    const outcomes: SequenceOutcome[] = [];
    let newest: Extract<SequenceOutcome, { head: unknown }>['head'] | undefined;
    try {
      for (let i = 0; i < MAX_BATCHES_PER_RUN; i++) {
        let outcome: SequenceOutcome;
        let started = process.hrtime.bigint();
        try {
          const leafHashes = await this.hashLeaves();
          started = process.hrtime.bigint();
          outcome = await this.deps.db.writeProgram(
            sequenceProgram({ batch: this.batch, now: this.deps.clock(), resignAfterMs: this.deps.resignAfterMs > 0 ? this.deps.resignAfterMs : Infinity, sign: signer.sign, open: signer.open, kept: this.deps.kept?.list(), leafHashes }),
          );
        } catch (err) {
          this.metrics.runs.inc({ status: 'error' });
          if (err instanceof TreeStateMismatch) {
            this.deps.logger.error({ reason: err.message, firstBadLeaf: err.firstBadLeaf }, 'audit sequencer refused to extend a tree that does not match its signed head or the checkpoint kept outside the database');
            this.deps.onTreeMismatch?.(err.message, err.firstBadLeaf);
          } else {
            this.deps.logger.warn({ err: { message: (err as Error).message, code: (err as { code?: string }).code } }, 'audit sequencing failed; queued events stay queued');
          }
          throw err;
        }
        this.metrics.duration.observe(Number(process.hrtime.bigint() - started) / 1e9);
        this.metrics.runs.inc({ status: outcome.status });
        outcomes.push(outcome);
        if (outcome.status !== 'sequenced' && outcome.status !== 'resigned') break;
        this.published(outcome);
        newest = outcome.head;
        if (outcome.sequenced < this.batch) break;
        // let requests in between batches of a backlog
        await new Promise((r) => setImmediate(r));
      }
    } finally {
      // once per run, not per batch (an fsync each): the head this instance signed last, over a
      // tree the program found extending every kept checkpoint
      if (newest) this.deps.kept?.advance(newest);
    }
    return outcomes;
  }

  /**
   * The leaf hashes of the next batch, computed before its transaction and giving the event loop
   * a turn after each millisecond (LoopSlicer): hashing is most of a batch's work, and on SQLite
   * the transaction runs in one synchronous step. Events queued meanwhile, or taken by another
   * instance, are simply hashed in the transaction or not needed.
   */
  private async hashLeaves(): Promise<Map<number, Buffer>> {
    const hashes = new Map<number, Buffer>();
    const slicer = new LoopSlicer();
    for (const row of await this.deps.tree.queuedEvents(this.batch)) {
      hashes.set(Number(row.seq), queuedLeafHash(row));
      await slicer.pause();
    }
    return hashes;
  }

  private published(outcome: Extract<SequenceOutcome, { head: unknown }>): void {
    const now = this.deps.clock();
    this.metrics.sequenced.inc(outcome.sequenced);
    this.metrics.treeSize.set(outcome.treeSize);
    for (const ts of outcome.eventTimes) this.metrics.delay.observe(Math.max(0, now - ts) / 1000);
    try {
      this.deps.sink?.writeTreeHead(outcome.head);
    } catch (err) {
      this.deps.logger.error({ err: { message: (err as Error).message } }, 'audit file mirror failed');
    }
  }
}
