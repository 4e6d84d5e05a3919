/** Option parsers shared by `exec` and `fetch`. */
import { InvalidArgumentError } from 'commander';

export const DEFAULT_TIMEOUT_SECONDS = 60;

export function parseSeconds(value: string): number {
  const n = Number(value);
  if (!/^\d+(\.\d+)?$/.test(value.trim()) || !Number.isFinite(n) || n <= 0 || n > 86_400) {
    throw new InvalidArgumentError('expected a number of seconds (> 0, at most 86400)');
  }
  return n;
}

export const CREDENTIALS_HELP = `
Environment:
  KEYWARDEN_ADDR            broker URL (required), e.g. https://keywarden:8750
  KEYWARDEN_CLIENT_ID       client credentials (with KEYWARDEN_CLIENT_SECRET), or
  KEYWARDEN_BOOTSTRAP_TOKEN a single-use bootstrap token, or
  KEYWARDEN_TLS_CERT        mTLS client certificate and key files (with KEYWARDEN_TLS_KEY)
  KEYWARDEN_CA              CA bundle to trust for the broker's TLS certificate

While the broker is unreachable (connection refused, timeout, 5xx) at startup, keywarden retries
with capped exponential backoff until --timeout; authentication failures end it at once.`;
