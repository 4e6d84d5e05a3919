/** Runs a client command action, turning errors into a redacted message and an exit code. */
import { CliError, ExitCode } from './exit-codes.js';
import { warn } from './log.js';

export function runAction<A extends unknown[]>(action: (...args: A) => Promise<number>): (...args: A) => Promise<void> {
  return async (...args: A) => {
    let code: number;
    try {
      code = await action(...args);
    } catch (err) {
      if (err instanceof CliError) {
        warn(err.message);
        code = err.exitCode;
      } else {
        const e = err as NodeJS.ErrnoException;
        warn(`internal error: ${e?.code ? `${e.code} ` : ''}${e?.message ?? String(err)}`);
        code = ExitCode.INTERNAL;
      }
    }
    process.exit(code);
  };
}
