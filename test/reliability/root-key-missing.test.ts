import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import supertest from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBroker } from '../../src/broker.js';
import { loadConfig } from '../../src/config.js';
import { ROOT_KEY_UNAVAILABLE_EXIT_CODE } from '../../src/crypto/key-provider.js';
import { rewrapAll } from '../../src/crypto/root-key-rotation.js';
import { createServices } from '../../src/broker.js';
import { silentLogger } from '../support/broker.js';
import { freePort } from '../support/registry.js';
import { dropSite, newSite, openSite, type Site } from '../support/site.js';

/**
 * A missing root key is never replaced by a new one. The real CLI runs against a data dir whose
 * database holds secrets but whose root-key.json is gone: it must refuse with a message naming
 * the expected path and how to restore it, exit 66, create no key file, and leave the database
 * exactly as it was. An empty database still gets a fresh key on first start. Runs on SQLite,
 * and on a private PostgreSQL schema when KEYWARDEN_TEST_DATABASE_URL is set.
 */
const root = path.resolve(import.meta.dirname, '../..');
const sha256 = (b: Buffer | string) => crypto.createHash('sha256').update(b).digest('hex');


function siteEnv(site: Site, port: number): Record<string, string> {
  const env: Record<string, string> = {};
  // the parent's KEYWARDEN_* settings must not leak into the CLI under test
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('KEYWARDEN_') && v !== undefined) env[k] = v;
  return { ...env, KEYWARDEN_DATA_DIR: site.dataDir, KEYWARDEN_DATABASE_URL: site.databaseUrl, KEYWARDEN_LISTEN: `127.0.0.1:${port}`, KEYWARDEN_LOG_LEVEL: 'warn' };
}

/** Runs `keywarden <args>` as a process (bounded), like an operator would. */
async function runCli(site: Site, args: string[]): Promise<{ code: number | null; stderr: string; stdout: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'src/cli/main.ts'), ...args], {
    cwd: root,
    env: siteEnv(site, await freePort()),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  let stdout = '';
  child.stderr!.on('data', (d) => (stderr += d));
  child.stdout!.on('data', (d) => (stdout += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), 45_000);
  const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
  clearTimeout(timer);
  return { code, stderr, stdout };
}

/** Every row of every table, canonicalised and hashed per table: any write shows up. */
async function snapshot(site: Site): Promise<Record<string, string>> {
  const handle = await openSite(site);
  try {
    const db = handle.knex;
    const tables: string[] = site.sqliteFile
      ? (await db.raw(`SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name`)).map((r: any) => r.name)
      : (await db.raw(`SELECT table_name FROM information_schema.tables WHERE table_schema = ? ORDER BY table_name`, [site.schema!])).rows.map((r: any) => r.table_name);
    const result: Record<string, string> = {};
    for (const table of tables) {
      const rows = await db(table).select('*');
      const lines = rows.map((r: Record<string, unknown>) =>
        JSON.stringify(Object.keys(r).sort().map((k) => [k, Buffer.isBuffer(r[k]) ? (r[k] as Buffer).toString('hex') : r[k]])),
      );
      result[table] = `${rows.length}:${sha256(lines.sort().join('\n'))}`;
    }
    return result;
  } finally {
    await handle.close();
  }
}

/** Populates a site as a running broker would: key file, schema, admin key, a group and secrets. */
async function populate(site: Site): Promise<void> {
  const config = loadConfig({ KEYWARDEN_DATA_DIR: site.dataDir, KEYWARDEN_DATABASE_URL: site.databaseUrl, KEYWARDEN_LOG_LEVEL: 'silent' });
  const broker = await createBroker(config, { logger: silentLogger });
  try {
    const key = (await broker.services.apiKeys.bootstrapAdmin())!;
    const auth = { Authorization: `Bearer ${key}` };
    expect((await supertest(broker.app).post('/v1/groups').set(auth).send({ name: 'app' })).status).toBe(201);
    for (const name of ['db.password', 'api.token']) {
      const res = await supertest(broker.app).post('/v1/secrets').set(auth).send({ name, value: `value-of-${name}`, groups: ['app'] });
      expect(res.status, JSON.stringify(res.body)).toBe(201);
    }
  } finally {
    await broker.close();
  }
}

describe('a missing root key is never replaced', () => {
  let site: Site;
  let savedKey: Buffer;

  beforeAll(async () => {
    site = newSite('kw-rootkey-missing');
    await populate(site);
    expect(fs.existsSync(site.keyFile)).toBe(true);
    savedKey = fs.readFileSync(site.keyFile);
  }, 60_000);
  afterAll(async () => {
    if (site) await dropSite(site);
  });

  it('serve refuses (exit 66), names the expected path and how to restore it, writes no key and changes nothing', async () => {
    fs.rmSync(site.keyFile);
    const before = await snapshot(site);
    expect(before.secret_versions).toMatch(/^2:/);
    const fileHash = site.sqliteFile ? sha256(fs.readFileSync(site.sqliteFile)) : undefined;

    const { code, stderr } = await runCli(site, ['serve']);
    expect(code, stderr).toBe(ROOT_KEY_UNAVAILABLE_EXIT_CODE);
    expect(stderr).toContain(`root key file ${site.keyFile} is missing`);
    expect(stderr).toMatch(/secret_versions: 2/);
    expect(stderr).toMatch(/restore the key file from your backup/i);
    expect(stderr).toContain('KEYWARDEN_ROOT_KEY');
    // the misleading message of the old behaviour is gone, and no admin key was printed
    expect(stderr).not.toMatch(/tampered or wrong root key/);
    expect(stderr).not.toMatch(/kw_[A-Za-z0-9_-]{40,}/);

    expect(fs.existsSync(site.keyFile)).toBe(false);
    expect(fs.readdirSync(site.dataDir).filter((f) => f.startsWith('root-key'))).toEqual([]);
    expect(await snapshot(site)).toEqual(before);
    if (fileHash) expect(sha256(fs.readFileSync(site.sqliteFile!))).toBe(fileHash);
  }, 60_000);

  it('init and rotate-root-key refuse the same way', async () => {
    const before = await snapshot(site);
    for (const args of [['init'], ['rotate-root-key']]) {
      const { code, stderr } = await runCli(site, args);
      expect(code, `${args.join(' ')}: ${stderr}`).toBe(ROOT_KEY_UNAVAILABLE_EXIT_CODE);
      expect(stderr).toContain(`root key file ${site.keyFile} is missing`);
      expect(fs.existsSync(site.keyFile)).toBe(false);
    }
    expect(await snapshot(site)).toEqual(before);
  }, 90_000);

  it('a key file that lacks a version the database uses is refused with a clear message', async () => {
    // the operator restores a backup taken before the last rotation
    fs.writeFileSync(site.keyFile, savedKey, { mode: 0o600 });
    const config = loadConfig({ KEYWARDEN_DATA_DIR: site.dataDir, KEYWARDEN_DATABASE_URL: site.databaseUrl, KEYWARDEN_LOG_LEVEL: 'silent' });
    const services = await createServices(config, { logger: silentLogger });
    try {
      expect(await services.keyProvider.rotate()).toBe('2');
      await rewrapAll(services.database, services.keyProvider);
    } finally {
      await services.database.close();
      await services.dbHandle.close();
    }
    fs.writeFileSync(site.keyFile, savedKey, { mode: 0o600 });
    const before = await snapshot(site);

    const { code, stderr } = await runCli(site, ['serve']);
    expect(code, stderr).toBe(ROOT_KEY_UNAVAILABLE_EXIT_CODE);
    expect(stderr).toContain(`the root key in ${site.keyFile} lacks a version the database refers to: version 2`);
    expect(stderr).not.toMatch(/tampered or wrong root key/);
    expect(fs.readFileSync(site.keyFile).equals(savedKey)).toBe(true);
    expect(await snapshot(site)).toEqual(before);
  }, 90_000);
});

describe('an empty database gets a fresh root key', () => {
  let site: Site;
  beforeAll(() => {
    site = newSite('kw-rootkey-missing');
  });
  afterAll(async () => {
    if (site) await dropSite(site);
  });

  it('first start creates the key (mode 0600), also after `migrate` made the empty schema', async () => {
    const migrated = await runCli(site, ['migrate']);
    expect(migrated.code, migrated.stderr).toBe(0);
    expect(fs.existsSync(site.keyFile)).toBe(false);

    const init = await runCli(site, ['init']);
    expect(init.code, init.stderr).toBe(0);
    expect(init.stdout).toMatch(/admin API key/);
    expect(fs.statSync(site.keyFile).mode & 0o777).toBe(0o600);
    expect(JSON.parse(fs.readFileSync(site.keyFile, 'utf8'))).toMatchObject({ format: 'keywarden-root-key/v1', current: '1' });
  }, 90_000);
});
