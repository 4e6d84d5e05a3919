import fs from 'node:fs';
import type { Logger } from 'pino';

/**
 * The data directory holds the database and the root key: only the broker's user may list or
 * enter it. A directory made by an installer or an older version (often 0755) is tightened
 * on every start; a missing one is left to whatever creates it (always with mode 0700). One
 * the broker's user does not own (a mounted volume, say) is not chmodded: that is a warning
 * for the operator, not a reason to refuse to start.
 */
export function secureDataDir(dir: string, logger: Pick<Logger, 'warn'>): void {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(dir);
  } catch (err) {
    // not there yet: whatever creates it (serve, the key file, SQLite) makes it 0700
    if ((err as NodeJS.ErrnoException | null)?.code === 'ENOENT') return;
    throw err;
  }
  if ((stat.mode & 0o777) === 0o700) return;
  const owner = typeof process.getuid === 'function' ? process.getuid() : undefined;
  if (owner !== undefined && stat.uid !== owner) {
    logger.warn({ dataDir: dir, mode: (stat.mode & 0o777).toString(8), owner: stat.uid }, 'data directory is owned by another user; cannot restrict it to mode 0700');
    return;
  }
  try {
    fs.chmodSync(dir, 0o700);
  } catch (err) {
    logger.warn({ dataDir: dir, err: { message: (err as Error).message } }, 'cannot restrict the data directory to mode 0700');
  }
}
