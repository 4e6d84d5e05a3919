import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KeyProviderError } from '../../src/crypto/key-provider.js';
import { LocalKeyProvider } from '../../src/crypto/local-key-provider.js';
import { rewrapAll, WRAPPED_KEY_TABLES } from '../../src/crypto/root-key-rotation.js';
import { freshDatabase, startTestBroker, type TestBroker, type TestDatabase } from '../support/broker.js';
import { auth, markSensitive, unb64 } from '../core/helpers.js';

const hex = (b: Buffer) => Buffer.from(b).toString('hex');

describe('local root key file', () => {
  let dir: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kw-rootkey-'));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('is created with mode 0600 and keeps versions across rotate', async () => {
    const file = path.join(dir, 'sub', 'root-key.json');
    const p = LocalKeyProvider.openFile(file);
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(await p.currentVersion()).toBe('1');
    const wrapped = await p.wrap(Buffer.alloc(32, 7));
    expect(await p.rotate()).toBe('2');
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    const reopened = LocalKeyProvider.openFile(file);
    expect(await reopened.currentVersion()).toBe('2');
    expect((await reopened.unwrap(wrapped.wrapped, wrapped.keyVersion)).equals(Buffer.alloc(32, 7))).toBe(true);
    // opening again does not replace an existing key
    const again = LocalKeyProvider.openFile(file);
    expect((await again.unwrap(wrapped.wrapped, '1')).equals(Buffer.alloc(32, 7))).toBe(true);
  });

  it('refuses a key file readable by others', () => {
    const file = path.join(dir, 'loose.json');
    LocalKeyProvider.openFile(file);
    fs.chmodSync(file, 0o644);
    expect(() => LocalKeyProvider.openFile(file)).toThrow(KeyProviderError);
  });

  it('a wrapped key unwraps only under its own version', async () => {
    const p = LocalKeyProvider.openFile(path.join(dir, 'v.json'));
    const w1 = await p.wrap(Buffer.alloc(32, 1));
    await p.rotate();
    await expect(p.unwrap(w1.wrapped, '2')).rejects.toThrow(KeyProviderError);
    await expect(p.unwrap(w1.wrapped, '9')).rejects.toThrow(KeyProviderError);
  });
});

describe('root key rotation with rewrapAll', () => {
  let dir: string;
  let keyFile: string;
  let provider: LocalKeyProvider;
  let db: TestDatabase;
  let tb: TestBroker;
  let w: Record<string, string>;
  let reader: { token: string };
  const values = new Map<string, string>();
  const checksums = new Map<string, string>();

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kw-rotate-'));
    keyFile = path.join(dir, 'root-key.json');
    provider = LocalKeyProvider.openFile(keyFile);
    db = freshDatabase();
    tb = await startTestBroker({ db, keyProvider: provider, keepDatabase: true });
    w = auth(await tb.apiKey('writer'));
    await tb.request.post('/v1/groups').set(w).send({ name: 'rot' });
    reader = await tb.client('rot-reader', ['rot']);
    for (let i = 0; i < 12; i++) {
      const name = `rk-${String(i).padStart(2, '0')}`;
      const value = `rotation-value-${i}-${'z'.repeat(i)}`;
      markSensitive(value);
      const res = await tb.request.post('/v1/secrets').set(w).send({ name, value: `${value}-old`, groups: ['rot'] });
      expect(res.status).toBe(201);
      const v2 = await tb.request.post(`/v1/secrets/${name}/versions`).set(w).send({ value });
      values.set(name, value);
      checksums.set(name, v2.body.checksum);
    }
  });
  afterAll(async () => {
    await tb?.close();
    await db?.drop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const knex = () => tb.broker.services.db;
  async function snapshot() {
    const out: Record<string, any[]> = {};
    for (const { table, key } of WRAPPED_KEY_TABLES) out[table] = await knex()(table).orderBy(key);
    return out;
  }
  async function readAll(token = reader.token) {
    const names = [...values.keys()];
    const res = await tb.request.post('/v1/client/secrets/batch').set(auth(token)).send({ names });
    expect(res.status, res.text).toBe(200);
    for (const item of res.body.items) expect(unb64(item.content)).toBe(values.get(item.name));
  }

  it('rewraps every data key under the new version; ciphertext untouched; reads keep working meanwhile', async () => {
    const before = await snapshot();
    expect(before.secret_versions.length).toBe(24);
    expect(before.jwt_keys.length).toBeGreaterThan(0);
    expect(before.system_keys.length).toBeGreaterThanOrEqual(2);
    for (const rows of Object.values(before)) for (const r of rows) expect(r.root_key_version).toBe('1');

    expect(await provider.rotate()).toBe('2');
    let done = false;
    // a slightly slow provider for the rewrap only, so it is certainly still running while readers read
    const slow = Object.assign(Object.create(provider), {
      unwrap: async (wrapped: Buffer, version: string) => {
        await new Promise((r) => setTimeout(r, 3));
        return provider.unwrap(wrapped, version);
      },
    });
    const rewrap = rewrapAll(tb.broker.services.database, slow, { batchSize: 3 }).finally(() => {
      done = true;
    });
    // readers run in waves while the rewrap is in flight (bounded, so a slow database is not flooded)
    const results: Array<{ r: any; name: string }> = [];
    let rounds = 0;
    let wavesDuringRewrap = 0;
    while ((!done || rounds < 3) && rounds < 500) {
      if (!done) wavesDuringRewrap++;
      const name = `rk-${String(rounds % 12).padStart(2, '0')}`;
      results.push(
        ...(await Promise.all([
          tb.request.get(`/v1/secrets/${name}/content`).set(w).then((r) => ({ r, name })),
          tb.request.get(`/v1/client/secrets/${name}`).set(auth(reader.token)).then((r) => ({ r, name })),
        ])),
      );
      rounds++;
    }
    const result = await rewrap;
    expect(result.targetVersion).toBe('2');
    expect(result.rewrapped.secret_versions).toBe(24);
    expect(results.length).toBeGreaterThanOrEqual(6);
    expect(wavesDuringRewrap).toBeGreaterThan(1);
    for (const { r, name } of results) {
      expect(r.status, r.text).toBe(200);
      expect(unb64(r.body.content)).toBe(values.get(name));
    }

    const after = await snapshot();
    for (const { table, key } of WRAPPED_KEY_TABLES) {
      expect(after[table].length).toBe(before[table].length);
      for (const row of after[table]) {
        expect(row.root_key_version).toBe('2');
        const old = before[table].find((r) => r[key] === row[key]);
        expect(hex(row.wrapped_key)).not.toBe(hex(old.wrapped_key));
      }
    }
    for (const row of after.secret_versions) {
      const old = before.secret_versions.find((r) => r.id === row.id);
      expect(hex(row.ciphertext)).toBe(hex(old.ciphertext));
      expect(hex(row.iv)).toBe(hex(old.iv));
      expect(row.checksum).toBe(old.checksum);
    }
    for (const row of after.jwt_keys) {
      const old = before.jwt_keys.find((r) => r.kid === row.kid);
      expect(hex(row.private_ciphertext)).toBe(hex(old.private_ciphertext));
    }
    await readAll();
    // a second run finds nothing to do
    const rerun = await rewrapAll(tb.broker.services.database, provider);
    expect(rerun.rewrapped.secret_versions).toBe(0);
  });

  it('checksums are equal across the rotation, and new writes use the new version', async () => {
    for (const [name, checksum] of checksums) {
      expect((await tb.request.get(`/v1/secrets/${name}`).set(w)).body.checksum).toBe(checksum);
    }
    const res = await tb.request.post('/v1/secrets/rk-00/versions').set(w).send({ value: values.get('rk-00') });
    expect(res.body.version).toBe(3);
    expect(res.body.checksum).toBe(checksums.get('rk-00'));
    const row = await knex()('secret_versions as v').join('secrets as s', 's.id', 'v.secret_id').where({ 's.name': 'rk-00', 'v.version': 3 }).first('v.root_key_version');
    expect(row.root_key_version).toBe('2');
  });

  it('an interrupted rewrap leaves readable data and resumes to completion', async () => {
    expect(await provider.rotate()).toBe('3');
    let calls = 0;
    await expect(
      rewrapAll(tb.broker.services.database, provider, {
        batchSize: 1,
        onProgress: () => {
          calls++;
          throw new Error('stopped after the first batch');
        },
      }),
    ).rejects.toThrow('stopped after the first batch');
    expect(calls).toBe(1);
    const mid = await knex()('secret_versions').select('root_key_version');
    expect(mid.filter((r: any) => r.root_key_version === '3')).toHaveLength(1);
    expect(mid.filter((r: any) => r.root_key_version === '2').length).toBe(mid.length - 1);
    await readAll();

    const resumed = await rewrapAll(tb.broker.services.database, provider, { batchSize: 4 });
    expect(resumed.rewrapped.secret_versions).toBe(mid.length - 1);
    for (const { table } of WRAPPED_KEY_TABLES) {
      const versions = new Set((await knex()(table).select('root_key_version')).map((r: any) => r.root_key_version));
      expect([...versions].filter((v) => v !== '3'), table).toEqual([]);
    }
    await readAll();
  });

  it('a restarted broker on the rotated key file reads everything with the same checksums', async () => {
    const second = await startTestBroker({ db, keyProvider: LocalKeyProvider.openFile(keyFile), keepDatabase: true });
    try {
      const wk = auth(await second.apiKey('writer'));
      for (const [name, value] of values) {
        const c = await second.request.get(`/v1/secrets/${name}/content`).set(wk);
        expect(c.status).toBe(200);
        expect(unb64(c.body.content)).toBe(value);
      }
      markSensitive('restart-same-content');
      const x = await second.request.post('/v1/secrets').set(wk).send({ name: 'cmp', value: values.get('rk-05') });
      expect(x.body.checksum).toBe(checksums.get('rk-05'));
      // the rewrapped JWT signing key still verifies tokens issued before
      expect((await second.request.get('/v1/client/secrets').set(auth(reader.token))).status).toBe(200);
      const c2 = await second.client('after-rotation', ['rot']);
      expect((await tb.request.get('/v1/client/secrets/rk-01').set(auth(c2.token))).status).toBe(200);
    } finally {
      await second.close();
    }
  });

  it('a running broker picks up a version added by another process (the CLI)', async () => {
    let t = Date.now();
    const brokerSide = LocalKeyProvider.openFile(keyFile, () => t);
    const cliSide = LocalKeyProvider.openFile(keyFile);
    const before = await brokerSide.currentVersion();
    const next = await cliSide.rotate();
    expect(next).toBe(String(Number(before) + 1));
    const wrappedByCli = await cliSide.wrap(Buffer.alloc(32, 9));
    // unwrap notices the unknown version at once
    expect((await brokerSide.unwrap(wrappedByCli.wrapped, next)).equals(Buffer.alloc(32, 9))).toBe(true);
    t += 2_000;
    expect(await brokerSide.currentVersion()).toBe(next);
    expect((await brokerSide.wrap(Buffer.alloc(32, 1))).keyVersion).toBe(next);
  });
});
