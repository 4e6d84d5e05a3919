/**
 * Plugin calls that reach no other broker route (volume Path/Get/List/Capabilities/Unmount/Remove,
 * authz allows of reads, answers served from the decision cache, refusals made before the broker
 * was asked) are audited by reporting them to `POST /v1/client/docker-plugin/events` in batches.
 * Best effort by design: the queue is bounded, a report never delays a Docker call, and what is
 * dropped (queue full, broker down) is logged with a count.
 */
import type { PluginEvent } from './broker-api.js';

export interface EventSink {
  reportEvents(events: PluginEvent[]): Promise<void>;
}

export interface EventReporterOptions {
  /** Events held at most; beyond that new ones are dropped (and counted). */
  maxQueue?: number;
  /** The broker takes at most 100 events a request. */
  batchSize?: number;
  flushIntervalMs?: number;
  log: (message: string) => void;
}

export class EventReporter {
  private readonly queue: PluginEvent[] = [];
  private readonly maxQueue: number;
  private readonly batchSize: number;
  private timer?: NodeJS.Timeout;
  private sending?: Promise<void>;
  private droppedFull = 0;
  /** Count of events lost so far (queue full or a failed report); for logs and tests. */
  dropped = 0;
  sent = 0;

  constructor(
    private readonly sink: EventSink,
    private readonly options: EventReporterOptions,
  ) {
    this.maxQueue = options.maxQueue ?? 2000;
    this.batchSize = Math.min(100, options.batchSize ?? 100);
    this.timer = setInterval(() => void this.flush(), options.flushIntervalMs ?? 2000);
    this.timer.unref();
  }

  /** Queues an event; never throws, never waits. */
  report(event: PluginEvent): void {
    if (this.queue.length >= this.maxQueue) {
      this.dropped++;
      if (this.droppedFull++ % 100 === 0) this.options.log(`audit event queue full (${this.maxQueue}); dropped ${this.droppedFull} event(s) so far`);
      return;
    }
    this.queue.push({ ...event, reason: event.reason?.slice(0, 500) });
    if (this.queue.length >= this.batchSize) void this.flush();
  }

  /** Sends what is queued, one batch at a time; resolves when the queue was handed over or dropped. */
  flush(): Promise<void> {
    if (this.sending) return this.sending;
    if (!this.queue.length) return Promise.resolve();
    this.sending = (async () => {
      try {
        while (this.queue.length) {
          const batch = this.queue.splice(0, this.batchSize);
          try {
            await this.sink.reportEvents(batch);
            this.sent += batch.length;
          } catch (err) {
            this.dropped += batch.length;
            this.options.log(`could not report ${batch.length} plugin audit event(s) to the broker; dropped (${(err as Error).message})`);
            return;
          }
        }
      } finally {
        this.sending = undefined;
      }
    })();
    return this.sending;
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.flush();
  }
}
