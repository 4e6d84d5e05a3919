import { TooManyRequestsError } from '../core/errors.js';

/** Milliseconds of heavy passes per key and window, shared by all instances (identity's UsageBudget). */
export interface PassBudget {
  /** Throws TooManyRequestsError when the key has used its budget. */
  check(key: string): Promise<void>;
  spend(key: string, ms: number): Promise<void>;
}

/** Retry-After of a pass refused because another one is running on this instance. */
export const BUSY_RETRY_AFTER_SECONDS = 5;

/**
 * Bounds what auditors' passes over the whole log cost. A verification or an export of a large
 * log takes seconds of hashing and reading; both give the event loop a turn every few
 * milliseconds (LoopSlicer), so deliveries and token issuance go on meanwhile, and this keeps
 * their number small: one at a time per instance (another one is refused at once with 429
 * `audit_pass_busy`, never queued), and per key a budget of pass time per window, counted in
 * the database for all instances (429 `audit_pass_limit`): a key that runs long passes gets few,
 * one that checks a small log often is not in anyone's way. The background watch's passes are
 * the instance's own and do not take this slot, so no auditor can hold them off.
 */
export class AuditHeavyPasses {
  private current = false;

  constructor(private readonly deps: { budget?: PassBudget } = {}) {}

  /** Whether an auditor's pass is running on this instance now. */
  get busy(): boolean {
    return this.current;
  }

  /** Runs `pass` for `key` as this instance's one heavy pass (the slot is held until it settles). */
  async run<T>(key: string, pass: () => Promise<T>): Promise<T> {
    if (this.current) {
      throw new TooManyRequestsError(BUSY_RETRY_AFTER_SECONDS, 'another verification or export of the audit log is running on this instance; retry later', 'audit_pass_busy');
    }
    this.current = true;
    let started: number | undefined;
    try {
      await this.deps.budget?.check(key);
      started = performance.now();
      return await pass();
    } finally {
      // free before the answer's last byte reaches the client (an export has sent it already), so
      // a client that starts its next pass at once does not find its own last one still running
      this.current = false;
      // a pass that failed cost its time too; a budget that cannot be written (database down)
      // must not turn the pass's own answer into a different error
      if (started !== undefined) await this.deps.budget?.spend(key, performance.now() - started).catch(() => undefined);
    }
  }
}
