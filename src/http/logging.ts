import crypto from 'node:crypto';
import fs from 'node:fs';
import pino, { type Logger } from 'pino';
import type { RequestHandler } from 'express';

/**
 * Redaction is defensive: the request serializer below never includes headers or bodies, so no
 * secret value, client secret or token can reach a log line through it.
 *
 * Lines go to `destination`, by default the process's stdout through a NonBlockingLog: writing a
 * log line never blocks the broker, whoever reads (or stopped reading) its output.
 */
export function createLogger(level: string, destination: LogDestination = stdoutLog()): Logger {
  return pino(
    {
      level,
      base: { service: 'keywarden' },
      redact: {
        paths: ['req.headers.authorization', 'headers.authorization', '*.client_secret', '*.clientSecret', '*.content', '*.value', '*.token', '*.key'],
        censor: '[redacted]',
      },
    },
    destination,
  );
}

/** What pino writes its lines to. */
export interface LogDestination {
  write(line: string): void;
}

/**
 * A log output that never blocks the process. pino's default destination flushes synchronously
 * when the process exits; with stdout a pipe whose reader stopped reading (or is gone but the
 * pipe is held open), that flush, and with it the exit after SIGTERM, waited forever. Here:
 *
 * - lines are written one batch at a time with fs.write, on libuv's thread pool: a full pipe
 *   stalls that write, never the event loop, signal handlers or the shutdown;
 * - at most `maxQueuedBytes` wait; past that, lines are dropped and counted, and one line says
 *   how many once the output moves again;
 * - a broken output (EPIPE: the reader closed the pipe; EBADF) ends logging for good, silently;
 * - nothing is flushed synchronously at exit: drain(timeoutMs) waits a bounded time.
 */
export class NonBlockingLog implements LogDestination {
  private queue: string[] = [];
  private queuedBytes = 0;
  private writing = false;
  private broken = false;
  private dropped = 0;
  private idle: Array<() => void> = [];

  constructor(
    private readonly fd: number,
    private readonly maxQueuedBytes = 4 * 1024 * 1024,
  ) {}

  write(line: string): void {
    if (this.broken) return;
    const bytes = Buffer.byteLength(line);
    if (this.queuedBytes + bytes > this.maxQueuedBytes) {
      this.dropped++;
      return;
    }
    this.queue.push(line);
    this.queuedBytes += bytes;
    if (!this.writing) this.writeNext();
  }

  /** Lines dropped so far because the output did not keep up. */
  get droppedLines(): number {
    return this.dropped;
  }

  /** Resolves when every queued line is written, the output broke, or `timeoutMs` passed. */
  drain(timeoutMs: number): Promise<void> {
    if (!this.writing || this.broken) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(done, timeoutMs);
      timer.unref();
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.idle.push(done);
    });
  }

  private writeNext(): void {
    if (this.dropped && this.queuedBytes < this.maxQueuedBytes / 2) {
      this.queue.push(`${JSON.stringify({ level: 40, time: Date.now(), service: 'keywarden', dropped: this.dropped, msg: 'log lines dropped: the log output was not read fast enough' })}\n`);
      this.dropped = 0;
    }
    if (!this.queue.length) {
      this.writing = false;
      for (const done of this.idle.splice(0)) done();
      return;
    }
    this.writing = true;
    const buffer = Buffer.from(this.queue.join(''));
    this.queue = [];
    this.queuedBytes = 0;
    this.writeBuffer(buffer);
  }

  private writeBuffer(buffer: Buffer): void {
    fs.write(this.fd, buffer, 0, buffer.length, null, (err, written) => {
      if (err) {
        if (err.code === 'EAGAIN') {
          // a non-blocking descriptor whose pipe is full: try again shortly, without holding the process open
          setTimeout(() => this.writeBuffer(buffer), 50).unref();
          return;
        }
        this.broken = true;
        this.queue = [];
        this.queuedBytes = 0;
        this.writing = false;
        for (const done of this.idle.splice(0)) done();
        return;
      }
      if (written < buffer.length) this.writeBuffer(buffer.subarray(written));
      else this.writeNext();
    });
  }
}

let stdoutDestination: NonBlockingLog | undefined;

/** The process's stdout as a NonBlockingLog, one per process (every logger shares it). */
export function stdoutLog(): NonBlockingLog {
  stdoutDestination ??= new NonBlockingLog(1);
  return stdoutDestination;
}

/**
 * Writing to a stdout or stderr whose reader is gone raises EPIPE on the stream; unhandled, it
 * would crash the broker mid-request or mid-shutdown. Those errors are ignored (there is nobody
 * left to tell); any other stays an error.
 */
export function ignoreBrokenStdio(): void {
  for (const stream of [process.stdout, process.stderr]) {
    if (stream.listeners('error').includes(onStdioError)) continue;
    stream.on('error', onStdioError);
  }
}

function onStdioError(err: NodeJS.ErrnoException): void {
  if (err.code === 'EPIPE' || err.code === 'ECONNRESET' || err.code === 'EBADF') return;
  throw err;
}

const REQUEST_ID = /^[A-Za-z0-9._-]{1,64}$/;

/**
 * One access-log line per request, with the request id. It logs method, path (never the query
 * or headers), status and duration, and costs nothing beyond the id when the level is above
 * info: no per-request child logger is built.
 */
export function requestLogger(logger: Logger): RequestHandler {
  return (req, res, next) => {
    const incoming = req.headers['x-request-id'];
    const id = typeof incoming === 'string' && REQUEST_ID.test(incoming) ? incoming : crypto.randomUUID();
    (req as { id?: string }).id = id;
    res.setHeader('X-Request-Id', id);
    const started = process.hrtime.bigint();
    res.once('finish', () => {
      const level = res.statusCode >= 500 ? 'error' : 'info';
      if (!logger.isLevelEnabled(level)) return;
      logger[level](
        {
          reqId: id,
          req: { method: req.method, path: req.path, remoteAddress: req.socket.remoteAddress },
          res: { statusCode: res.statusCode },
          responseTime: Number(process.hrtime.bigint() - started) / 1e6,
        },
        'request completed',
      );
    });
    next();
  };
}
