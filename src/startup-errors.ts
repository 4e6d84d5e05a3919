/**
 * A start-up failure the operator fixes outside the broker: an unreachable database, a listen
 * address in use. Its message is one line that names what was tried (never a password) and what
 * to check; the broker's commands exit with `exitCode` (78, like invalid configuration) instead
 * of printing a stack trace.
 */
export const CONFIGURATION_EXIT_CODE = 78;

export class StartupError extends Error {
  readonly exitCode: number = CONFIGURATION_EXIT_CODE;

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StartupError';
  }
}
