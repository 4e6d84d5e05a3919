import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { SETTING_NAMES } from '../../src/config.js';
import { closestName, editDistance, knownKeywardenVariables, OTHER_KEYWARDEN_VARIABLES, unknownSettings } from '../../src/config-suggestions.js';
import { baseEnv, REPO_ROOT, runCli } from '../cli/cli-support.js';
import { freePort } from '../support/registry.js';

/**
 * A KEYWARDEN_* variable the broker does not know is warned about at start, one line each, with
 * the closest known name, never with its value. Known: the configuration schema's keys (so a
 * new setting is known as soon as it is added there) and the names the clients and the test
 * suite read.
 */
describe('edit distance (optimal string alignment)', () => {
  it('counts insertions, deletions, substitutions and swaps of neighbours as one edit', () => {
    expect(editDistance('LISTEN', 'LISTEN')).toBe(0);
    expect(editDistance('LISTN', 'LISTEN')).toBe(1); // insertion
    expect(editDistance('LISTEEN', 'LISTEN')).toBe(1); // deletion
    expect(editDistance('LISTAN', 'LISTEN')).toBe(1); // substitution
    expect(editDistance('LITSEN', 'LISTEN')).toBe(1); // transposition (plain Levenshtein: 2)
    expect(editDistance('', 'ABC')).toBe(3);
    expect(editDistance('ABC', '')).toBe(3);
    expect(editDistance('KITTEN', 'SITTING')).toBe(3);
    expect(editDistance('CA', 'ABC')).toBe(3); // OSA, not unrestricted Damerau-Levenshtein (2)
  });

  it('is symmetric', () => {
    for (const [a, b] of [['KEYWARDEN_LOGLEVEL', 'KEYWARDEN_LOG_LEVEL'], ['ABCD', 'BADC'], ['X', 'KEYWARDEN_CA']]) {
      expect(editDistance(a!, b!)).toBe(editDistance(b!, a!));
    }
  });
});

describe('unknown settings', () => {
  const known = knownKeywardenVariables();

  it('knows every KEYWARDEN_* key of the configuration schema, and the client and test variables', () => {
    const schemaKeys = SETTING_NAMES.filter((n) => n.startsWith('KEYWARDEN_'));
    expect(schemaKeys.length).toBeGreaterThan(40);
    for (const name of [...schemaKeys, ...OTHER_KEYWARDEN_VARIABLES]) expect(known.has(name), name).toBe(true);
    // VAULT_ADDR is a setting but not a KEYWARDEN_* name: it is never reported either way
    expect(unknownSettings({ VAULT_ADDR: 'http://vault:8200', VAULT_TOKEN: 't' })).toEqual([]);
  });

  it('suggests the closest known name, within a distance that grows with the name', () => {
    expect(closestName('KEYWARDEN_LISTN', known)).toBe('KEYWARDEN_LISTEN');
    expect(closestName('KEYWARDEN_LOGLEVEL', known)).toBe('KEYWARDEN_LOG_LEVEL');
    expect(closestName('KEYWARDEN_DATABSE_URL', known)).toBe('KEYWARDEN_DATABASE_URL');
    expect(closestName('keywarden_listen', known)).toBe('KEYWARDEN_LISTEN');
    expect(closestName('KEYWARDEN_DB_ACQUIRE_TIMOUT_MS', known)).toBe('KEYWARDEN_DB_ACQUIRE_TIMEOUT_MS');
    // too far from anything: no suggestion rather than a wrong one
    expect(closestName('KEYWARDEN_FOO', known)).toBeUndefined();
    expect(closestName('KEYWARDEN_COMPLETELY_DIFFERENT', known)).toBeUndefined();
  });

  it('reports each unknown KEYWARDEN_* variable once, sorted, never with its value', () => {
    const found = unknownSettings({
      KEYWARDEN_LISTN: 'secret-value-1',
      KEYWARDEN_LISTEN: '127.0.0.1:1',
      KEYWARDEN_FOO: 'secret-value-2',
      KEYWARDN_DATA_DIR: 'secret-value-3',
      KEYWARDEN_ADDR: 'http://broker',
      KEYWARDEN_TEST_DATABASE_URL: 'postgres://x',
      PATH: '/usr/bin',
      KEYBOARD_LAYOUT: 'us',
    });
    expect(found.map((f) => f.message)).toEqual([
      'unknown setting KEYWARDEN_FOO',
      'unknown setting KEYWARDEN_LISTN (did you mean KEYWARDEN_LISTEN?)',
      'unknown setting KEYWARDN_DATA_DIR (did you mean KEYWARDEN_DATA_DIR?)',
    ]);
    expect(JSON.stringify(found)).not.toMatch(/secret-value/);
  });

  it('knows a setting as soon as the schema has it (the console settings)', () => {
    // derived from config.ts, not listed twice: this fails if the list stops following the schema
    const consoleKeys = SETTING_NAMES.filter((n) => n.startsWith('KEYWARDEN_CONSOLE_'));
    for (const name of consoleKeys) expect(unknownSettings({ [name]: 'x' })).toEqual([]);
    expect(OTHER_KEYWARDEN_VARIABLES.filter((n) => SETTING_NAMES.includes(n))).toEqual([]);
  });

  it('every KEYWARDEN_* name the repository uses is known (a new client or test variable is added to the list)', () => {
    const files: string[] = [];
    const walk = (dir: string) => {
      for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
        const p = path.join(dir, entry.name);
        if (entry.isDirectory()) {
          if (entry.name !== 'node_modules' && entry.name !== 'dist') walk(p);
        } else if (/\.(ts|mts|js|mjs|md|ya?ml|sh|json)$|^Dockerfile$|^run$/.test(entry.name)) files.push(p);
      }
    };
    for (const dir of ['src', 'test', 'bench', 'scripts', '.ci', 'packaging', 'console']) if (fs.existsSync(path.join(REPO_ROOT, dir))) walk(path.join(REPO_ROOT, dir));
    for (const file of ['README.md', 'ARCHITECTURE.md', 'Dockerfile', 'docker-compose.yml', 'package.json']) if (fs.existsSync(path.join(REPO_ROOT, file))) files.push(path.join(REPO_ROOT, file));
    // these spell unknown names on purpose
    const examples = ['test/core/unknown-settings.test.ts', 'src/config-suggestions.ts'].map((f) => path.join(REPO_ROOT, f));
    const used = new Map<string, string>();
    for (const file of files) {
      if (examples.includes(file)) continue;
      const text = fs.readFileSync(file, 'utf8');
      for (const m of text.matchAll(/(?<![A-Za-z0-9_])KEYWARDEN_[A-Z0-9_]+/g)) {
        const name = m[0];
        // a family in prose (KEYWARDEN_DB_*_TIMEOUT_MS) or a prefix, not a name
        if (name.endsWith('_') || text[m.index! + name.length] === '*') continue;
        // a quoted warning ("did you mean ...?") spells the wrong name on purpose
        const lineStart = text.lastIndexOf('\n', m.index!) + 1;
        const lineEnd = text.indexOf('\n', m.index!);
        if (text.slice(lineStart, lineEnd === -1 ? undefined : lineEnd).includes('did you mean')) continue;
        if (!used.has(name)) used.set(name, path.relative(REPO_ROOT, file));
      }
    }
    expect(used.size).toBeGreaterThan(40);
    const unknown = [...used].filter(([name]) => !known.has(name)).map(([name, file]) => `${name} (${file})`);
    expect(unknown).toEqual([]);
  });
});

describe('keywarden serve warns about unknown settings at start', () => {
  it('one warn line per unknown variable, with the suggestion and without the value', async () => {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kw-unknown-settings-'));
    // the port is taken, so the broker stops right after the warnings (exit 78) and starts nothing
    const port = await freePort();
    const { createServer } = await import('node:net');
    const blocker = createServer().listen(port, '127.0.0.1');
    await new Promise((r) => blocker.once('listening', r));
    try {
      const r = await runCli(
        ['serve'],
        baseEnv({
          KEYWARDEN_DATA_DIR: path.join(dataDir, 'never-created'),
          KEYWARDEN_LISTEN: `127.0.0.1:${port}`,
          KEYWARDEN_LISTN: 'value-that-must-not-appear-1',
          KEYWARDEN_LOGLEVEL: 'value-that-must-not-appear-2',
          KEYWARDEN_NOTHING_LIKE_IT: 'value-that-must-not-appear-3',
          KEYWARDEN_ADDR: 'http://127.0.0.1:1',
        }),
        120_000,
      );
      expect(r.code, r.stderr).toBe(78);
      const warnings = r.stdout
        .split('\n')
        .filter(Boolean)
        .map((line) => JSON.parse(line) as { level: number; msg: string; setting?: string; suggestion?: string })
        .filter((l) => l.msg.startsWith('unknown setting'));
      expect(warnings.map((w) => [w.level, w.msg])).toEqual([
        [40, 'unknown setting KEYWARDEN_LISTN (did you mean KEYWARDEN_LISTEN?)'],
        [40, 'unknown setting KEYWARDEN_LOGLEVEL (did you mean KEYWARDEN_LOG_LEVEL?)'],
        [40, 'unknown setting KEYWARDEN_NOTHING_LIKE_IT'],
      ]);
      expect(warnings[0]).toMatchObject({ setting: 'KEYWARDEN_LISTN', suggestion: 'KEYWARDEN_LISTEN' });
      expect(r.stdout + r.stderr).not.toMatch(/value-that-must-not-appear/);
      expect(fs.existsSync(path.join(dataDir, 'never-created'))).toBe(false);
    } finally {
      blocker.close();
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  }, 150_000);
});
