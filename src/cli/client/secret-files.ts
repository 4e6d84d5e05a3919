/**
 * Secret files for `keywarden fetch`: containment-checked paths, atomic writes (exclusive temp
 * file in DIR, fchmod/fchown, fsync, rename over the target, fsync DIR), and a manifest of the
 * files keywarden wrote so later runs remove only those when a secret goes away.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { CliError, ExitCode } from './exit-codes.js';

export const MANIFEST_NAME = '.keywarden-manifest.json';
const TEMP_PREFIX = '.keywarden-tmp-';
const TEMP_PATTERN = /^\.keywarden-tmp-[0-9a-f]{16}$/;
export const DEFAULT_MODE = 0o400;

export class UnsafeNameError extends CliError {
  constructor(name: string) {
    super(ExitCode.INTERNAL, `refusing secret name ${JSON.stringify(name)}: it would not be a plain file inside the target directory`);
  }
}

/**
 * DIR/<name>, refusing anything that could land outside DIR or be confused with keywarden's own
 * files: empty, '.'-prefixed (also covers '.' and '..'), containing '/', '\\' or NUL, absolute.
 * The broker already restricts names; this is checked regardless, with path.resolve containment.
 */
export function secretPath(dir: string, name: string): string {
  if (!name || name.startsWith('.') || /[/\\\0]/.test(name) || path.isAbsolute(name) || name.length > 255) {
    throw new UnsafeNameError(name);
  }
  const root = path.resolve(dir);
  const target = path.resolve(root, name);
  if (path.dirname(target) !== root || path.basename(target) !== name) throw new UnsafeNameError(name);
  return target;
}

/** Octal metadata mode ("0440", "440") → permission bits; default 0400. Special bits are dropped. */
export function parseMode(mode: string | undefined): number {
  if (mode === undefined || mode === '') return DEFAULT_MODE;
  if (!/^0?[0-7]{3,4}$/.test(mode)) throw new CliError(ExitCode.INTERNAL, `invalid file mode ${JSON.stringify(mode)} in secret metadata`);
  return parseInt(mode, 8) & 0o777;
}

/** Looks a name up in an /etc/passwd-style file (name:x:id:...); numeric strings are ids. */
export function resolveId(value: string, file: string): number | undefined {
  if (/^\d+$/.test(value)) return Number(value);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  for (const line of text.split('\n')) {
    const fields = line.split(':');
    if (fields[0] === value && fields.length >= 3 && /^\d+$/.test(fields[2])) return Number(fields[2]);
  }
  return undefined;
}

export interface FileMetadata {
  mode?: string;
  owner?: string;
  group?: string;
}

export interface WriteOptions {
  warn: (message: string) => void;
  passwdFile?: string;
  groupFile?: string;
}

function fsyncDir(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** uid/gid to apply, or -1 for "leave as is". Unknown names produce a warning. */
function ownership(name: string, meta: FileMetadata, opts: WriteOptions): { uid: number; gid: number } {
  let uid = -1;
  let gid = -1;
  if (meta.owner) {
    const id = resolveId(meta.owner, opts.passwdFile ?? '/etc/passwd');
    if (id === undefined) opts.warn(`${name}: unknown owner ${meta.owner}; leaving the file owner unchanged`);
    else uid = id;
  }
  if (meta.group) {
    const id = resolveId(meta.group, opts.groupFile ?? '/etc/group');
    if (id === undefined) opts.warn(`${name}: unknown group ${meta.group}; leaving the file group unchanged`);
    else gid = id;
  }
  return { uid, gid };
}

/** Identifies the file keywarden wrote: inode plus nanosecond mtime (inodes alone get reused). */
export interface FileStamp {
  ino: number;
  mtimeNs: string;
}

function stampOf(file: string): FileStamp {
  const st = fs.lstatSync(file, { bigint: true });
  return { ino: Number(st.ino), mtimeNs: st.mtimeNs.toString() };
}

/**
 * Atomically replaces DIR/<name> with `content`. Readers see the old file or the new one, never
 * a partial one; a crash leaves at most a `.keywarden-tmp-*` file, removed by the next run.
 * Returns the new file's stamp.
 */
export function writeSecretFile(dir: string, name: string, content: Buffer, meta: FileMetadata, opts: WriteOptions): FileStamp {
  const target = secretPath(dir, name);
  const mode = parseMode(meta.mode);
  const { uid, gid } = ownership(name, meta, opts);
  replaceAtomically(target, (fd) => {
    if (uid !== -1 || gid !== -1) {
      try {
        fs.fchownSync(fd, uid, gid);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        opts.warn(`${name}: cannot set owner/group ${meta.owner ?? ''}:${meta.group ?? ''} (${code}); writing it with the current owner`);
      }
    }
    // After chown (which may clear special bits) and independent of the umask.
    fs.fchmodSync(fd, mode);
    for (let off = 0; off < content.length; ) off += fs.writeSync(fd, content, off);
  });
  return stampOf(target);
}

/**
 * Writes a fresh temp file beside `target` (exclusive, no symlinks followed, 0600 until `fill`
 * changes it), fsyncs it, renames it over `target` and fsyncs the directory. On failure the
 * temp file is removed and `target` is untouched.
 */
function replaceAtomically(target: string, fill: (fd: number) => void): void {
  const dir = path.dirname(target);
  const temp = path.join(dir, TEMP_PREFIX + crypto.randomBytes(8).toString('hex'));
  const fd = fs.openSync(temp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600);
  try {
    try {
      fill(fd);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(temp, target);
  } catch (err) {
    fs.rmSync(temp, { force: true });
    throw err;
  }
  fsyncDir(dir);
}

/** Removes temp files a crashed earlier run may have left (only keywarden's naming pattern). */
export function removeStaleTemps(dir: string): void {
  for (const entry of fs.readdirSync(dir)) {
    if (TEMP_PATTERN.test(entry)) fs.rmSync(path.join(dir, entry), { force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// Manifest

export interface ManifestEntry extends FileStamp {
  version: number;
  checksum: string;
  /** JSON of the metadata applied, so a mode/owner change triggers a rewrite. */
  meta: string;
}

export interface Manifest {
  files: Record<string, ManifestEntry>;
}

export function readManifest(dir: string, warn: (m: string) => void): Manifest {
  const file = path.join(dir, MANIFEST_NAME);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { files: {} };
    throw err;
  }
  try {
    const parsed = JSON.parse(text) as { files?: unknown };
    if (!parsed || typeof parsed.files !== 'object' || parsed.files === null || Array.isArray(parsed.files)) throw new Error('bad shape');
    const files: Record<string, ManifestEntry> = {};
    for (const [name, entry] of Object.entries(parsed.files as Record<string, ManifestEntry>)) {
      if (entry && typeof entry === 'object' && typeof entry.ino === 'number' && typeof entry.mtimeNs === 'string') files[name] = entry;
    }
    return { files };
  } catch {
    warn(`${file} is unreadable; starting a new manifest (files from earlier runs will not be cleaned up)`);
    return { files: {} };
  }
}

export function writeManifest(dir: string, manifest: Manifest): void {
  replaceAtomically(path.join(dir, MANIFEST_NAME), (fd) => {
    fs.fchmodSync(fd, 0o600);
    fs.writeSync(fd, JSON.stringify({ note: 'files written by keywarden fetch', files: manifest.files }, null, 2) + '\n');
  });
}

/**
 * The manifest entry is still current on disk: the file exists with the inode and mtime we left.
 * Anything else means someone replaced or modified it, and it is no longer keywarden's.
 */
export function isIntact(dir: string, name: string, entry: ManifestEntry): boolean {
  try {
    const now = stampOf(secretPath(dir, name));
    return now.ino === entry.ino && now.mtimeNs === entry.mtimeNs;
  } catch {
    return false;
  }
}

/**
 * Deletes files recorded in the manifest whose secrets are not in `keep`, and drops them from the
 * manifest. A recorded file that was since replaced or modified is left alone. Returns the
 * names removed.
 */
export function removeStale(dir: string, manifest: Manifest, keep: Set<string>, warn: (m: string) => void): string[] {
  const removed: string[] = [];
  for (const [name, entry] of Object.entries(manifest.files)) {
    if (keep.has(name)) continue;
    delete manifest.files[name];
    let target: string;
    try {
      target = secretPath(dir, name);
    } catch {
      continue;
    }
    if (!isIntact(dir, name, entry)) {
      if (fs.existsSync(target)) warn(`${name}: not removing ${target}; it was replaced by something keywarden did not write`);
      continue;
    }
    fs.rmSync(target, { force: true });
    removed.push(name);
  }
  if (removed.length) fsyncDir(dir);
  return removed;
}
