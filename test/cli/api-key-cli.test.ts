import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import supertest from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { apiKeyCreate, apiKeyList, apiKeyRevoke, parseExpires } from '../../src/cli/api-key-commands.js';
import { baseEnv, closedPort, runCli, startCliBroker, type CliBroker } from './cli-support.js';

/**
 * `keywarden api-key create|list|revoke` as automation runs it: real processes talking HTTP to a
 * broker on loopback with an admin API key (KEYWARDEN_API_KEY or --api-key-file). Grants and
 * denials (a writer key may not manage keys), the broker's problem detail on stderr, usage errors
 * exit 64. The broker validates every response it sends against openapi.yaml.
 */
const KEY_LINE = /^kw_[A-Za-z0-9_-]{40,}\n$/;

describe('keywarden api-key', () => {
  let b: CliBroker;
  let env: Record<string, string>;
  let dir: string;
  const as = (key: string) => ({ Authorization: `Bearer ${key}` });

  beforeAll(async () => {
    b = await startCliBroker();
    env = baseEnv({ KEYWARDEN_ADDR: b.url, KEYWARDEN_API_KEY: b.tb.adminKey });
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kw-api-key-cli-'));
  }, 60_000);
  afterAll(async () => {
    await b?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('create prints the new key alone on stdout; list shows it; revoke ends it', async () => {
    const created = await runCli(['api-key', 'create', '--role', 'writer', '--name', 'ci-deployer', '--expires', '7d'], env);
    expect(created.code, created.stderr).toBe(0);
    expect(created.stdout).toMatch(KEY_LINE);
    const key = created.stdout.trim();
    expect(created.stderr).not.toContain(key);
    const id = /created API key (\S+) \(writer, ci-deployer\), expires /.exec(created.stderr)?.[1];
    expect(id, created.stderr).toBeDefined();

    // the key works with its role: a writer route yes, an admin route no
    expect((await supertest(b.tb.broker.app).get('/v1/secrets').set(as(key))).status).toBe(200);
    expect((await supertest(b.tb.broker.app).get('/v1/api-keys').set(as(key))).status).toBe(403);

    const listed = await runCli(['api-key', 'list'], env);
    expect(listed.code, listed.stderr).toBe(0);
    const lines = listed.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^ID\s+NAME\s+ROLE\s+STATUS\s+CREATED\s+EXPIRES\s+CREATED BY$/);
    const row = lines.find((l) => l.startsWith(`${id} `));
    expect(row, listed.stdout).toMatch(/ci-deployer\s+writer\s+active\s+\S+Z\s+\S+Z\s+/);
    expect(listed.stdout).not.toMatch(/kw_[A-Za-z0-9_-]{40,}/);

    const json = await runCli(['api-key', 'list', '--json'], env);
    expect(json.code, json.stderr).toBe(0);
    const items = JSON.parse(json.stdout).items as Array<{ id: string; role: string; expiresAt: string | null; revokedAt: string | null }>;
    const item = items.find((k) => k.id === id)!;
    expect(item).toMatchObject({ role: 'writer', revokedAt: null });
    expect(Date.parse(item.expiresAt!) - Date.now()).toBeGreaterThan(7 * 86400_000 - 600_000);

    const revoked = await runCli(['api-key', 'revoke', id!], env);
    expect(revoked.code, revoked.stderr).toBe(0);
    expect(revoked.stderr).toContain(`revoked API key ${id}`);
    expect((await supertest(b.tb.broker.app).get('/v1/secrets').set(as(key))).status).toBe(401);
    const after = await runCli(['api-key', 'list'], env);
    expect(after.stdout.split('\n').find((l) => l.startsWith(`${id} `))).toMatch(/\brevoked\b/);
  }, 90_000);

  it('create --json, with the admin key read from --api-key-file', async () => {
    const keyFile = path.join(dir, 'admin.key');
    fs.writeFileSync(keyFile, `${b.tb.adminKey}\n`, { mode: 0o600 });
    const { KEYWARDEN_API_KEY: _unused, ...withoutKey } = env;
    const res = await runCli(['api-key', 'create', '--role', 'auditor', '--name', 'siem', '--api-key-file', keyFile, '--json'], withoutKey);
    expect(res.code, res.stderr).toBe(0);
    const body = JSON.parse(res.stdout);
    expect(body).toMatchObject({ role: 'auditor', name: 'siem', expiresAt: null, revokedAt: null });
    expect(body.key).toMatch(/^kw_/);
    expect((await supertest(b.tb.broker.app).get('/v1/audit').set(as(body.key))).status).toBe(200);
  }, 60_000);

  it('a writer key may not create, list or revoke keys: exit 77 with the broker’s problem', async () => {
    const writer = await b.tb.apiKey('writer');
    const wenv = { ...env, KEYWARDEN_API_KEY: writer };
    const before = (await b.api('GET', '/v1/api-keys')).body.items.length;
    const [create, list, revoke] = await Promise.all([
      runCli(['api-key', 'create', '--role', 'admin', '--name', 'escalate'], wenv),
      runCli(['api-key', 'list'], wenv),
      runCli(['api-key', 'revoke', 'bootstrap-admin'], wenv),
    ]);
    for (const res of [create, list, revoke]) {
      expect(res.code, res.stderr).toBe(77);
      expect(res.stdout).toBe('');
      expect(res.stderr).toMatch(/the broker refused the API key \(HTTP 403 forbidden: role writer may not call this route\)/);
      expect(res.stderr).not.toContain(writer);
    }
    expect((await b.api('GET', '/v1/api-keys')).body.items.length).toBe(before);
    expect((await supertest(b.tb.broker.app).get('/v1/api-keys').set(as(b.tb.adminKey))).status).toBe(200);

    const unknownKey = await runCli(['api-key', 'list'], { ...env, KEYWARDEN_API_KEY: 'kw_not-a-key-at-all-but-long-enough-to-look-like-one' });
    expect(unknownKey.code, unknownKey.stderr).toBe(77);
    expect(unknownKey.stderr).toMatch(/HTTP 401 invalid_api_key: the API key is not valid/);
  }, 60_000);

  it('a refusal of the broker exits 1 with its detail; an unreachable broker exits 69', async () => {
    const missing = await runCli(['api-key', 'revoke', 'no-such-key-id'], env);
    expect(missing.code, missing.stderr).toBe(1);
    expect(missing.stderr).toMatch(/revoking API key no-such-key-id failed: HTTP 404 not_found: /);

    const port = await closedPort();
    const down = await runCli(['api-key', 'list', '--timeout', '5'], { ...env, KEYWARDEN_ADDR: `http://127.0.0.1:${port}` });
    expect(down.code, down.stderr).toBe(69);
    expect(down.stderr).toMatch(/unreachable: connection refused/);
  }, 60_000);

  it('usage errors exit 64 without calling the broker', async () => {
    const { KEYWARDEN_API_KEY: _k, ...noKey } = env;
    const { KEYWARDEN_ADDR: _a, ...noAddr } = env;
    const before = (await b.api('GET', '/v1/api-keys')).body.items.length;
    // as processes: commander's own usage errors, and the command's checks
    const cases: Array<[string[], Record<string, string>, RegExp]> = [
      [['api-key'], env, /Usage: keywarden api-key/],
      [['api-key', 'create', '--name', 'x'], env, /required option '--role <role>'/],
      [['api-key', 'list', '--bogus'], env, /unknown option '--bogus'/],
      [['api-key', 'revoke', 'kw_this-looks-like-a-key-not-an-id-0123456789abcdef'], env, /is not an API key id/],
      [['api-key', 'list'], noAddr, /KEYWARDEN_ADDR is not set/],
    ];
    const results = await inBatches(cases, 3, ([args, e]) => runCli(args, e));
    results.forEach((res, i) => {
      expect(res.code, `${cases[i][0].join(' ')}: ${res.stderr}`).toBe(64);
      expect(res.stderr + res.stdout).toMatch(cases[i][2]);
    });

    // the rest of the checks in process (the same functions the actions run)
    const io = (e: Record<string, string>) => {
      const err: string[] = [];
      const out: string[] = [];
      const sink = (into: string[]) => ({ write: (s: string) => into.push(s) }) as unknown as NodeJS.WritableStream;
      return { io: { env: e, out: sink(out), err: sink(err) }, text: () => err.join('') + out.join('') };
    };
    const create = (opts: Record<string, unknown>, e = env) => {
      const x = io(e);
      return apiKeyCreate({ timeout: '30', ...opts }, x.io).then((code) => ({ code, text: x.text() }));
    };
    const checks: Array<[Promise<{ code: number; text: string }>, RegExp]> = [
      [create({ role: 'root', name: 'x' }), /--role must be one of admin, writer, auditor, signer/],
      [create({ role: 'writer', name: 'bad name' }), /--name must match/],
      [create({ role: 'writer', name: 'x', expires: '10s' }), /--expires: must be at least one minute/],
      [create({ role: 'writer', name: 'x', expires: '2001-01-01T00:00:00Z' }), /--expires: .* is in the past/],
      [create({ role: 'writer', name: 'x', scopeKey: ['k'] }), /apply to --role signer only/],
      [create({ role: 'writer', name: 'x', timeout: 'soon' }), /--timeout must be a number/],
      [create({ role: 'writer', name: 'x' }, { ...env, KEYWARDEN_ADDR: 'ftp://broker' }), /KEYWARDEN_ADDR must be an http/],
      [create({ role: 'writer', name: 'x' }, noKey), /KEYWARDEN_API_KEY is not set/],
      [create({ role: 'writer', name: 'x', apiKeyFile: path.join(os.tmpdir(), 'kw-no-such-file') }), /--api-key-file: cannot read/],
      [(async () => { const x = io(env); return { code: await apiKeyRevoke('a/b', { timeout: '30' }, x.io), text: x.text() }; })(), /is not an API key id/],
      [(async () => { const x = io(noKey); return { code: await apiKeyList({ timeout: '30' }, x.io), text: x.text() }; })(), /KEYWARDEN_API_KEY is not set/],
    ];
    for (const [run, message] of checks) {
      const { code, text } = await run;
      expect(code, text).toBe(64);
      expect(text).toMatch(message);
    }
    expect((await b.api('GET', '/v1/api-keys')).body.items.length).toBe(before);
  }, 120_000);

  it('parses --expires as a duration, an ISO 8601 time or never', () => {
    const now = Date.parse('2030-01-01T00:00:00Z');
    expect(parseExpires('90m')).toBe(5400);
    expect(parseExpires('24h')).toBe(86400);
    expect(parseExpires('7d')).toBe(7 * 86400);
    expect(parseExpires('2w')).toBe(14 * 86400);
    expect(parseExpires('2030-01-02T00:00:00Z', { now })).toBe(86400);
    expect(parseExpires('never', { allowNever: true })).toBeUndefined();
    expect(() => parseExpires('never')).toThrow(/must be a duration/);
    expect(() => parseExpires('59s')).toThrow(/at least one minute/);
    expect(() => parseExpires('11000d')).toThrow(/at most ten years/);
    expect(() => parseExpires('1.5h')).toThrow(/must be a duration/);
  });
});

/** Runs `fn` over `items`, `size` at a time (CLI processes are slow to start on a busy machine). */
async function inBatches<T, R>(items: T[], size: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = [];
  for (let i = 0; i < items.length; i += size) out.push(...(await Promise.all(items.slice(i, i + size).map(fn))));
  return out;
}
