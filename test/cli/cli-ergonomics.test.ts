/**
 * CLI ergonomics (issue #15), every case a real `keywarden` child process:
 * --version; each command's --help lists its own exit codes and no other command's; usage errors
 * exit 64 in every command; `audit verify-export` tells a broken export (1) from usage (64) and
 * unreadable files (66) and says where; `fetch` prints a summary unless --quiet; `audit
 * checkpoint` records the audit event the API records.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { baseEnv, closedPort, REPO_ROOT, runCli, startCliBroker, type CliBroker, type CliResult } from './cli-support.js';

// Each case spawns real CLI processes (node + tsx), which take seconds each on a loaded machine.
vi.setConfig({ testTimeout: 180_000, hookTimeout: 120_000 });

const pkg = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string };

/** Runs the argument lists a few at a time (the CLI is a node + tsx process each). */
async function runAll(cases: string[][], env: Record<string, string>, concurrency = 4): Promise<CliResult[]> {
  const results: CliResult[] = new Array(cases.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < cases.length) {
        const i = next++;
        results[i] = await runCli(cases[i]!, env);
      }
    }),
  );
  return results;
}

/** The codes listed under "Exit codes:" in a help text; undefined when there is no such block. */
function exitCodesOf(help: string): number[] | undefined {
  const blocks = help.split(/^Exit codes:$/m);
  if (blocks.length === 1) return undefined;
  expect(blocks.length, `one "Exit codes:" block only:\n${help}`).toBe(2);
  const codes: number[] = [];
  for (const line of blocks[1]!.split('\n').slice(1)) {
    const m = /^ {2}(\d+)\s+\S/.exec(line);
    if (!m) break;
    codes.push(Number(m[1]));
  }
  return codes;
}

describe('keywarden --version and --help', () => {
  it('--version and -V print the version from package.json and exit 0', async () => {
    const [long, short] = await runAll([['--version'], ['-V']], baseEnv());
    for (const r of [long, short]) {
      expect(r!.code, r!.stderr).toBe(0);
      expect(r!.stdout).toBe(`${pkg.version}\n`);
    }
  });

  it('each command lists exactly its own exit codes; the top-level help lists commands and no codes', async () => {
    const broker = [1, 64, 66, 78];
    const client = [64, 69, 70, 77];
    const expected: Array<[string[], number[] | undefined]> = [
      [[], undefined],
      [['audit'], undefined],
      [['api-key'], undefined],
      [['serve'], [0, ...broker]],
      [['migrate'], [0, 1, 64, 78]],
      [['init'], [0, ...broker]],
      [['rotate-root-key'], [0, ...broker]],
      [['exec'], [...client, 66, 126, 127].sort((a, b) => a - b)],
      [['fetch'], [0, 64, 66, 69, 70, 77]],
      [['docker-plugin'], [0, 64, 69, 70, 77]],
      [['verify'], [0, 1, 64, 66, 69, 70, 77]],
      [['sign'], [0, 1, 64, 66, 69, 70, 77]],
      [['audit', 'prune'], [0, ...broker]],
      [['audit', 'verify-export'], [0, 1, 64, 66]],
      [['audit', 'witness'], [0, 1, 2, 3, 4, 64, 66]],
      [['audit', 'checkpoint'], [0, ...broker]],
    ];
    const results = await runAll(
      expected.map(([args]) => [...args, '--help']),
      baseEnv(),
    );
    results.forEach((r, i) => {
      const [args, codes] = expected[i]!;
      expect(r.code, `${args.join(' ')} --help: ${r.stderr}`).toBe(0);
      expect(exitCodesOf(r.stdout), `${args.join(' ')} --help`).toEqual(codes);
    });
    const top = results[0]!.stdout;
    for (const command of ['serve', 'migrate', 'init', 'rotate-root-key', 'exec', 'fetch', 'docker-plugin', 'verify', 'sign', 'audit', 'break-glass', 'api-key']) {
      expect(top).toMatch(new RegExp(`^ {2}${command}\\b`, 'm'));
    }
    expect(top).toMatch(/-V, --version/);
    // what sets the commands apart stays with them: exec's 126/127 and the witness's alarms
    expect(results.find((_, i) => expected[i]![0].join(' ') === 'fetch')!.stdout).not.toMatch(/exec\)|126|127/);
  });

  it('the commands of the recovery helper follow the same pattern: one block of their own codes, with 0 and 64', async () => {
    const top = (await runCli(['api-key', '--help'], baseEnv())).stdout;
    const subcommands = [...top.matchAll(/^ {2}([a-z][a-z-]*)\b/gm)].map((m) => m[1]!).filter((c) => c !== 'help');
    expect(subcommands.length).toBeGreaterThan(0);
    const cases = [['break-glass', '--help'], ...subcommands.map((c) => ['api-key', c, '--help'])];
    const results = await runAll(cases, baseEnv());
    results.forEach((r, i) => {
      expect(r.code, cases[i]!.join(' ')).toBe(0);
      const codes = exitCodesOf(r.stdout);
      expect(codes, cases[i]!.join(' ')).toEqual(expect.arrayContaining([0, 64]));
      // no client command's exec-only or witness-only codes
      for (const foreign of [2, 3, 4, 126, 127]) expect(codes, cases[i]!.join(' ')).not.toContain(foreign);
    });
  });
});

describe('usage errors exit 64 in every command', () => {
  it('unknown options, missing required options, bad values, extra arguments and missing settings', async () => {
    const port = await closedPort();
    const dead = `http://127.0.0.1:${port}`;
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kw-usage-'));
    try {
      const cases: Array<[string[], Record<string, string>?]> = [
        [['no-such-command']],
        [[]],
        // unknown options, in every command (nothing runs before the arguments are parsed)
        ...[
          'serve',
          'migrate',
          'init',
          'rotate-root-key',
          'fetch',
          'docker-plugin',
          'verify',
          'sign',
          'break-glass',
          'audit prune',
          'audit verify-export',
          'audit witness',
          'audit checkpoint',
        ].map((c): [string[]] => [[...c.split(' '), '--no-such-option']]),
        [['exec', '--no-such-option', '--', 'true']],
        // missing required options and arguments
        [['sign', 'r.example.com/app:1']],
        [['sign', '--key', 'k']],
        [['fetch', '--all']],
        [['verify']],
        [['audit', 'prune']],
        [['audit', 'verify-export']],
        [['audit', 'witness', '--url', dead]],
        // bad values
        [['fetch', '--dir', tmp, '--all', '--timeout', 'soon']],
        [['exec', '--all', '--timeout', '0', '--', 'true']],
        [['docker-plugin', '--volume-size', '5z']],
        [['audit', 'prune', '--before', 'yesterday']],
        [['audit', 'witness', '--url', dead, '--state', path.join(tmp, 's.json'), '--interval', '0']],
        [['audit', 'witness', '--url', 'not a url', '--state', path.join(tmp, 's.json'), '--once']],
        [['sign', '--key', 'k', '--annotation', 'no-equals-sign', 'r.example.com/app:1'], { KEYWARDEN_ADDR: dead, KEYWARDEN_API_KEY: 'kw_x' }],
        // extra arguments
        [['migrate', 'extra']],
        [['audit', 'checkpoint', 'extra']],
        [['fetch', '--dir', tmp, '--all', 'extra']],
        [['verify', 'r.example.com/a:1', 'r.example.com/b:1']],
        [['sign', '--key', 'k', 'r.example.com/a:1', 'r.example.com/b:1']],
        // settings the command cannot run without
        [['sign', '--key', 'k', 'r.example.com/app:1'], { KEYWARDEN_API_KEY: 'kw_x' }],
        [['verify', 'r.example.com/app:1'], { KEYWARDEN_API_KEY: 'kw_x' }],
        [['fetch', '--dir', tmp, '--all'], { KEYWARDEN_ADDR: dead }],
      ];
      const results = await Promise.all(
        [0, 1, 2, 3].map(async (lane) => {
          const out: Array<[number, CliResult]> = [];
          for (let i = lane; i < cases.length; i += 4) out.push([i, await runCli(cases[i]![0], baseEnv(cases[i]![1] ?? {}))]);
          return out;
        }),
      );
      for (const [i, r] of results.flat()) {
        const label = `keywarden ${cases[i]![0].join(' ')}`;
        expect(r.code, `${label}\n${r.stderr}`).toBe(64);
        expect(r.stderr.trim(), label).not.toBe('');
        expect(r.stderr, label).not.toMatch(/\n\s+at .*\(.*:\d+:\d+\)/); // a message, not a stack trace
      }
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
});

describe('against a broker', () => {
  let b: CliBroker;
  let tmp: string;
  let verifierKey: string;
  let auditorKey: string;
  /** The broker's configuration, for commands that open its database themselves. */
  let siteEnv: Record<string, string>;

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kw-ergonomics-'));
    // the sequencer's timer is off: the tests decide when events get their leaves
    b = await startCliBroker({ env: { KEYWARDEN_AUDIT_SEQUENCE_INTERVAL_MS: '0' } });
    expect((await b.api('POST', '/v1/groups', { name: 'app' })).status).toBe(201);
    for (const [name, value] of [
      ['db-password', 'ergo-secret-value-1'],
      ['api.token', 'ergo-secret-value-2'],
      ['third', 'ergo-secret-value-3'],
    ]) {
      expect((await b.api('POST', '/v1/secrets', { name, value, groups: ['app'] })).status).toBe(201);
    }
    auditorKey = await b.tb.apiKey('auditor');
    await b.tb.broker.services.auditSequencer.flush();
    verifierKey = (await b.tb.request.get('/v1/audit/checkpoint').set({ Authorization: `Bearer ${auditorKey}` })).body.verifierKey;
    expect(verifierKey).toMatch(/\+/);
    const url = new URL(b.tb.db.url);
    if (b.tb.db.schema) url.searchParams.set('schema', b.tb.db.schema);
    siteEnv = baseEnv({
      KEYWARDEN_DATA_DIR: b.tb.dataDir,
      KEYWARDEN_DATABASE_URL: b.tb.db.schema ? url.toString() : b.tb.db.url,
      KEYWARDEN_ROOT_KEY: (b.tb.config.keyProvider as { keyFromEnv?: string }).keyFromEnv ?? '',
      KEYWARDEN_ISSUER: b.tb.config.issuer,
      KEYWARDEN_LOG_LEVEL: 'warn',
      KEYWARDEN_AUDIT_SEQUENCE_INTERVAL_MS: '0',
    });
  });

  afterAll(async () => {
    await b?.close();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  async function exportFile(name: string): Promise<{ file: string; lines: Array<Record<string, any>> }> {
    const res = await b.tb.request
      .get('/v1/audit/export')
      .set({ Authorization: `Bearer ${auditorKey}` })
      .buffer(true)
      .parse((r, cb) => {
        let text = '';
        r.setEncoding('utf8');
        r.on('data', (c: string) => (text += c));
        r.on('end', () => cb(null, text));
      });
    expect(res.status).toBe(200);
    const file = path.join(tmp, name);
    fs.writeFileSync(file, res.body as string);
    return { file, lines: (res.body as string).split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l)) };
  }
  const write = (name: string, lines: Array<Record<string, any> | string>) => {
    const file = path.join(tmp, name);
    fs.writeFileSync(file, lines.map((l) => (typeof l === 'string' ? l : JSON.stringify(l))).join('\n') + '\n');
    return file;
  };

  describe('audit verify-export', () => {
    it('exit 0 for an intact export, 1 for a broken one, saying which file, where and why', async () => {
      const { file, lines } = await exportFile('intact.ndjson');
      const events = lines.filter((l) => l.type === undefined);
      expect(events.length).toBeGreaterThan(3);
      const altered = write(
        'altered.ndjson',
        lines.map((l) => (l.type === undefined && l.leafIndex === 2 ? { ...l, outcome: 'deny' } : l)),
      );
      const reordered = write('reordered.ndjson', [lines[0]!, events[1]!, events[0]!, ...lines.slice(1 + 2)]);
      const cut = write('cut.ndjson', lines.slice(0, -1));
      const garbled = write('garbled.ndjson', [lines[0]!, events[0]!, '{not json', ...lines.slice(2)]);
      const cases = [file, altered, reordered, cut, garbled].map((f) => ['audit', 'verify-export', '--file', f, '--key', verifierKey]);
      const [ok, alt, reo, short, garb] = await runAll(cases, baseEnv());

      expect(ok!.code, ok!.stderr).toBe(0);
      expect(JSON.parse(ok!.stdout)).toMatchObject({ ok: true, format: 2, checked: events.length });
      expect(ok!.stderr).toContain(`${file}: intact (format 2: ${events.length} events checked`);

      for (const r of [alt, reo, short, garb]) {
        expect(r!.code, r!.stderr).toBe(1);
        expect(JSON.parse(r!.stdout)).toMatchObject({ ok: false });
      }
      expect(alt!.stderr).toContain(`${altered}: NOT intact`);
      expect(alt!.stderr).toMatch(/do not hash to the signed root/);
      expect(reo!.stderr).toContain(`${reordered}: NOT intact`);
      expect(reo!.stderr).toMatch(new RegExp(`event ${events[1]!.seq} claims leaf ${events[1]!.leafIndex}, but the next leaf is ${events[0]!.leafIndex}.*first bad leaf: ${events[0]!.leafIndex}`));
      expect(short!.stderr).toMatch(/cut short/);
      expect(garb!.stderr).toMatch(/line 3 is not JSON/);
    });

    it('usage errors exit 64 and unreadable files 66, before anything is verified', async () => {
      const { file } = await exportFile('for-usage.ndjson');
      const legacy = write('legacy.ndjson', [{ seq: 1, ts: 1, action: 'x', hash: 'ab' }]);
      const notJwks = write('not-jwks.json', ['{"keys": 3}']);
      const missing = path.join(tmp, 'no-such-export.ndjson');
      const cases: Array<[string[], number, RegExp]> = [
        [['--file', file], 64, /format-2 export: give the log verifier key with --key/],
        [['--file', file, '--key', 'not-a-key'], 64, /--key is not a log verifier key/],
        [['--file', legacy], 64, /format-1 \(hash chain\) export: give .* --jwks/],
        [['--file', legacy, '--jwks', notJwks], 64, /not a JWKS/],
        [['--file', missing, '--key', verifierKey], 66, new RegExp(`--file: cannot read ${missing} \\(ENOENT\\)`)],
        [['--file', tmp, '--key', verifierKey], 66, /is not a regular file/],
        [['--file', file, '--key', `@${path.join(tmp, 'no-such.vkey')}`], 66, /--key: cannot read .*no-such\.vkey \(ENOENT\)/],
        [['--file', legacy, '--jwks', path.join(tmp, 'no-such.jwks')], 66, /--jwks: cannot read .*no-such\.jwks \(ENOENT\)/],
      ];
      const results = await runAll(
        cases.map(([args]) => ['audit', 'verify-export', ...args]),
        baseEnv(),
      );
      results.forEach((r, i) => {
        const [args, code, message] = cases[i]!;
        expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(code);
        expect(r.stderr).toMatch(message);
        expect(r.stdout).toBe(''); // no verdict: nothing was verified
      });
    });
  });

  describe('fetch summary', () => {
    it('prints one line naming what was written, where and which versions; --quiet prints nothing', async () => {
      const c = await b.tb.client('summary-fetcher', ['app']);
      const env = baseEnv({ KEYWARDEN_ADDR: b.url, KEYWARDEN_CLIENT_ID: c.clientId, KEYWARDEN_CLIENT_SECRET: c.clientSecret });
      const dir = path.join(tmp, 'fetched');
      const first = await runCli(['fetch', '--dir', dir, '--secret', 'db-password', '--secret', 'api.token'], env);
      expect(first.code, first.stderr).toBe(0);
      expect(first.stderr).toBe(`keywarden fetch: wrote 2 secrets to ${dir} (db-password v1, api.token v1)\n`);
      expect(first.stdout).toBe('');

      expect((await b.api('POST', '/v1/secrets/db-password/versions', { value: 'ergo-secret-value-1b' })).status).toBe(201);
      const [again, quiet] = await runAll(
        [
          ['fetch', '--dir', dir, '--secret', 'db-password', '--secret', 'api.token'],
          ['fetch', '--quiet', '--dir', path.join(tmp, 'quiet'), '--all'],
        ],
        env,
        2,
      );
      expect(again!.code, again!.stderr).toBe(0);
      expect(again!.stderr).toBe(`keywarden fetch: wrote 1 secret to ${dir} (db-password v2); 1 unchanged\n`);
      expect(quiet!.code, quiet!.stderr).toBe(0);
      expect(quiet!.stderr).toBe('');
      expect(fs.readdirSync(path.join(tmp, 'quiet')).filter((f) => !f.startsWith('.')).sort()).toEqual(['api.token', 'db-password', 'third']);

      const unchanged = await runCli(['fetch', '--dir', dir, '--secret', 'api.token'], env);
      expect(unchanged.code, unchanged.stderr).toBe(0);
      expect(unchanged.stderr).toBe(`keywarden fetch: 1 secret in ${dir} already up to date; removed 1 stale file\n`);
      for (const r of [first, again, quiet, unchanged]) for (const v of ['ergo-secret-value-1', 'ergo-secret-value-2', c.clientSecret]) expect(r!.stderr).not.toContain(v);
    });
  });

  describe('audit checkpoint', () => {
    type Row = { seq: number; actor_kind: string; actor_id: string | null; actor_name: string | null; action: string; resource_kind: string; resource_name: string; outcome: string; details: string };
    const checkpointEvents = async (): Promise<Row[]> =>
      b.tb.handle.knex('audit_events').where({ action: 'audit.checkpoint' }).orderBy('seq').select('*');

    it('from the CLI records the audit.checkpoint event the API records, with the local user as actor', async () => {
      const api = await b.api('POST', '/v1/audit/checkpoints');
      expect(api.status).toBe(201);
      const before = await checkpointEvents();
      expect(before).toHaveLength(1);

      const r = await runCli(['audit', 'checkpoint'], siteEnv);
      expect(r.code, r.stderr).toBe(0);
      const [origin, size] = r.stdout.split('\n');
      expect(origin).toBe(api.body.origin);
      expect(Number(size)).toBeGreaterThan(api.body.treeSize); // the API's own event was sequenced since

      const after = await checkpointEvents();
      expect(after).toHaveLength(2);
      const [fromApi, fromCli] = after as [Row, Row];
      const shape = (e: Row) => ({ action: e.action, resource: `${e.resource_kind}/${e.resource_name}`, outcome: e.outcome });
      expect(shape(fromCli)).toEqual(shape(fromApi));
      expect(fromApi.actor_kind).toBe('operator');
      expect(fromCli).toMatchObject({ actor_kind: 'system', actor_name: 'keywarden-cli' });
      expect(fromCli.actor_id).toContain(`@${os.hostname()}`);
      expect(JSON.parse(fromCli.details)).toEqual({ treeSize: Number(size), via: 'cli' });
    });
  });
});
