import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import type { SqliteSynchronous } from './connection.js';

/**
 * Internal to src/db/: Database starts one beside the SQLite fast path.
 *
 * Checkpoints the SQLite write-ahead log from a worker thread, on a connection of its own.
 * SQLite otherwise checkpoints inside the commit that takes the log past 1,000 pages: a commit
 * on the event loop (better-sqlite3 is synchronous) that copies megabytes into the database file
 * and fsyncs it, 20 to 140 ms on this machine's disk under load (bench/loop-stalls.ts), which
 * every request waits for. A PASSIVE checkpoint takes no lock that writers or readers wait for
 * and never calls the busy handler, so the worker can run one every `intervalMs` while the
 * broker writes. The broker's own connections keep an automatic checkpoint at a much larger log
 * (AUTOCHECKPOINT_FALLBACK_PAGES) in case the worker falls behind or dies: the log stays bounded
 * either way, and correctness never depends on the worker.
 */
export class SqliteCheckpointer {
  private readonly worker: Worker;
  private closed = false;
  /** The last checkpoint's figures (tests, diagnostics): frames in the log, and frames copied to the database. */
  last?: { log: number; checkpointed: number; busy: number };
  /** Checkpoints run so far. */
  runs = 0;

  constructor(filename: string, synchronous: SqliteSynchronous, intervalMs = DEFAULT_CHECKPOINT_INTERVAL_MS) {
    const driver = createRequire(import.meta.url).resolve('better-sqlite3');
    // plain JavaScript, evaluated: a worker thread does not take the TypeScript loader tests and benches run under
    this.worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { driver, filename, synchronous: synchronous === 'normal' ? 'NORMAL' : 'FULL', intervalMs } });
    this.worker.on('message', (m: { log: number; checkpointed: number; busy: number }) => {
      this.last = m;
      this.runs++;
    });
    // a worker that fails (the file gone, say) leaves checkpoints to the connections' fallback
    this.worker.on('error', () => undefined);
    this.worker.unref();
  }

  /** Asks the worker to close its connection and end; resolves when it has (or, stuck, was terminated). */
  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    return new Promise((resolve) => {
      const stuck = setTimeout(() => void this.worker.terminate(), 2_000);
      this.worker.once('exit', () => {
        clearTimeout(stuck);
        resolve();
      });
      this.worker.postMessage('close');
    });
  }
}

/** How often the worker checkpoints: the log grows by at most what the broker writes in that time. */
export const DEFAULT_CHECKPOINT_INTERVAL_MS = 250;

/** The automatic checkpoint of the broker's own connections (about 40 MB of log): only if the worker falls behind. */
export const AUTOCHECKPOINT_FALLBACK_PAGES = 10_000;

const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.driver);
const db = new Database(workerData.filename, { fileMustExist: true });
db.pragma('synchronous = ' + workerData.synchronous);
const run = () => {
  try {
    const [r] = db.pragma('wal_checkpoint(PASSIVE)');
    parentPort.postMessage({ busy: r.busy, log: r.log, checkpointed: r.checkpointed });
  } catch {
    // the file is locked for something else (a schema change): the next turn tries again
  }
};
const timer = setInterval(run, workerData.intervalMs);
parentPort.on('message', (m) => {
  if (m !== 'close') return;
  clearInterval(timer);
  try { db.close(); } catch {}
  parentPort.close();
});
`;
