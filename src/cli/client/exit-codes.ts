/**
 * Exit codes of `keywarden exec` and `keywarden fetch` (sysexits.h values where one fits):
 *
 *   0   ok
 *   64  usage error: bad flags, missing KEYWARDEN_ADDR or credentials        (EX_USAGE)
 *   66  a requested secret is missing or not granted to this client          (EX_NOINPUT)
 *   69  broker unreachable (connection refused, timeout, 5xx) until --timeout (EX_UNAVAILABLE)
 *   70  internal or other error                                               (EX_SOFTWARE)
 *   77  authentication or authorization denied (401/403)                      (EX_NOPERM)
 *   126 exec: the command was found but could not be executed
 *   127 exec: the command was not found
 */
export const ExitCode = {
  OK: 0,
  USAGE: 64,
  MISSING_SECRET: 66,
  UNREACHABLE: 69,
  INTERNAL: 70,
  DENIED: 77,
  CANNOT_EXECUTE: 126,
  COMMAND_NOT_FOUND: 127,
} as const;
export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

export const EXIT_CODES_HELP = `
Exit codes:
  0    ok
  64   usage error (bad flags, missing KEYWARDEN_ADDR or credentials)
  66   a requested secret is missing or not granted
  69   broker unreachable until --timeout
  70   internal or other error
  77   authentication or authorization denied
  126  (exec) the command could not be executed
  127  (exec) the command was not found`;

/** An error that ends the command with a specific exit code. Messages never contain secret values. */
export class CliError extends Error {
  constructor(
    readonly exitCode: ExitCodeValue,
    message: string,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

export const usageError = (message: string) => new CliError(ExitCode.USAGE, message);
