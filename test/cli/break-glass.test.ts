import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import supertest from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBroker, type Broker } from '../../src/broker.js';
import { loadConfig } from '../../src/config.js';
import { ROOT_KEY_UNAVAILABLE_EXIT_CODE } from '../../src/crypto/key-provider.js';
import { silentLogger } from '../support/broker.js';
import { breakGlass, readLoginUid, userName, whoAmI, type BreakGlassOptions } from '../../src/cli/break-glass-command.js';
import { baseEnv, runCli } from './cli-support.js';
import { dropSite, newSite, openSite, type Site } from '../support/site.js';

/**
 * `keywarden break-glass` as an operator runs it on the broker host: a real process with the
 * broker's configuration, after every admin key was revoked. It must give a working admin key,
 * record who and why in the audit log (never the key), and refuse without creating anything when
 * the root key is missing or another key, or when there is no database. SQLite, and a private
 * PostgreSQL schema when KEYWARDEN_TEST_DATABASE_URL is set.
 */
const KEY = /kw_[A-Za-z0-9_-]{40,}/;
const sha256 = (s: string | Buffer) => crypto.createHash('sha256').update(s).digest('hex');

const siteEnv = (site: Site, extra: Record<string, string> = {}) =>
  baseEnv({ KEYWARDEN_DATA_DIR: site.dataDir, KEYWARDEN_DATABASE_URL: site.databaseUrl, KEYWARDEN_LOG_LEVEL: 'warn', ...extra });

/** What break-glass could change: the API keys (hashed per row) and how many audit events there are. */
async function keysAndEvents(site: Site): Promise<{ apiKeys: string; auditEvents: number }> {
  const handle = await openSite(site);
  try {
    const rows = await handle.knex('api_keys').select('*').orderBy('id');
    const events = await handle.knex('audit_events').count({ n: '*' }).first();
    return { apiKeys: `${rows.length}:${sha256(JSON.stringify(rows))}`, auditEvents: Number(events?.n) };
  } finally {
    await handle.close();
  }
}

const startBroker = (site: Site): Promise<Broker> =>
  createBroker(loadConfig({ KEYWARDEN_DATA_DIR: site.dataDir, KEYWARDEN_DATABASE_URL: site.databaseUrl, KEYWARDEN_LOG_LEVEL: 'silent' }), { logger: silentLogger });

describe('keywarden break-glass', () => {
  let site: Site;
  let firstKey: string;

  beforeAll(async () => {
    site = newSite('kw-break-glass');
    const init = await runCli(['init'], siteEnv(site));
    expect(init.code, init.stderr).toBe(0);
    firstKey = KEY.exec(init.stdout)![0];
  }, 90_000);
  afterAll(async () => {
    if (site) await dropSite(site);
  });

  it('init on an initialized site points to break-glass instead of issuing a key', async () => {
    const again = await runCli(['init'], siteEnv(site));
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toMatch(/an admin key already exists/);
    expect(again.stdout).toContain('keywarden break-glass --reason');
    expect(again.stdout + again.stderr).not.toMatch(KEY);
  }, 60_000);

  it('issues a working admin key after every admin key was revoked, audited with who and why but no key', async () => {
    const broker = await startBroker(site);
    try {
      const api = supertest(broker.app);
      const as = (key: string) => ({ Authorization: `Bearer ${key}` });
      // the only admin key is revoked: nothing the API offers can make another one
      expect((await api.delete('/v1/api-keys/bootstrap-admin').set(as(firstKey))).status).toBe(204);
      expect((await api.get('/v1/api-keys').set(as(firstKey))).status).toBe(401);

      // run while the broker serves, as on a broker host
      const reason = `INC-${crypto.randomBytes(3).toString('hex')}: admin key revoked by mistake`;
      const started = Date.now();
      // SUDO_USER set by hand (as root could): recorded only as a claim
      const res = await runCli(['break-glass', '--reason', reason, '--name', 'oncall-recovery', '--expires', '2h'], siteEnv(site, { SUDO_USER: 'alice' }));
      expect(res.code, res.stderr).toBe(0);
      expect(res.signal).toBeNull();
      // the key alone on stdout, once; nothing of it on stderr
      expect(res.stdout).toMatch(/^kw_[A-Za-z0-9_-]{40,}\n$/);
      const key = res.stdout.trim();
      expect(res.stderr).not.toContain(key);
      expect(res.stderr).toMatch(/break-glass admin API key \S+ \(name oncall-recovery\) issued, expires /);

      // the new key is an admin key: an admin-only route answers, and it can make a regular admin key
      const list = await api.get('/v1/api-keys').set(as(key));
      expect(list.status).toBe(200);
      const issued = list.body.items.find((k: { name: string }) => k.name === 'oncall-recovery');
      expect(issued).toMatchObject({ role: 'admin', revokedAt: null, createdBy: `break-glass:${os.userInfo().username}@${os.hostname()}` });
      const expiresIn = Date.parse(issued.expiresAt) - started;
      expect(expiresIn).toBeGreaterThan(2 * 3600_000 - 120_000);
      expect(expiresIn).toBeLessThanOrEqual(2 * 3600_000 + 60_000);
      const created = await api.post('/v1/api-keys').set(as(key)).send({ name: 'admin-2', role: 'admin' });
      expect(created.status).toBe(201);

      // the audit log says who (uids, host, pid) and why, and holds nothing of the key
      const audit = await api.get('/v1/audit').query({ action: 'apikey.break-glass' }).set(as(key));
      expect(audit.status).toBe(200);
      expect(audit.body.items).toHaveLength(1);
      const event = audit.body.items[0];
      expect(event).toMatchObject({
        action: 'apikey.break-glass',
        outcome: 'allow',
        actorKind: 'system',
        actorId: `${os.userInfo().username}@${os.hostname()}`,
        resourceKind: 'api-key',
        resourceName: issued.id,
        reason,
        details: { role: 'admin', name: 'oncall-recovery', osUser: os.userInfo().username, host: os.hostname(), reason, expiresAt: issued.expiresAt },
      });
      // what the process could check: its uids and the kernel's login uid, with their names
      const loginUid = readLoginUid();
      expect(event.details).toMatchObject({
        uid: process.getuid!(),
        euid: process.geteuid!(),
        user: os.userInfo().username,
        loginUid,
        loginUser: userName(loginUid),
        claimedSudoUser: 'alice',
      });
      expect(event.details).not.toHaveProperty('sudoUser');
      expect(event.details.pid).toBeTypeOf('number');
      expect(event.details.pid).not.toBe(process.pid);
      const text = JSON.stringify(event);
      expect(text).not.toContain(key);
      expect(text).not.toContain(sha256(key));
      expect(text).not.toContain(key.slice(3, 20));
      // searchable by who ran it
      const byActor = await api.get('/v1/audit').query({ actor: event.actorId, action: 'apikey.*' }).set(as(key));
      expect(byActor.body.items.map((e: { seq: number }) => e.seq)).toContain(event.seq);

      if (site.sqliteFile) {
        for (const f of fs.readdirSync(site.dataDir).filter((n) => n.startsWith('keywarden.db'))) {
          expect(fs.readFileSync(path.join(site.dataDir, f)).includes(Buffer.from(key)), f).toBe(false);
        }
      }
    } finally {
      await broker.close();
    }
  }, 120_000);

  it('refuses with a missing root key file: exit 66, names the file and the backup, creates no key of either kind', async () => {
    const backup = `${site.keyFile}.bak`;
    fs.renameSync(site.keyFile, backup);
    try {
      const before = await keysAndEvents(site);
      const res = await runCli(['break-glass', '--reason', 'root key gone too'], siteEnv(site));
      expect(res.code, res.stderr).toBe(ROOT_KEY_UNAVAILABLE_EXIT_CODE);
      expect(res.stdout).toBe('');
      expect(res.stderr).toContain(`the root key file ${site.keyFile} is missing`);
      expect(res.stderr).toContain(`copy the backed-up root-key.json to ${site.keyFile}`);
      expect(res.stderr).toContain('KEYWARDEN_ROOT_KEY_FILE');
      expect(res.stderr).toMatch(/never generates a new root key for a database that is not empty/);
      expect(res.stderr).not.toMatch(KEY);
      expect(fs.existsSync(site.keyFile)).toBe(false);
      expect(fs.readdirSync(site.dataDir).filter((f) => f.startsWith('root-key') && !f.endsWith('.bak'))).toEqual([]);
      expect(await keysAndEvents(site)).toEqual(before);
    } finally {
      fs.renameSync(backup, site.keyFile);
    }
  }, 60_000);

  it('refuses another root key than the one that sealed the database (exit 66), leaving it untouched', async () => {
    const real = fs.readFileSync(site.keyFile);
    const other = { format: 'keywarden-root-key/v1', current: '1', versions: { '1': crypto.randomBytes(32).toString('base64') } };
    fs.writeFileSync(site.keyFile, JSON.stringify(other), { mode: 0o600 });
    try {
      const before = await keysAndEvents(site);
      const res = await runCli(['break-glass', '--reason', 'wrong key restored'], siteEnv(site));
      expect(res.code, res.stderr).toBe(ROOT_KEY_UNAVAILABLE_EXIT_CODE);
      expect(res.stdout).toBe('');
      expect(res.stderr).toContain(`the root key in ${site.keyFile} does not open the data keys in this database`);
      expect(await keysAndEvents(site)).toEqual(before);
    } finally {
      fs.writeFileSync(site.keyFile, real, { mode: 0o600 });
    }
  }, 60_000);

  it('refuses a data dir without a database and creates neither database nor root key', async () => {
    const empty = newSite('kw-break-glass');
    try {
      const res = await runCli(['break-glass', '--reason', 'wrong host'], siteEnv(empty));
      expect(res.code, res.stderr).toBe(ROOT_KEY_UNAVAILABLE_EXIT_CODE);
      expect(res.stdout).toBe('');
      expect(res.stderr).toMatch(empty.sqliteFile ? /there is no database at / : /holds no Keywarden data/);
      expect(fs.readdirSync(empty.dataDir)).toEqual([]);
      if (empty.schema) {
        const handle = await openSite(empty);
        try {
          expect(await handle.knex.schema.hasTable('api_keys')).toBe(false);
        } finally {
          await handle.close();
        }
      }
    } finally {
      await dropSite(empty);
    }
  }, 60_000);

  it('usage errors exit 64 before anything is opened', async () => {
    const before = await keysAndEvents(site);
    const cases: Array<[string[], RegExp]> = [
      [['break-glass'], /required option '--reason <text>'/],
      [['break-glass', '--reason', '   '], /--reason is required/],
      [['break-glass', '--reason', 'x', 'extra'], /too many arguments|unknown/i],
    ];
    const results = await inBatches(cases, 3, ([args]) => runCli(args, siteEnv(site)));
    results.forEach((res, i) => {
      expect(res.code, `${cases[i][0].join(' ')}: ${res.stderr}`).toBe(64);
      expect(res.stderr).toMatch(cases[i][1]);
      expect(res.stdout).toBe('');
    });
    // the other checks in process: they return before the broker's configuration is even read
    const inProcess: Array<[BreakGlassOptions, RegExp]> = [
      [{ reason: 'x', expires: '30s' }, /--expires: must be at least one minute/],
      [{ reason: 'x', expires: 'tomorrow' }, /--expires: must be a duration/],
      [{ reason: 'x', expires: '24h', name: 'has space' }, /--name must match/],
      [{ reason: 'line one\nline two', expires: '24h' }, /--reason must be one line/],
      [{ reason: 'x'.repeat(501), expires: '24h' }, /--reason must be at most 500 characters/],
    ];
    for (const [opts, message] of inProcess) {
      let out = '';
      let err = '';
      const code = await breakGlass(opts, { write: (s: string) => (out += s) } as unknown as NodeJS.WritableStream, { write: (s: string) => (err += s) } as unknown as NodeJS.WritableStream);
      expect(code, err).toBe(64);
      expect(err).toMatch(message);
      expect(out).toBe('');
    }
    expect(await keysAndEvents(site)).toEqual(before);
  }, 90_000);
});

describe('break-glass: who ran it', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kw-who-'));
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = (name: string, text: string) => {
    fs.writeFileSync(path.join(dir, name), text);
    return path.join(dir, name);
  };

  it('reads the login uid the kernel keeps; 4294967295 (no login), garbage or no file is null', () => {
    expect(readLoginUid(file('set', '1000\n'))).toBe(1000);
    expect(readLoginUid(file('zero', '0'))).toBe(0);
    expect(readLoginUid(file('unset', '4294967295'))).toBeNull();
    expect(readLoginUid(file('garbage', 'alice'))).toBeNull();
    expect(readLoginUid(path.join(dir, 'absent'))).toBeNull();
  });

  it('names uids from the passwd database, and null for a uid without an entry', () => {
    const passwd = file('passwd', 'root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\n');
    expect(userName(1000, passwd)).toBe('alice');
    expect(userName(0, passwd)).toBe('root');
    expect(userName(null, passwd)).toBeNull();
    expect(userName(2_000_000_000, passwd)).toBeNull();
  });

  it('records SUDO_USER only as claimedSudoUser, beside what the process can verify', () => {
    const who = whoAmI('test', { SUDO_USER: 'alice' }, 1000);
    expect(who).toMatchObject({ claimedSudoUser: 'alice', uid: process.getuid!(), euid: process.geteuid!(), loginUid: 1000, user: os.userInfo().username, osUser: os.userInfo().username });
    expect(who).not.toHaveProperty('sudoUser');
    expect(whoAmI('test', {}, null)).toMatchObject({ claimedSudoUser: null, loginUid: null, loginUser: null });
  });
});

/** Runs `fn` over `items`, `size` at a time (CLI processes are slow to start on a busy machine). */
async function inBatches<T, R>(items: T[], size: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = [];
  for (let i = 0; i < items.length; i += size) out.push(...(await Promise.all(items.slice(i, i + size).map(fn))));
  return out;
}
