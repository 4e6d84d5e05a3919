/** Milliseconds since the epoch, like Date.now; tests pass a controllable one. */
export type Clock = () => number;

export const systemClock: Clock = () => Date.now();

/** An epoch-millisecond timestamp as ISO 8601 (UTC), or null when there is none. */
export function iso(ms: number | null | undefined): string | null {
  return ms === null || ms === undefined ? null : new Date(ms).toISOString();
}
