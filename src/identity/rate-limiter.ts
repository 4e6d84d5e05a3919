import type { Knex } from 'knex';
import { problems } from '../http/problem.js';

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
    private readonly db: Knex,
    private readonly clock: () => number,
    private readonly policies: Record<string, RateLimitPolicy>,
  ) {}

  /** Throws 429 with Retry-After when any of the buckets is over its limit. */
  async check(buckets: Array<{ kind: string; key: string }>): Promise<void> {
    const now = this.clock();
    const ids = buckets.map((b) => `${b.kind}:${b.key}`);
    const rows = await this.db('auth_failures').whereIn('bucket', ids);
    for (const row of rows) {
      const policy = this.policies[String(row.bucket).split(':')[0]];
      if (!policy) continue;
      const windowEnd = Number(row.window_start) + policy.windowMs;
      if (windowEnd > now && row.failures >= policy.maxFailures) {
        const retryAfter = Math.max(1, Math.ceil((windowEnd - now) / 1000));
        throw problems.tooManyRequests(retryAfter, 'too many failed authentication attempts; try again later');
      }
    }
  }

  async recordFailure(buckets: Array<{ kind: string; key: string }>): Promise<void> {
    const now = this.clock();
    for (const b of buckets) {
      const policy = this.policies[b.kind];
      if (!policy) continue;
      const bucket = `${b.kind}:${b.key}`;
      await this.db.transaction(async (trx) => {
        const row = await trx('auth_failures').where({ bucket }).first();
        if (!row) {
          await trx('auth_failures').insert({ bucket, window_start: now, failures: 1 }).onConflict('bucket').merge({
            failures: trx.raw('auth_failures.failures + 1'),
          });
        } else if (Number(row.window_start) + policy.windowMs <= now) {
          await trx('auth_failures').where({ bucket }).update({ window_start: now, failures: 1 });
        } else {
          await trx('auth_failures').where({ bucket }).increment('failures', 1);
        }
      });
    }
  }

  async reset(bucket: { kind: string; key: string }): Promise<void> {
    await this.db('auth_failures').where({ bucket: `${bucket.kind}:${bucket.key}` }).delete();
  }

  /** Drops expired windows; called opportunistically. */
  async prune(): Promise<void> {
    const longest = Math.max(...Object.values(this.policies).map((p) => p.windowMs));
    await this.db('auth_failures').where('window_start', '<', this.clock() - longest).delete();
  }
}
