import { setImmediate as nextTurn } from 'node:timers/promises';

/** How long a long pass may keep the event loop before it lets other work in. */
export const DEFAULT_SLICE_MS = 1;

/**
 * Cuts a long synchronous-looking pass (whole-log verification, exports) into slices. SQLite
 * answers synchronously (better-sqlite3), and awaiting a promise that is already settled never
 * lets the event loop poll its sockets, so a loop of `await`ed reads and hashes holds every
 * other request until it ends. `pause()` gives the loop a turn (setImmediate: timers and I/O
 * run first) once `sliceMs` of work have run since the last turn; it costs a clock read
 * otherwise, so callers call it once per item.
 */
export class LoopSlicer {
  private sliceStart = performance.now();

  /** `signal`: the pass is given up (pause() throws its reason) once it is aborted, e.g. at shutdown. */
  constructor(
    private readonly signal?: AbortSignal,
    private readonly sliceMs = DEFAULT_SLICE_MS,
  ) {}

  async pause(): Promise<void> {
    this.signal?.throwIfAborted();
    if (performance.now() - this.sliceStart < this.sliceMs) return;
    await nextTurn();
    this.sliceStart = performance.now();
  }
}
