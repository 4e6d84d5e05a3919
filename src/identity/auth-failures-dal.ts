import type { Database } from '../db/database.js';

/** An auth_failures row: one fixed-window failure counter. */
export interface AuthFailureRow {
  /** `<kind>:<key>`, e.g. `client:kwc_...` or `address:10.0.0.5` */
  bucket: string;
  window_start: number;
  failures: number;
}

/**
 * The auth_failures table: fixed-window counters by bucket, shared by every instance. It counts
 * failed authentications (FailureRateLimiter) and, in `audit-pass:` buckets, the audit log's
 * heavy-pass time per key (UsageBudget).
 */
export class AuthFailuresDal {
  constructor(private readonly db: Database) {}

  async find(buckets: string[]): Promise<AuthFailureRow[]> {
    return this.db.reader<AuthFailureRow>('auth_failures').whereIn('bucket', buckets);
  }

  /**
   * Counts `amount` (one failure by default) in `bucket`; a window older than `windowMs` starts
   * again at `now`. Answers the window as counted.
   */
  async increment(bucket: string, now: number, windowMs: number, amount = 1): Promise<AuthFailureRow> {
    return this.db.transaction(async (trx) => {
      const row = await trx<AuthFailureRow>('auth_failures').where({ bucket }).first();
      if (!row) {
        await trx<AuthFailureRow>('auth_failures').insert({ bucket, window_start: now, failures: amount }).onConflict('bucket').merge({
          failures: trx.raw('auth_failures.failures + ?', [amount]),
        });
      } else if (Number(row.window_start) + windowMs <= now) {
        await trx<AuthFailureRow>('auth_failures').where({ bucket }).update({ window_start: now, failures: amount });
      } else {
        await trx<AuthFailureRow>('auth_failures').where({ bucket }).increment('failures', amount);
      }
      const counted = (await trx<AuthFailureRow>('auth_failures').where({ bucket }).first())!;
      return { bucket, window_start: Number(counted.window_start), failures: Number(counted.failures) };
    });
  }

  async delete(bucket: string): Promise<void> {
    await this.db.reader<AuthFailureRow>('auth_failures').where({ bucket }).delete();
  }

  async deleteWindowsBefore(windowStart: number): Promise<void> {
    await this.db.reader<AuthFailureRow>('auth_failures').where('window_start', '<', windowStart).delete();
  }
}
