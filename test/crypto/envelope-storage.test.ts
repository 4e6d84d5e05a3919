import crypto from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { auth, expectProblem, markSensitive, unb64 } from '../core/helpers.js';

describe('envelope encryption as stored', () => {
  let tb: TestBroker;
  let w: Record<string, string>;
  let client: { token: string };

  beforeAll(async () => {
    tb = await startTestBroker();
    w = auth(await tb.apiKey('writer'));
    await tb.request.post('/v1/groups').set(w).send({ name: 'readers' });
    client = await tb.client('reader', ['readers']);
  });
  afterAll(async () => {
    await tb?.close();
  });

  const db = () => tb.broker.services.db;
  async function put(name: string, value: string) {
    markSensitive(value);
    const res = await tb.request.post('/v1/secrets').set(w).send({ name, value, groups: ['readers'] });
    expect(res.status).toBe(201);
    return res.body;
  }
  async function rows(name: string) {
    return db()('secret_versions as v').join('secrets as s', 's.id', 'v.secret_id').where('s.name', name).whereNull('s.deleted_at').orderBy('v.version').select('v.*');
  }
  const content = (name: string) => tb.request.get(`/v1/secrets/${name}/content`).set(w);

  it('every version has its own data key and IV; no plaintext at rest', async () => {
    await put('multi', 'multi-value-one');
    for (const v of ['multi-value-two', 'multi-value-one']) {
      markSensitive(v);
      await tb.request.post('/v1/secrets/multi/versions').set(w).send({ value: v });
    }
    await put('other', 'multi-value-one');
    const all = [...(await rows('multi')), ...(await rows('other'))];
    expect(all).toHaveLength(4);
    const hex = (b: Buffer) => Buffer.from(b).toString('hex');
    expect(new Set(all.map((r) => hex(r.wrapped_key))).size).toBe(4);
    expect(new Set(all.map((r) => hex(r.iv))).size).toBe(4);
    expect(new Set(all.map((r) => hex(r.ciphertext))).size).toBe(4);
    for (const r of all) {
      expect(Buffer.from(r.iv)).toHaveLength(12);
      // 15-byte value + 16-byte GCM tag
      expect(Buffer.from(r.ciphertext)).toHaveLength(15 + 16);
      expect(Buffer.from(r.ciphertext).includes(Buffer.from('multi-value'))).toBe(false);
      expect(r.root_key_version).toBe('1');
    }
  });

  it('checksum: stable across reads, keyed, changes with content, equal for equal content', async () => {
    const a = await put('ck-a', 'checksum-value-a');
    const reads = await Promise.all([
      tb.request.get('/v1/secrets/ck-a').set(w),
      content('ck-a'),
      tb.request.get('/v1/client/secrets/ck-a').set(auth(client.token)),
      tb.request.get('/v1/secrets?limit=1000').set(w),
    ]);
    expect(reads[0].body.checksum).toBe(a.checksum);
    expect(reads[1].body.checksum).toBe(a.checksum);
    expect(reads[2].body.checksum).toBe(a.checksum);
    expect(reads[3].body.items.find((i: any) => i.name === 'ck-a').checksum).toBe(a.checksum);
    // keyed: not a bare hash of the value, so a checksum does not confirm a guess
    expect(a.checksum).not.toBe(crypto.createHash('sha256').update('checksum-value-a').digest('hex'));
    const b = await put('ck-b', 'checksum-value-b');
    expect(b.checksum).not.toBe(a.checksum);
    const a2 = await put('ck-a2', 'checksum-value-a');
    expect(a2.checksum).toBe(a.checksum);
    markSensitive('checksum-value-c');
    const v2 = await tb.request.post('/v1/secrets/ck-a/versions').set(w).send({ value: 'checksum-value-c' });
    expect(v2.body.checksum).not.toBe(a.checksum);
    const back = await tb.request.post('/v1/secrets/ck-a/versions').set(w).send({ value: 'checksum-value-a' });
    expect(back.body.checksum).toBe(a.checksum);
  });

  it('tampered ciphertext → integrity problem, never the value, and the broker keeps serving', async () => {
    await put('tamper', 'tamper-value-123');
    await put('bystander', 'bystander-value');
    const [row] = await rows('tamper');
    const bad = Buffer.from(row.ciphertext);
    bad[0] ^= 0x01;
    await db()('secret_versions').where({ id: row.id }).update({ ciphertext: bad });
    const op = await content('tamper');
    expectProblem(op, 503, 'integrity_failure');
    expect(op.text).not.toContain(Buffer.from('tamper-value-123').toString('base64'));
    expectProblem(await tb.request.get('/v1/client/secrets/tamper').set(auth(client.token)), 503, 'integrity_failure');
    const batch = await tb.request.post('/v1/client/secrets/batch').set(auth(client.token)).send({ names: ['bystander', 'tamper'] });
    expectProblem(batch, 503, 'integrity_failure');
    expect(batch.text).not.toContain(Buffer.from('bystander-value').toString('base64'));
    // tag tampering and truncation too
    const tag = Buffer.from(row.ciphertext);
    tag[tag.length - 1] ^= 0x80;
    await db()('secret_versions').where({ id: row.id }).update({ ciphertext: tag });
    expectProblem(await content('tamper'), 503, 'integrity_failure');
    await db()('secret_versions').where({ id: row.id }).update({ ciphertext: Buffer.alloc(3) });
    expectProblem(await content('tamper'), 503, 'integrity_failure');
    // tampered IV
    const iv = Buffer.from(row.iv);
    iv[5] ^= 0xff;
    await db()('secret_versions').where({ id: row.id }).update({ ciphertext: row.ciphertext, iv });
    expectProblem(await content('tamper'), 503, 'integrity_failure');
    expect(unb64((await content('bystander')).body.content)).toBe('bystander-value');
    expect((await tb.request.get('/healthz')).status).toBe(200);
  });

  it('a tampered wrapped data key fails as a problem, not a value', async () => {
    await put('tamper-key', 'tamper-key-value');
    const [row] = await rows('tamper-key');
    const wk = Buffer.from(row.wrapped_key);
    wk[wk.length - 3] ^= 0x10;
    await db()('secret_versions').where({ id: row.id }).update({ wrapped_key: wk });
    const res = await content('tamper-key');
    expect(res.status).toBeGreaterThanOrEqual(500);
    expectProblem(res, res.status);
    expect(res.body.code).not.toBe('internal_error');
  });

  it('ciphertext, IV and wrapped key moved to another row do not decrypt there (AAD)', async () => {
    await put('victim', 'victim-value-xyz');
    await put('target', 'target-value-xyz');
    const [src] = await rows('victim');
    const [dst] = await rows('target');
    await db()('secret_versions').where({ id: dst.id }).update({ iv: src.iv, ciphertext: src.ciphertext, wrapped_key: src.wrapped_key, root_key_version: src.root_key_version, size: src.size });
    const op = await content('target');
    expectProblem(op, 503, 'integrity_failure');
    const viaClient = await tb.request.get('/v1/client/secrets/target').set(auth(client.token));
    expectProblem(viaClient, 503, 'integrity_failure');
    expect(unb64((await content('victim')).body.content)).toBe('victim-value-xyz');

    // also across versions of one secret
    markSensitive('victim-value-v2');
    await tb.request.post('/v1/secrets/victim/versions').set(w).send({ value: 'victim-value-v2' });
    const [v1, v2] = await rows('victim');
    await db()('secret_versions').where({ id: v2.id }).update({ iv: v1.iv, ciphertext: v1.ciphertext, wrapped_key: v1.wrapped_key });
    expectProblem(await content('victim'), 503, 'integrity_failure');
    expect(unb64((await tb.request.get('/v1/secrets/victim/content?version=1').set(w)).body.content)).toBe('victim-value-xyz');
  });

  it('a secret recreated under a deleted name cannot be fed the old ciphertext', async () => {
    await put('reborn', 'reborn-old-value');
    const [old] = await rows('reborn');
    await tb.request.delete('/v1/secrets/reborn').set(w);
    await put('reborn', 'reborn-new-value');
    const [fresh] = await rows('reborn');
    expect(fresh.id).not.toBe(old.id);
    await db()('secret_versions').where({ id: fresh.id }).update({ iv: old.iv, ciphertext: old.ciphertext, wrapped_key: old.wrapped_key });
    expectProblem(await content('reborn'), 503, 'integrity_failure');
  });
});
