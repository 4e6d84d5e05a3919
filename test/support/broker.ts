import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import supertest from 'supertest';
import { createBroker, type Broker, type BrokerOptions } from '../../src/broker.js';
import { loadConfig, type Config } from '../../src/config.js';
import { LocalKeyProvider } from '../../src/crypto/local-key-provider.js';
import { openDatabase, type DbHandle, type DbOptions } from '../../src/db/connection.js';

/** Set KEYWARDEN_TEST_DATABASE_URL=postgres://... to run the suite on PostgreSQL. */
export const TEST_DATABASE_URL = process.env.KEYWARDEN_TEST_DATABASE_URL;
export const dialectUnderTest = TEST_DATABASE_URL ? 'postgres' : 'sqlite';

export interface TestDatabase {
  url: string;
  schema?: string;
  /** `options` as for openDatabase (the schema is the database's own). */
  open(options?: Omit<DbOptions, 'schema'>): Promise<DbHandle>;
  drop(): Promise<void>;
}

/** A fresh, empty database: a temp SQLite file, or a new PostgreSQL schema. */
export function freshDatabase(): TestDatabase {
  if (TEST_DATABASE_URL) {
    const schema = `kw_test_${crypto.randomBytes(6).toString('hex')}`;
    return {
      url: TEST_DATABASE_URL,
      schema,
      open: (options) => openDatabase(TEST_DATABASE_URL, { ...options, schema }),
      async drop() {
        const handle = await openDatabase(TEST_DATABASE_URL);
        try {
          await handle.knex.raw(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
        } finally {
          await handle.close();
        }
      },
    };
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kw-test-'));
  const url = `sqlite:${path.join(dir, 'keywarden.db')}`;
  return {
    url,
    open: (options) => openDatabase(url, options),
    async drop() {
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

export const silentLogger = pino({ level: 'silent' });

/**
 * A broker on a SQLite file of its own, whatever database the rest of the suite runs on, built
 * from configuration the way `serve` builds it (it opens its own connections).
 */
export async function startSqliteFileBroker(env: Record<string, string> = {}): Promise<{ broker: Broker; dir: string; close(): Promise<void> }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kw-sqlite-'));
  const config = loadConfig({
    KEYWARDEN_DATA_DIR: dir,
    KEYWARDEN_DATABASE_URL: `sqlite:${path.join(dir, 'keywarden.db')}`,
    KEYWARDEN_ROOT_KEY: crypto.randomBytes(32).toString('base64'),
    KEYWARDEN_LOG_LEVEL: 'silent',
    KEYWARDEN_ISSUER: 'http://127.0.0.1:8750',
    ...env,
  });
  let broker: Broker;
  try {
    broker = await createBroker(config, { logger: silentLogger });
  } catch (err) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    broker,
    dir,
    async close() {
      await broker.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface TestBroker {
  broker: Broker;
  config: Config;
  db: TestDatabase;
  handle: DbHandle;
  adminKey: string;
  request: supertest.Agent;
  dataDir: string;
  /** Creates an operator API key with the given role and returns it. */
  apiKey(role: 'admin' | 'writer' | 'auditor' | 'signer', extra?: Record<string, unknown>): Promise<string>;
  /** Creates a client in the given groups and returns its credentials and an access token. */
  client(name: string, groups?: string[]): Promise<{ clientId: string; clientSecret: string; token: string }>;
  close(): Promise<void>;
}

export interface TestBrokerOptions extends Omit<BrokerOptions, 'db'> {
  env?: Record<string, string>;
  db?: TestDatabase;
  /** Reuse a root key (e.g. for a second instance on the same database). */
  rootKey?: string;
  /** Do not drop the database on close (another instance still uses it). */
  keepDatabase?: boolean;
}

export async function startTestBroker(options: TestBrokerOptions = {}): Promise<TestBroker> {
  const db = options.db ?? freshDatabase();
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kw-data-'));
  const rootKey = options.rootKey ?? crypto.randomBytes(32).toString('base64');
  const config = loadConfig({
    KEYWARDEN_DATA_DIR: dataDir,
    KEYWARDEN_DATABASE_URL: db.url,
    KEYWARDEN_ROOT_KEY: rootKey,
    KEYWARDEN_LOG_LEVEL: 'silent',
    KEYWARDEN_ISSUER: 'http://127.0.0.1:8750',
    // KEYWARDEN_SQLITE_FAST_PATH=off npx vitest run: the whole suite without the synchronous SQLite connection
    ...(process.env.KEYWARDEN_SQLITE_FAST_PATH ? { KEYWARDEN_SQLITE_FAST_PATH: process.env.KEYWARDEN_SQLITE_FAST_PATH } : {}),
    ...options.env,
  });
  // the configured time limits, as the broker applies them when it opens the database itself
  const handle = await db.open({ timeouts: config.dbTimeouts });
  const { env: _env, db: _db, rootKey: _rk, keepDatabase: _kd, ...brokerOptions } = options;
  let broker: Broker;
  try {
    broker = await createBroker(config, {
      logger: silentLogger,
      keyProvider: brokerOptions.keyProvider ?? LocalKeyProvider.fromEnv(rootKey),
      ...brokerOptions,
      db: handle,
    });
  } catch (err) {
    // a broker that refuses to start (a test of exactly that) leaves nothing open behind it
    await handle.close();
    if (!options.keepDatabase) await db.drop();
    fs.rmSync(dataDir, { recursive: true, force: true });
    throw err;
  }
  const adminKey = (await broker.services.apiKeys.bootstrapAdmin()) ?? (await createAdminDirectly(broker));
  const request = supertest.agent(broker.app);
  const auth = (key: string) => ({ Authorization: `Bearer ${key}` });
  return {
    broker,
    config,
    db,
    handle,
    adminKey,
    request,
    dataDir,
    async apiKey(role, extra = {}) {
      const res = await supertest(broker.app)
        .post('/v1/api-keys')
        .set(auth(adminKey))
        .send({ name: `${role}-${crypto.randomBytes(3).toString('hex')}`, role, ...extra });
      if (res.status !== 201) throw new Error(`api key create failed: ${res.status} ${JSON.stringify(res.body)}`);
      return res.body.key as string;
    },
    async client(name, groups = []) {
      const res = await supertest(broker.app).post('/v1/clients').set(auth(adminKey)).send({ name, groups });
      if (res.status !== 201) throw new Error(`client create failed: ${res.status} ${JSON.stringify(res.body)}`);
      const tokenRes = await supertest(broker.app)
        .post('/v1/auth/token')
        .type('form')
        .send({ grant_type: 'client_credentials', client_id: res.body.clientId, client_secret: res.body.clientSecret });
      if (tokenRes.status !== 200) throw new Error(`token failed: ${tokenRes.status} ${JSON.stringify(tokenRes.body)}`);
      return { clientId: res.body.clientId, clientSecret: res.body.clientSecret, token: tokenRes.body.access_token };
    },
    async close() {
      await broker.close();
      await handle.close();
      if (!options.keepDatabase) await db.drop();
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** A second broker instance sharing the database gets its own admin key for convenience. */
async function createAdminDirectly(broker: Broker): Promise<string> {
  const key = `kw_${crypto.randomBytes(32).toString('base64url')}`;
  await broker.services.db('api_keys').insert({
    id: crypto.randomBytes(9).toString('base64url'),
    name: 'test-admin',
    role: 'admin',
    key_hash: crypto.createHash('sha256').update(key).digest('hex'),
    created_by: 'test',
    created_at: Date.now(),
  });
  return key;
}

export function bearer(token: string) {
  return { Authorization: `Bearer ${token}` };
}
