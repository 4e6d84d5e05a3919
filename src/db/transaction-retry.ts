import type { Logger } from 'pino';

/**
 * SQLSTATEs after which PostgreSQL has rolled the whole transaction back and running it again
 * from the start may succeed: a deadlock the server broke by aborting this transaction
 * (40P01), and a serialization failure (40001).
 */
export const RETRYABLE_TRANSACTION_CODES: ReadonlySet<string> = new Set(['40P01', '40001']);

/** True when `err` (or an error it wraps as `cause`) says the transaction may simply be run again. */
export function isRetryableTransactionError(err: unknown): boolean {
  let e = err as { code?: unknown; cause?: unknown } | null | undefined;
  for (let depth = 0; e && depth < 4; e = e.cause as typeof e, depth++) {
    if (typeof e.code === 'string' && RETRYABLE_TRANSACTION_CODES.has(e.code)) return true;
  }
  return false;
}

export interface TransactionRetryOptions {
  /** Runs in total, the first one included. */
  attempts?: number;
  /** Upper bound of the first backoff; doubled per retry, up to `maxDelayMs`. */
  baseDelayMs?: number;
  maxDelayMs?: number;
  logger?: Logger;
  /** Names the work in the log line of a retry. */
  what?: string;
}

export const DEFAULT_TRANSACTION_ATTEMPTS = 3;

/**
 * Runs `attempt` (which must open, and on failure roll back, its own transaction) again when it
 * fails with a retryable error, after a "full jitter" backoff: a random wait between 0 and
 * base * 2^retry, so transactions that collided do not collide again in lockstep. The last
 * failure is rethrown unchanged, for the HTTP error handler to map.
 *
 * `attempt` must be safe to run more than once: no effect outside its transaction (a response
 * sent, an in-memory cache filled, a mirror written) before it has returned.
 */
export async function withTransactionRetry<T>(attempt: (attemptNumber: number) => Promise<T>, options: TransactionRetryOptions = {}): Promise<T> {
  const attempts = Math.max(1, options.attempts ?? DEFAULT_TRANSACTION_ATTEMPTS);
  const base = options.baseDelayMs ?? 15;
  const max = options.maxDelayMs ?? 250;
  for (let n = 1; ; n++) {
    try {
      return await attempt(n);
    } catch (err) {
      if (n >= attempts || !isRetryableTransactionError(err)) throw err;
      const delay = Math.random() * Math.min(max, base * 2 ** (n - 1));
      options.logger?.warn(
        { code: (err as { code?: string }).code, attempt: n, of: attempts, delayMs: Math.round(delay), what: options.what },
        'transaction rolled back by the database; retrying',
      );
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }
}
