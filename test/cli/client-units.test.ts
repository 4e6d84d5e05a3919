/** Unit tests for the client command modules: env names, secret file paths, atomic writes, manifest. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { assignEnvNames, envNameFor, parseSecretSelector } from '../../src/cli/client/env-names.js';
import { CliError, ExitCode } from '../../src/cli/client/exit-codes.js';
import { redact, registerSensitive } from '../../src/cli/client/log.js';
import {
  MANIFEST_NAME,
  parseMode,
  readManifest,
  removeStale,
  resolveId,
  secretPath,
  UnsafeNameError,
  writeManifest,
  writeSecretFile,
} from '../../src/cli/client/secret-files.js';

describe('environment variable names', () => {
  it('derives names: uppercase, non-alphanumerics to _, leading digit prefixed', () => {
    expect(envNameFor('db-password')).toBe('DB_PASSWORD');
    expect(envNameFor('api.key')).toBe('API_KEY');
    expect(envNameFor('1st-token')).toBe('_1ST_TOKEN');
    expect(envNameFor('Mixed_Case.v2')).toBe('MIXED_CASE_V2');
  });

  it('parses --secret NAME[=ENV_VAR] and rejects bad names as usage errors', () => {
    expect(parseSecretSelector('db-password')).toEqual({ name: 'db-password' });
    expect(parseSecretSelector('db-password=PGPASSWORD')).toEqual({ name: 'db-password', env: 'PGPASSWORD' });
    for (const bad of ['../x', 'a/b', '', 'x=1BAD', 'x=A-B', 'x=']) {
      expect(() => parseSecretSelector(bad), bad).toThrow(CliError);
      try {
        parseSecretSelector(bad);
      } catch (err) {
        expect((err as CliError).exitCode).toBe(ExitCode.USAGE);
      }
    }
  });

  it('explicit names win and collisions are usage errors', () => {
    expect(Object.fromEntries(assignEnvNames(['a.b', 'c'], [{ name: 'c', env: 'SEE' }]))).toEqual({ 'a.b': 'A_B', c: 'SEE' });
    expect(() => assignEnvNames(['a.b', 'a-b'], [])).toThrow(/both map to A_B/);
    expect(Object.fromEntries(assignEnvNames(['a.b', 'a-b'], [{ name: 'a-b', env: 'OTHER' }]))).toEqual({ 'a.b': 'A_B', 'a-b': 'OTHER' });
  });
});

describe('redaction', () => {
  it('scrubs registered sensitive strings from messages', () => {
    registerSensitive('kws_super-secret-credential');
    expect(redact('denied for kws_super-secret-credential!')).toBe('denied for [redacted]!');
  });
});

describe('secret file paths', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kw-files-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('accepts plain names inside DIR', () => {
    expect(secretPath(dir, 'db-password')).toBe(path.join(dir, 'db-password'));
    expect(secretPath(dir, 'a..b')).toBe(path.join(dir, 'a..b'));
  });

  it('refuses names that would escape DIR or hide as dotfiles', () => {
    for (const bad of ['../x', 'a/b', '..', '.', '', '/etc/passwd', '.hidden', MANIFEST_NAME, 'a\\b', 'x\0y', '../../etc/cron.d/x']) {
      expect(() => secretPath(dir, bad), JSON.stringify(bad)).toThrow(UnsafeNameError);
    }
  });

  it('writeSecretFile refuses to write outside DIR', () => {
    const inner = path.join(dir, 'inner');
    fs.mkdirSync(inner);
    expect(() => writeSecretFile(inner, '../x', Buffer.from('v'), {}, { warn: () => {} })).toThrow(UnsafeNameError);
    expect(() => writeSecretFile(inner, 'a/b', Buffer.from('v'), {}, { warn: () => {} })).toThrow(UnsafeNameError);
    expect(fs.existsSync(path.join(dir, 'x'))).toBe(false);
    expect(fs.readdirSync(inner)).toEqual([]);
  });

  it('parses modes with a 0400 default and drops special bits', () => {
    expect(parseMode(undefined)).toBe(0o400);
    expect(parseMode('0440')).toBe(0o440);
    expect(parseMode('640')).toBe(0o640);
    expect(parseMode('4755')).toBe(0o755);
    expect(() => parseMode('0999')).toThrow(CliError);
  });

  it('resolves owner/group names from passwd/group-style files, numbers as ids', () => {
    const passwd = path.join(dir, 'passwd');
    fs.writeFileSync(passwd, 'root:x:0:0:root:/root:/bin/sh\napp:x:1234:1234::/home/app:/bin/sh\n');
    expect(resolveId('app', passwd)).toBe(1234);
    expect(resolveId('root', passwd)).toBe(0);
    expect(resolveId('42', passwd)).toBe(42);
    expect(resolveId('nobody-here', passwd)).toBeUndefined();
  });

  it('writes atomically with the requested mode, replacing the inode and leaving no temp files', () => {
    const { ino: ino1 } = writeSecretFile(dir, 's', Buffer.from('one'), { mode: '0440' }, { warn: () => {} });
    const st1 = fs.statSync(path.join(dir, 's'));
    expect(st1.mode & 0o7777).toBe(0o440);
    expect(st1.ino).toBe(ino1);
    const { ino: ino2 } = writeSecretFile(dir, 's', Buffer.from('two'), {}, { warn: () => {} });
    expect(ino2).not.toBe(ino1);
    expect(fs.readFileSync(path.join(dir, 's'), 'utf8')).toBe('two');
    expect(fs.statSync(path.join(dir, 's')).mode & 0o7777).toBe(0o400);
    expect(fs.readdirSync(dir)).toEqual(['s']);
  });

  it('warns instead of failing when the owner cannot be resolved', () => {
    const warnings: string[] = [];
    writeSecretFile(dir, 's', Buffer.from('x'), { owner: 'no-such-user-kw', group: 'no-such-group-kw' }, { warn: (m) => warnings.push(m) });
    expect(warnings.join('\n')).toMatch(/unknown owner no-such-user-kw/);
    expect(warnings.join('\n')).toMatch(/unknown group no-such-group-kw/);
    expect(fs.readFileSync(path.join(dir, 's'), 'utf8')).toBe('x');
  });

  it('manifest: round-trips with mode 0600; corrupt manifests are ignored with a warning', () => {
    const stamp = writeSecretFile(dir, 'a', Buffer.from('x'), {}, { warn: () => {} });
    writeManifest(dir, { files: { a: { version: 1, checksum: 'c', ...stamp, meta: '{}' } } });
    expect(fs.statSync(path.join(dir, MANIFEST_NAME)).mode & 0o777).toBe(0o600);
    expect(readManifest(dir, () => {}).files.a).toEqual({ version: 1, checksum: 'c', ...stamp, meta: '{}' });
    fs.writeFileSync(path.join(dir, MANIFEST_NAME), '{not json');
    const warnings: string[] = [];
    expect(readManifest(dir, (m) => warnings.push(m))).toEqual({ files: {} });
    expect(warnings).toHaveLength(1);
  });

  it('removeStale deletes only files it wrote that are still the ones it wrote', () => {
    const opts = { warn: () => {} };
    const a = writeSecretFile(dir, 'a', Buffer.from('a'), {}, opts);
    const b = writeSecretFile(dir, 'b', Buffer.from('b'), {}, opts);
    const c = writeSecretFile(dir, 'c', Buffer.from('c'), {}, opts);
    fs.writeFileSync(path.join(dir, 'mine.txt'), 'user file');
    // 'c' was replaced by someone else since keywarden wrote it
    fs.rmSync(path.join(dir, 'c'));
    fs.writeFileSync(path.join(dir, 'c'), 'replaced by user');
    const manifest = {
      files: {
        a: { version: 1, checksum: 'x', ...a, meta: '{}' },
        b: { version: 1, checksum: 'x', ...b, meta: '{}' },
        c: { version: 1, checksum: 'x', ...c, meta: '{}' },
        '../escape': { version: 1, checksum: 'x', ino: 1, mtimeNs: '1', meta: '{}' },
      },
    };
    const warnings: string[] = [];
    expect(removeStale(dir, manifest, new Set(['a']), (m) => warnings.push(m))).toEqual(['b']);
    expect(fs.readdirSync(dir).sort()).toEqual(['a', 'c', 'mine.txt']);
    expect(Object.keys(manifest.files)).toEqual(['a']);
    expect(warnings.join('\n')).toMatch(/c: not removing/);
  });
});
