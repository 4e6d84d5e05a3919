/**
 * The release gate's trust epoch (migration 013): one number that triggers move on every write
 * to trust policies, signing keys and their versions, trusted issuers and registry credentials.
 * Every instance polls it; what the gate keeps in memory (the policies, and decisions) is used
 * only under the generation it was read under, and only while that generation was confirmed
 * recently. The number is also part of every cache key the gate stores in the database.
 *
 * Bound: a change committed on any instance (or written into the database by hand) stops being
 * served from any instance's memory within TRUST_STALENESS_BOUND_MS. The instance that made the
 * change reads the epoch again before answering its caller (`refresh`), so there it takes
 * effect at once.
 */
import type { Logger } from 'pino';

/** How often each instance reads the epoch. */
export const TRUST_EPOCH_POLL_MS = 250;

/**
 * The documented bound (ms). A generation is used only while it was confirmed by a read that
 * *started* less than bound − poll ago, so a read that began after a change saw it, whatever the
 * poll's own timing; when polls fail (the database is down) or fall behind (a stalled loop),
 * `current()` answers undefined and the gate reads the epoch before deciding.
 */
export const TRUST_STALENESS_BOUND_MS = 1000;

export class TrustEpoch {
  private generation: number | undefined;
  /** performance.now() at the start of the newest read that confirmed `generation`. */
  private confirmedAt = Number.NEGATIVE_INFINITY;
  /** performance.now() of the newest `expire`: a read that started before it confirms nothing. */
  private expiredAt = Number.NEGATIVE_INFINITY;
  private readonly listeners = new Set<() => void>();
  private timer: NodeJS.Timeout | undefined;
  private polling: Promise<void> | undefined;
  private readonly usableForMs: number;

  constructor(
    /** Reads the generation (one primary-key row). */
    private readonly read: () => Promise<number>,
    private readonly options: { pollMs?: number; boundMs?: number; logger?: Logger; now?: () => number } = {},
  ) {
    this.usableForMs = (options.boundMs ?? TRUST_STALENESS_BOUND_MS) - (options.pollMs ?? TRUST_EPOCH_POLL_MS);
  }

  private now(): number {
    return this.options.now ? this.options.now() : performance.now();
  }

  /** The generation to stamp a read with (take it before reading); undefined when not confirmed recently enough. */
  current(): number | undefined {
    return this.now() - this.confirmedAt < this.usableForMs ? this.generation : undefined;
  }

  /** The confirmed generation, reading the epoch first when it is not (fails when the database does). */
  async confirmed(): Promise<number> {
    const g = this.current();
    if (g !== undefined) return g;
    await this.refresh();
    return this.generation!;
  }

  /** Whether an audited action changes what the gate's decisions depend on (the writer then calls `expire`). */
  static changesTrust(action: string): boolean {
    return /^(policy|signingkey|trustedissuer|registry\.credentials)\./.test(action);
  }

  /** Called whenever the generation moves (in-memory caches drop what they hold). */
  onChange(listener: () => void): void {
    this.listeners.add(listener);
  }

  /**
   * This instance committed a trust change: until the epoch is read again (by the next decision,
   * which waits for it), nothing read under the old generation is used. Synchronous, so it takes
   * effect before the writer's caller is answered.
   */
  expire(): void {
    this.expiredAt = this.now();
    this.confirmedAt = Number.NEGATIVE_INFINITY;
  }

  /** Reads the epoch now (the poll, and a decision after `expire` or a failed poll). */
  async refresh(): Promise<void> {
    const started = this.now();
    const generation = await this.read();
    if (!Number.isSafeInteger(generation)) throw new Error('gate_trust_epoch has no generation row');
    // reads can finish out of order: an older generation must not replace a newer one
    if (this.generation === undefined || generation > this.generation) {
      this.generation = generation;
      for (const listener of this.listeners) listener();
    }
    // a read that started before an `expire` may have missed the change it announced
    if (started > this.confirmedAt && started >= this.expiredAt) this.confirmedAt = started;
  }

  start(): void {
    if (this.timer) return;
    const tick = () => {
      this.polling ??= this.refresh()
        .catch((err: unknown) => {
          // memory stops being used by itself once the last confirmation is too old
          this.options.logger?.debug({ err: { message: (err as Error).message } }, 'gate trust epoch poll failed');
        })
        .finally(() => {
          this.polling = undefined;
        });
    };
    tick();
    this.timer = setInterval(tick, this.options.pollMs ?? TRUST_EPOCH_POLL_MS);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.polling;
  }
}
