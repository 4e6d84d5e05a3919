/**
 * Help and usage conventions shared by every `keywarden` command.
 *
 * - Each command lists its own exit codes in its `--help` (and only its own):
 *     exitCodesHelp(cmd, { 0: 'done', 1: 'failed', 64: 'usage error' })
 * - Usage errors exit 64 (EX_USAGE) in every command: commander's own errors (missing required
 *   option, unknown option, bad value, extra argument) through `applyCliConventions`, which
 *   main.ts runs over the whole command tree (commands added with addCommand() do not inherit
 *   the program's settings), and an action's own checks by throwing `usageError(message)`.
 * - Kept free of the broker's modules: `exec` and `fetch` start fast.
 */
import fs from 'node:fs';
import type { Command } from 'commander';
import { CliError, ExitCode } from './client/exit-codes.js';

export { usageError } from './client/exit-codes.js';

/** Exit code → what it means for this command. */
export type ExitCodeTable = Readonly<Record<number, string>>;

/** The "Exit codes:" block of a help text, codes in ascending order. */
export function formatExitCodes(codes: ExitCodeTable): string {
  const rows = Object.entries(codes)
    .map(([code, text]) => [Number(code), text] as const)
    .sort((a, b) => a[0] - b[0]);
  return `\nExit codes:\n${rows.map(([code, text]) => `  ${String(code).padEnd(4)} ${text}`).join('\n')}`;
}

/** Appends this command's exit codes to its own help (never to its parent's or its subcommands'). */
export function exitCodesHelp<C extends Command>(command: C, codes: ExitCodeTable): C {
  command.addHelpText('after', formatExitCodes(codes));
  return command;
}

/** Codes every broker-side command (serve, migrate, init, ...) shares; spread and extend them. */
export const BROKER_EXIT_CODES = {
  1: 'failed (the message says why)',
  64: 'usage error (unknown option, bad or missing value, extra argument)',
  66: 'the root key file is missing while the database holds sealed data (restore it from backup)',
  78: 'invalid configuration (a KEYWARDEN_* setting), an unreachable database, or a listen address in use',
} as const satisfies ExitCodeTable;

/** An error for a file the command was asked to read and cannot (EX_NOINPUT, 66). */
export function noInputError(message: string): CliError {
  return new CliError(ExitCode.NO_INPUT, message);
}

/**
 * Usage errors exit 64 and print the command's help hint, for `command` and every command below
 * it. Run once on the program after every command is registered.
 */
export function applyCliConventions(command: Command): void {
  command.showHelpAfterError('(add --help for usage)');
  command.exitOverride((err) => {
    // --help and --version end with 0; every other commander error is a usage error
    process.exit(err.exitCode === 0 ? 0 : ExitCode.USAGE);
  });
  for (const sub of command.commands) applyCliConventions(sub);
}

/** The package version, read at run time next to the module (src/ under tsx, dist/ when built). */
export function packageVersion(): string {
  try {
    const pkg = JSON.parse(fs.readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: unknown };
    return typeof pkg.version === 'string' ? pkg.version : 'unknown';
  } catch {
    return 'unknown';
  }
}
