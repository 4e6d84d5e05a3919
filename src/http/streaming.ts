import type { Response } from 'express';

/**
 * Writes an answer line by line from an async source, waiting for the socket to drain when its
 * buffer is full. A client that goes away ends the loop (and with it the source, whose `return`
 * runs): waiting for a 'drain' that never comes would keep the handler, and whatever the source
 * holds, alive for good.
 */
export async function streamLines(res: Response, lines: AsyncIterable<string>): Promise<void> {
  for await (const line of lines) {
    if (res.destroyed || res.writableEnded) return;
    if (!res.write(line)) {
      const open = await new Promise<boolean>((resolve) => {
        const onDrain = () => done(true);
        const onClose = () => done(false);
        const done = (value: boolean) => {
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
