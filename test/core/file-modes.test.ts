import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBroker, type Broker } from '../../src/broker.js';
import { loadConfig } from '../../src/config.js';
import { secureDataDir } from '../../src/data-dir.js';
import { silentLogger } from '../support/broker.js';
import supertest from 'supertest';
import { auth } from './helpers.js';

/**
 * Everything the broker keeps on disk is its user's alone: the data directory 0700, and the
 * SQLite database with its -wal/-shm files, the root key file and the audit file 0600, even
 * when the data directory already existed with a looser mode (as an installer may create it).
 * This is the default embedded setup (SQLite and a local key file in the data directory), so
 * it runs on SQLite whatever database the rest of the suite uses.
 */
const mode = (file: string) => (fs.statSync(file).mode & 0o777).toString(8);

describe('files the broker creates are private to its user', () => {
  const parent = fs.mkdtempSync(path.join(os.tmpdir(), 'kw-modes-'));
  const dataDir = path.join(parent, 'data');
  const auditDir = path.join(parent, 'logs');
  let broker: Broker;

  beforeAll(async () => {
    fs.mkdirSync(dataDir, { mode: 0o755 });
    fs.chmodSync(dataDir, 0o755);
    // an audit file that existed before, world-readable
    fs.mkdirSync(auditDir);
    fs.writeFileSync(path.join(auditDir, 'audit.jsonl'), '', { mode: 0o644 });
    fs.chmodSync(path.join(auditDir, 'audit.jsonl'), 0o644);
    const config = loadConfig({
      KEYWARDEN_DATA_DIR: dataDir,
      KEYWARDEN_AUDIT_FILE: path.join(auditDir, 'audit.jsonl'),
      KEYWARDEN_LOG_LEVEL: 'silent',
    });
    broker = await createBroker(config, { logger: silentLogger });
  });
  afterAll(async () => {
    await broker?.close();
    fs.rmSync(parent, { recursive: true, force: true });
  });

  it('data dir 0700; database, -wal, -shm, root key and audit file 0600 after a write', async () => {
    const adminKey = (await broker.services.apiKeys.bootstrapAdmin())!;
    const res = await supertest(broker.app).post('/v1/secrets').set(auth(adminKey)).send({ name: 'modes.secret', value: 'modes-secret-value' });
    expect(res.status, res.text).toBe(201);

    expect(mode(dataDir)).toBe('700');
    const db = path.join(dataDir, 'keywarden.db');
    for (const file of [db, `${db}-wal`, `${db}-shm`, path.join(dataDir, 'root-key.json'), path.join(auditDir, 'audit.jsonl')]) {
      expect(fs.existsSync(file), file).toBe(true);
      expect(mode(file), file).toBe('600');
    }
    expect(fs.readFileSync(path.join(auditDir, 'audit.jsonl'), 'utf8')).toContain('secret.create');
    // nothing else in the data dir is readable by others either
    for (const entry of fs.readdirSync(dataDir)) expect(mode(path.join(dataDir, entry)), entry).toBe('600');
  });

  it('a database left with loose modes by an older version is tightened on start', async () => {
    await broker.close();
    const db = path.join(dataDir, 'keywarden.db');
    for (const file of [db, `${db}-wal`, `${db}-shm`].filter((f) => fs.existsSync(f))) fs.chmodSync(file, 0o644);
    fs.chmodSync(dataDir, 0o755);
    broker = await createBroker(loadConfig({ KEYWARDEN_DATA_DIR: dataDir, KEYWARDEN_LOG_LEVEL: 'silent' }), { logger: silentLogger });
    expect(await broker.services.db('secrets').where({ name: 'modes.secret' }).first()).toBeDefined();
    expect(mode(dataDir)).toBe('700');
    for (const file of [db, `${db}-wal`, `${db}-shm`].filter((f) => fs.existsSync(f))) expect(mode(file), file).toBe('600');
    expect(fs.existsSync(db)).toBe(true);
  });
});

describe('a data directory owned by another user', () => {
  // only root can hand a directory to another user; CI runs as root
  it.skipIf(process.getuid?.() !== 0)('is left as it is, with a warning, and the broker still starts', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kw-foreign-'));
    try {
      fs.chmodSync(dir, 0o755);
      fs.chownSync(dir, 65534, 65534);
      const warnings: unknown[] = [];
      secureDataDir(dir, { warn: (...args: unknown[]) => void warnings.push(args) } as any);
      expect(mode(dir)).toBe('755');
      expect(JSON.stringify(warnings)).toMatch(/owned by another user/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
