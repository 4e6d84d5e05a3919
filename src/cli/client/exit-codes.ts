/**
 * Exit codes of the client commands (sysexits.h values where one fits). Each command lists its
 * own in its --help (help.ts: exitCodesHelp).
 *
 *   0   ok
 *   1   failed (commands with a verdict: verify deny, audit verify-export broken, sign failed)
 *   64  usage error: bad flags, missing KEYWARDEN_ADDR or credentials        (EX_USAGE)
 *   66  a requested secret is missing or not granted; an input file missing  (EX_NOINPUT)
 *   69  broker unreachable (connection refused, timeout, 5xx) until --timeout,
 *       or at once when it does not speak TLS on an https:// address         (EX_UNAVAILABLE)
 *   70  internal or other error, the broker's certificate does not verify    (EX_SOFTWARE)
 *   77  authentication or authorization denied (401/403)                      (EX_NOPERM)
 *   126 exec: the command was found but could not be executed
 *   127 exec: the command was not found
 */
export const ExitCode = {
  OK: 0,
  USAGE: 64,
  MISSING_SECRET: 66,
  NO_INPUT: 66,
  UNREACHABLE: 69,
  INTERNAL: 70,
  DENIED: 77,
  CANNOT_EXECUTE: 126,
  COMMAND_NOT_FOUND: 127,
} as const;
export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

/** Lines shared by the commands that talk to the broker as a client. */
const CLIENT_CODES = {
  64: 'usage error (bad flags, missing KEYWARDEN_ADDR or credentials)',
  69: 'broker unreachable: retried until --timeout; at once when it does not speak TLS',
  70: "internal or other error (also: the broker's TLS certificate does not verify)",
  77: 'authentication or authorization denied',
} as const;

export const FETCH_EXIT_CODES = {
  0: 'the secrets were written (with --watch: stopped by SIGTERM/SIGINT)',
  ...CLIENT_CODES,
  66: 'a requested secret is missing or not granted',
} as const;

export const EXEC_EXIT_CODES = {
  ...CLIENT_CODES,
  66: 'a requested secret is missing or not granted',
  126: 'the command was found but could not be executed',
  127: 'the command was not found',
} as const;

export const DOCKER_PLUGIN_EXIT_CODES = {
  0: 'stopped by SIGTERM or SIGINT',
  64: CLIENT_CODES[64],
  69: 'the broker does not speak TLS on the https:// KEYWARDEN_ADDR',
  70: "internal or other error (the socket cannot be served, the broker's TLS certificate does not verify)",
  77: 'authentication denied (wrong or revoked client credentials)',
} as const;

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
