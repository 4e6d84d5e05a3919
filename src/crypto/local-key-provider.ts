import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { KeyProviderError, type KeyProvider, type WrappedKey } from './key-provider.js';
import type { Clock } from '../core/clock.js';

interface KeyFile {
  format: 'keywarden-root-key/v1';
  current: string;
  versions: Record<string, string>;
}

const IV_BYTES = 12;
const TAG_BYTES = 16;

function wrapAad(version: string): Buffer {
  return Buffer.from(`keywarden:root-wrap:v${version}`);
}

/**
 * Root key held in a local file (mode 0600, created on first start) or in an environment
 * variable. The file holds every version so data keys wrapped by older versions stay readable
 * until `rotate-root-key` has rewrapped them.
 */
export class LocalKeyProvider implements KeyProvider {
  readonly kind = 'local' as const;
  private keys = new Map<string, Buffer>();
  private current = '';
  private lastStat = 0;
  private lastMtimeMs = 0;

  private constructor(
    private readonly file: string | undefined,
    private readonly clock: Clock,
  ) {}

  /** `envValue` is either one base64 key, or `1:base64,2:base64` with the last one current. */
  static fromEnv(envValue: string): LocalKeyProvider {
    const provider = new LocalKeyProvider(undefined, Date.now);
    const parts = envValue.split(',').map((s) => s.trim()).filter(Boolean);
    parts.forEach((part, index) => {
      const m = /^(?:(\d+):)?([A-Za-z0-9+/=_-]+)$/.exec(part);
      const key = m ? Buffer.from(m[2], 'base64') : Buffer.alloc(0);
      if (!m || key.length !== 32) {
        throw new KeyProviderError('KEYWARDEN_ROOT_KEY must be base64 of 32 bytes, or "1:<base64>,2:<base64>"');
      }
      const version = m[1] ?? String(index + 1);
      provider.keys.set(version, key);
      provider.current = version;
    });
    if (!provider.current) throw new KeyProviderError('KEYWARDEN_ROOT_KEY is empty');
    return provider;
  }

  /**
   * Opens the key file, creating it with a fresh random key (mode 0600) when absent. The broker
   * does not use this: it creates a key only for an empty database (see create-key-provider.ts).
   */
  static openFile(file: string, clock: Clock = Date.now): LocalKeyProvider {
    return LocalKeyProvider.openExistingFile(file, clock) ?? LocalKeyProvider.createFile(file, clock);
  }

  /** Opens the key file; undefined when it does not exist (nothing is created). */
  static openExistingFile(file: string, clock: Clock = Date.now): LocalKeyProvider | undefined {
    if (!fs.existsSync(file)) return undefined;
    const provider = new LocalKeyProvider(file, clock);
    provider.load();
    return provider;
  }

  /** Writes a new key file with a fresh random key (mode 0600); a file created meanwhile by another process wins. */
  static createFile(file: string, clock: Clock = Date.now): LocalKeyProvider {
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    const initial: KeyFile = {
      format: 'keywarden-root-key/v1',
      current: '1',
      versions: { '1': crypto.randomBytes(32).toString('base64') },
    };
    let fd: number | undefined;
    try {
      fd = fs.openSync(file, 'wx', 0o600);
    } catch (err) {
      if ((err as NodeJS.ErrnoException | null)?.code !== 'EEXIST') throw err;
    }
    if (fd !== undefined) {
      // on disk before anything is sealed with it: SQLite commits are fsynced (synchronous=FULL),
      // and data that outlives its key after a power loss could never be opened again
      try {
        fs.writeSync(fd, JSON.stringify(initial, null, 2) + '\n');
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
      const dir = fs.openSync(path.dirname(file), 'r');
      try {
        fs.fsyncSync(dir);
      } finally {
        fs.closeSync(dir);
      }
    }
    const provider = new LocalKeyProvider(file, clock);
    provider.load();
    return provider;
  }

  /** Where the key comes from, for messages: the file path or the environment variable. */
  get source(): string {
    return this.file ?? 'KEYWARDEN_ROOT_KEY';
  }

  /** The root key versions this provider holds (re-reading the file if it changed). */
  versions(): string[] {
    if (this.file) this.load();
    return [...this.keys.keys()];
  }

  private load(): void {
    if (!this.file) return;
    let parsed: KeyFile;
    try {
      const stat = fs.statSync(this.file);
      if ((stat.mode & 0o077) !== 0) {
        throw new KeyProviderError(`root key file ${this.file} must not be readable by group or others (chmod 600)`);
      }
      this.lastMtimeMs = stat.mtimeMs;
      parsed = JSON.parse(fs.readFileSync(this.file, 'utf8'));
    } catch (err) {
      if (err instanceof KeyProviderError) throw err;
      throw new KeyProviderError(`cannot read root key file ${this.file}: ${(err as Error).message}`);
    }
    if (parsed?.format !== 'keywarden-root-key/v1' || !parsed.versions?.[parsed.current]) {
      throw new KeyProviderError(`root key file ${this.file} is not a keywarden root key file`);
    }
    const keys = new Map<string, Buffer>();
    for (const [version, b64] of Object.entries(parsed.versions)) {
      const key = Buffer.from(b64, 'base64');
      if (key.length !== 32) throw new KeyProviderError(`root key version ${version} is not 32 bytes`);
      keys.set(version, key);
    }
    this.keys = keys;
    this.current = parsed.current;
  }

  /** Another process (rotate-root-key) may have added a version; notice it within a second. */
  private refresh(): void {
    if (!this.file) return;
    const now = this.clock();
    if (now - this.lastStat < 1000) return;
    this.lastStat = now;
    try {
      if (fs.statSync(this.file).mtimeMs !== this.lastMtimeMs) this.load();
    } catch {
      // keep serving with the keys already loaded; check() reports the problem
    }
  }

  async currentVersion(): Promise<string> {
    this.refresh();
    return this.current;
  }

  async wrap(dataKey: Buffer): Promise<WrappedKey> {
    this.refresh();
    const version = this.current;
    const key = this.keys.get(version)!;
    const iv = crypto.randomBytes(IV_BYTES);
    const cipher = crypto.createCipheriv('aes-256-gcm', key, iv);
    cipher.setAAD(wrapAad(version));
    const body = Buffer.concat([cipher.update(dataKey), cipher.final()]);
    return { wrapped: Buffer.concat([iv, body, cipher.getAuthTag()]), keyVersion: version };
  }

  async unwrap(wrapped: Buffer, keyVersion: string): Promise<Buffer> {
    let key = this.keys.get(keyVersion);
    if (!key && this.file) {
      this.load();
      key = this.keys.get(keyVersion);
    }
    if (!key) throw new KeyProviderError(`root key version ${keyVersion} is not available`);
    if (wrapped.length < IV_BYTES + TAG_BYTES + 1) throw new KeyProviderError('wrapped data key is truncated');
    try {
      const decipher = crypto.createDecipheriv('aes-256-gcm', key, wrapped.subarray(0, IV_BYTES));
      decipher.setAAD(wrapAad(keyVersion));
      decipher.setAuthTag(wrapped.subarray(wrapped.length - TAG_BYTES));
      return Buffer.concat([decipher.update(wrapped.subarray(IV_BYTES, wrapped.length - TAG_BYTES)), decipher.final()]);
    } catch (err) {
      throw new KeyProviderError('data key failed to unwrap (tampered or wrong root key)', { cause: err, integrity: true });
    }
  }

  async rotate(): Promise<string> {
    if (!this.file) {
      throw new KeyProviderError('the root key comes from KEYWARDEN_ROOT_KEY; rotate by appending "N:<base64>" to it');
    }
    this.load();
    const next = String(Math.max(...[...this.keys.keys()].map(Number)) + 1);
    const content: KeyFile = {
      format: 'keywarden-root-key/v1',
      current: next,
      versions: Object.fromEntries([
        ...[...this.keys.entries()].map(([v, k]) => [v, k.toString('base64')]),
        [next, crypto.randomBytes(32).toString('base64')],
      ]),
    };
    const tmp = `${this.file}.${process.pid}.tmp`;
    const fd = fs.openSync(tmp, 'w', 0o600);
    try {
      // a stale temp file left by a crash keeps its old mode; the key must never be readable
      fs.fchmodSync(fd, 0o600);
      fs.writeSync(fd, JSON.stringify(content, null, 2) + '\n');
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, this.file);
    this.load();
    return next;
  }

  async check(): Promise<void> {
    if (!this.keys.get(this.current)) throw new KeyProviderError('no current root key');
  }
}
