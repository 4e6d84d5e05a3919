/**
 * tmpfs mounts for the volume driver: secret files live in memory only. Mounting needs
 * CAP_SYS_ADMIN (root, or the managed plugin's `linux.capabilities`).
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import { promisify } from 'node:util';
import { UnavailableError } from '../core/errors.js';

const run = promisify(execFile);

/** tmpfs sizes as mount(8) takes them: bytes, or k/m/g; at most 1 GiB (secrets are small). */
export const SIZE_PATTERN = /^[1-9][0-9]{0,9}[kmg]?$/;

function sizeBytes(size: string): number {
  const unit = size.at(-1)!;
  const factor = unit === 'k' ? 1024 : unit === 'm' ? 1024 ** 2 : unit === 'g' ? 1024 ** 3 : 1;
  return parseInt(size, 10) * factor;
}

export function validSize(size: string): boolean {
  return SIZE_PATTERN.test(size) && sizeBytes(size) <= 1024 ** 3;
}

/** Decodes the octal escapes mountinfo uses for spaces and the like. */
const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));

export function isMountPoint(dir: string): boolean {
  let info: string;
  try {
    info = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return false;
  }
  return info.split('\n').some((line) => line.split(' ')[4] !== undefined && unescape(line.split(' ')[4]!) === dir);
}

export async function mountTmpfs(dir: string, size: string): Promise<void> {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  try {
    await run('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0755,nosuid,nodev,noexec`, 'keywarden', dir], { timeout: 15_000 });
  } catch (err) {
    throw new UnavailableError(`cannot mount a tmpfs at ${dir}: ${((err as { stderr?: string }).stderr || (err as Error).message).trim()}`, { code: 'mount_failed' });
  }
}

/**
 * Unmounts and removes the directory. Unmounting a tmpfs frees its pages, so nothing of the
 * values is left to overwrite. A busy mount (a container still holds it) is detached lazily.
 */
export async function unmountTmpfs(dir: string): Promise<void> {
  if (isMountPoint(dir)) {
    try {
      await run('umount', [dir], { timeout: 15_000 });
    } catch {
      try {
        await run('umount', ['-l', dir], { timeout: 15_000 });
      } catch (err) {
        throw new UnavailableError(`cannot unmount ${dir}: ${((err as { stderr?: string }).stderr || (err as Error).message).trim()}`, { code: 'unmount_failed' });
      }
    }
  }
  // never recursive: if the unmount did not happen, the files under it are not ours to delete blindly
  try {
    fs.rmdirSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}
