import type { Response } from 'express';
import { LoopSlicer } from '../core/loop-slicer.js';

/** How long a stream waits for a client that reads nothing before it drops the connection. */
export const STREAM_STALL_TIMEOUT_MS = 60_000;

/**
 * Writes an answer line by line from an async source, waiting for the socket to drain when its
 * buffer is full. A client that goes away ends the loop (and with it the source, whose `return`
 * runs): waiting for a 'drain' that never comes would keep the handler, and whatever the source
 * holds, alive for good; so would a client that keeps the connection but stops reading, which is
 * dropped after `stallTimeoutMs` without progress. A fast reader never fills the buffer, and on SQLite the source reads
 * synchronously, so the loop also gives the event loop a turn every few milliseconds
 * (LoopSlicer): a large export must not hold every other request until it is sent.
 */
export async function streamLines(res: Response, lines: AsyncIterable<string>, stallTimeoutMs = STREAM_STALL_TIMEOUT_MS): Promise<void> {
  const slicer = new LoopSlicer();
  for await (const line of lines) {
    await slicer.pause();
    if (res.destroyed || res.writableEnded) return;
    if (!res.write(line)) {
      const open = await new Promise<boolean>((resolve) => {
        const onDrain = () => done(true);
        const onClose = () => done(false);
        const stalled = setTimeout(() => {
          // a client that stops reading would otherwise hold what the stream holds (an audit pass slot) for good
          res.destroy();
          done(false);
        }, stallTimeoutMs);
        const done = (value: boolean) => {
          clearTimeout(stalled);
          res.off('drain', onDrain);
          res.off('close', onClose);
          resolve(value);
        };
        res.on('drain', onDrain);
        res.on('close', onClose);
      });
      if (!open) return;
    }
  }
  res.end();
}
