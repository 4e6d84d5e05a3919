import supertest from 'supertest';
import { afterEach, describe, expect, it } from 'vitest';
import type { Broker } from '../../src/broker.js';
import { ConfigError, loadConfig } from '../../src/config.js';
import { startSqliteFileBroker } from '../support/broker.js';

/**
 * The database port (src/db/database.ts) owns SQLite's synchronous fast-path connection: with it
 * on, a client's secret read (token check, access rule, audit append) runs no knex statement at
 * all; with KEYWARDEN_SQLITE_FAST_PATH=off every one of them goes through knex, and the broker
 * behaves the same. While a transaction opened through the port is in progress, the fast path
 * steps aside for writes. These brokers always use a SQLite file, whatever database the rest of
 * the suite runs on.
 */
describe('database port and the SQLite fast path', () => {
  let started: Awaited<ReturnType<typeof startSqliteFileBroker>> | undefined;
  afterEach(async () => {
    await started?.close();
    started = undefined;
  });

  async function start(env: Record<string, string>): Promise<{ b: Broker; read: () => Promise<supertest.Response>; admin: Record<string, string> }> {
    started = await startSqliteFileBroker(env);
    const b = started.broker;
    const admin = { Authorization: `Bearer ${await b.services.apiKeys.bootstrapAdmin()}` };
    const request = supertest(b.app);
    expect((await request.post('/v1/groups').set(admin).send({ name: 'app' })).status).toBe(201);
    expect((await request.post('/v1/secrets').set(admin).send({ name: 'db.password', value: 's3cret', groups: ['app'] })).status).toBe(201);
    const created = await request.post('/v1/clients').set(admin).send({ name: 'app-1', groups: ['app'] });
    const token = await request
      .post('/v1/auth/token')
      .type('form')
      .send({ grant_type: 'client_credentials', client_id: created.body.clientId, client_secret: created.body.clientSecret });
    expect(token.status).toBe(200);
    const read = () => request.get('/v1/client/secrets/db.password').set({ Authorization: `Bearer ${token.body.access_token}` });
    // the first read also loads the token's verification key (cached afterwards): the steady state starts with the second
    expect((await read()).status).toBe(200);
    return { b, read, admin };
  }

  /** The SQL knex runs while `fn` runs. */
  async function knexStatements(b: Broker, fn: () => Promise<unknown>): Promise<string[]> {
    const seen: string[] = [];
    const listener = (q: { sql: string }) => seen.push(q.sql);
    b.services.db.on('query', listener);
    try {
      await fn();
    } finally {
      b.services.db.off('query', listener);
    }
    return seen;
  }

  it('on (the default): a client read runs no knex statement, and is recorded', async () => {
    const { b, read } = await start({});
    expect(b.services.database.fastPathEnabled).toBe(true);
    let res: supertest.Response | undefined;
    const sql = await knexStatements(b, async () => {
      res = await read();
    });
    expect(res!.status).toBe(200);
    expect(Buffer.from(res!.body.content, 'base64').toString()).toBe('s3cret');
    expect(sql, sql.join("\n")).toEqual([]);
    const events = await b.services.auditQuery.query({ action: 'secret.read', order: 'desc', limit: 1 });
    expect(events[0]).toMatchObject({ resourceName: 'db.password', outcome: 'allow' });
  });

  it('KEYWARDEN_SQLITE_FAST_PATH=off: the same read goes through knex, with the same answer and audit record', async () => {
    const { b, read, admin } = await start({ KEYWARDEN_SQLITE_FAST_PATH: 'off' });
    expect(b.services.database.fastPathEnabled).toBe(false);
    // a change empties the delivery caches (src/db/cache-epoch.ts), so the read reads again
    expect((await supertest(b.app).patch('/v1/groups/app').set(admin).send({ description: 'empties the caches' })).status).toBe(200);
    let res: supertest.Response | undefined;
    const sql = await knexStatements(b, async () => {
      res = await read();
    });
    expect(res!.status).toBe(200);
    expect(Buffer.from(res!.body.content, 'base64').toString()).toBe('s3cret');
    // the token check, the access rule, the last-read mark and the audit append
    expect(sql.some((s) => /JOIN clients c /.test(s))).toBe(true);
    expect(sql.some((s) => /JOIN access_grants g/.test(s))).toBe(true);
    expect(sql.some((s) => /^INSERT INTO secret_reads/.test(s))).toBe(true);
    expect(sql.some((s) => /^INSERT INTO audit_events/.test(s))).toBe(true);
    const verify = await b.services.auditVerifier.verify();
    expect(verify).toMatchObject({ ok: true });
  });

  it('while a port transaction is open, the audit append steps off the fast path and waits for it', async () => {
    const { b, read } = await start({});
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let inserted = false;
    const transaction = b.services.database.transaction(async (trx) => {
      await trx('groups').where({ name: 'nobody' }).first();
      await held;
      await trx('groups').insert({ name: 'during-read', description: '', labels: '{}', created_by: 'test', created_at: Date.now(), updated_at: Date.now() });
      inserted = true;
    });
    let res: supertest.Response | undefined;
    const sql = await knexStatements(b, async () => {
      const reading = read().then((r) => r); // then() sends the request now
      await new Promise((r) => setTimeout(r, 300));
      release();
      res = await reading;
      await transaction;
    });
    expect(inserted).toBe(true);
    expect(res!.status).toBe(200);
    expect(sql.some((s) => /^INSERT INTO audit_events/.test(s))).toBe(true);
    expect(await b.services.auditVerifier.verify()).toMatchObject({ ok: true });
  });

  it('KEYWARDEN_SQLITE_FAST_PATH accepts on and off only', () => {
    expect(loadConfig({ KEYWARDEN_SQLITE_FAST_PATH: 'off' }).sqliteFastPath).toBe(false);
    expect(loadConfig({}).sqliteFastPath).toBe(true);
    expect(() => loadConfig({ KEYWARDEN_SQLITE_FAST_PATH: 'no' })).toThrow(ConfigError);
  });
});
