import { TooManyRequestsError } from '../core/errors.js';
import type { AuthFailuresDal } from './auth-failures-dal.js';
import type { Clock } from '../core/clock.js';
import { RATE_LIMIT_SCOPES, type RateLimitScope, type Telemetry } from '../core/telemetry.js';

export interface RateLimitPolicy {
  /** Failures allowed per window before further attempts are refused. */
  maxFailures: number;
  windowMs: number;
}

/**
 * Fixed-window failure counters in the database, shared by every broker instance. Only
 * failures are counted, and a check is one indexed read, so successful logins are not slowed
 * by other callers' failures.
 */
export class FailureRateLimiter {
  constructor(
    private readonly dal: AuthFailuresDal,
    private readonly clock: Clock,
    private readonly policies: Record<string, RateLimitPolicy>,
    /** Counts refusals by bucket kind (client, address), never by key. */
    private readonly telemetry?: Telemetry,
  ) {}

  /** Throws 429 with Retry-After when any of the buckets is over its limit. */
  async check(buckets: Array<{ kind: string; key: string }>): Promise<void> {
    const now = this.clock();
    const ids = buckets.map((b) => `${b.kind}:${b.key}`);
    const rows = await this.dal.find(ids);
    for (const row of rows) {
      const kind = String(row.bucket).split(':')[0]!;
      const policy = this.policies[kind];
      if (!policy) continue;
      const windowEnd = Number(row.window_start) + policy.windowMs;
      if (windowEnd > now && row.failures >= policy.maxFailures) {
        const retryAfter = Math.max(1, Math.ceil((windowEnd - now) / 1000));
        if ((RATE_LIMIT_SCOPES as readonly string[]).includes(kind)) this.telemetry?.rateLimitRefusal(kind as RateLimitScope);
        throw new TooManyRequestsError(retryAfter, 'too many failed authentication attempts; try again later');
      }
    }
  }

  async recordFailure(buckets: Array<{ kind: string; key: string }>): Promise<void> {
    const now = this.clock();
    for (const b of buckets) {
      const policy = this.policies[b.kind];
      if (!policy) continue;
      await this.dal.increment(`${b.kind}:${b.key}`, now, policy.windowMs);
    }
  }

  async reset(bucket: { kind: string; key: string }): Promise<void> {
    await this.dal.delete(`${bucket.kind}:${bucket.key}`);
  }

  /** Drops expired windows; called opportunistically. */
  async prune(): Promise<void> {
    const longest = Math.max(...Object.values(this.policies).map((p) => p.windowMs));
    await this.dal.deleteWindowsBefore(this.clock() - longest);
  }
}

/**
 * A budget of use per key and fixed window (milliseconds of work, say), in the same shared
 * table: every instance spends from one window per key, so a key cannot multiply its allowance
 * by spreading its requests over instances. `check` before the work, `spend` after it; two
 * instances that check at once may each run one more piece of work than the budget allows.
 */
export class UsageBudget {
  constructor(
    private readonly dal: AuthFailuresDal,
    private readonly clock: Clock,
    private readonly options: {
      /** Bucket prefix, e.g. `audit-pass` (distinct from the failure kinds). */
      kind: string;
      budget: number;
      windowMs: number;
      /** The refusal's stable code and its detail. */
      code: string;
      detail: string;
    },
  ) {}

  /** Throws 429, with Retry-After until the window ends, when `key` has used its budget. */
  async check(key: string): Promise<void> {
    const { kind, budget, windowMs, code, detail } = this.options;
    const now = this.clock();
    const [row] = await this.dal.find([`${kind}:${key}`]);
    if (!row) return;
    const windowEnd = Number(row.window_start) + windowMs;
    if (windowEnd > now && Number(row.failures) >= budget) {
      throw new TooManyRequestsError(Math.max(1, Math.ceil((windowEnd - now) / 1000)), detail, code);
    }
  }

  /** Adds `amount` to what `key` used in the current window (a new window starts when the last one ended). */
  async spend(key: string, amount: number): Promise<void> {
    await this.dal.increment(`${this.options.kind}:${key}`, this.clock(), this.options.windowMs, Math.max(1, Math.round(amount)));
  }
}
