/**
 * Loader for the native execve(2) addon (native/execve.c, built by `node-gyp rebuild` into
 * build/Release/keywarden_execve.node). Node 20 has no process.execve.
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CliError, ExitCode } from './exit-codes.js';

export interface ExecveAddon {
  /** Replaces the process image; returns only by throwing (err.code is an errno name). */
  execve(file: string, argv: string[], env: string[]): never;
}

/** The package root: the nearest ancestor of this module holding package.json (src/ or dist/ layouts). */
function packageRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (fs.existsSync(path.join(dir, 'package.json')) && fs.existsSync(path.join(dir, 'binding.gyp'))) return dir;
    const parent = path.dirname(dir);
    if (parent === dir) throw new CliError(ExitCode.INTERNAL, 'cannot locate the keywarden package root for the execve addon');
    dir = parent;
  }
}

let cached: ExecveAddon | undefined;

export function loadExecve(): ExecveAddon {
  if (cached) return cached;
  const file = path.join(packageRoot(), 'build', 'Release', 'keywarden_execve.node');
  try {
    cached = createRequire(import.meta.url)(file) as ExecveAddon;
  } catch (err) {
    throw new CliError(
      ExitCode.INTERNAL,
      `the execve addon is not available (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); build it with \`npm install\` or \`npx node-gyp rebuild\``,
    );
  }
  if (typeof cached?.execve !== 'function') throw new CliError(ExitCode.INTERNAL, `${file} does not export execve`);
  return cached;
}
