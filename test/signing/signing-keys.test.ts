import crypto from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { auth, capture, createKey, expectProblem } from './helpers.js';

let tb: TestBroker;
const bodies: string[] = [];
const remember = <T extends { text: string }>(res: T) => (bodies.push(res.text ?? ''), res);

beforeAll(async () => {
  tb = await startTestBroker();
});
afterAll(async () => {
  await tb?.close();
});

function keyIdOf(pem: string): string {
  return crypto.createHash('sha256').update(crypto.createPublicKey(pem).export({ type: 'spki', format: 'der' })).digest('hex');
}

describe('signing keys', () => {
  it('creates an ecdsa-p256 key by default and an ed25519 key on request', async () => {
    const ec = remember(await tb.request.post('/v1/signing-keys').set(auth(tb.adminKey)).send({ name: 'release' }));
    expect(ec.status, ec.text).toBe(201);
    expect(ec.headers.location).toBe('/v1/signing-keys/release');
    expect(ec.body).toMatchObject({ name: 'release', algorithm: 'ecdsa-p256', status: 'active', currentVersion: 1 });
    const ecKey = crypto.createPublicKey(ec.body.publicKeyPem);
    expect(ecKey.asymmetricKeyType).toBe('ec');
    expect(ecKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    expect(ec.body.keyId).toBe(keyIdOf(ec.body.publicKeyPem));

    const ed = remember(await tb.request.post('/v1/signing-keys').set(auth(tb.adminKey)).send({ name: 'edkey', algorithm: 'ed25519' }));
    expect(ed.status, ed.text).toBe(201);
    expect(ed.body.algorithm).toBe('ed25519');
    expect(crypto.createPublicKey(ed.body.publicKeyPem).asymmetricKeyType).toBe('ed25519');

    const get = remember(await tb.request.get('/v1/signing-keys/release').set(auth(tb.adminKey)));
    expect(get.status).toBe(200);
    expect(get.body).toMatchObject({ name: 'release', status: 'active', keyId: ec.body.keyId, publicKeyPem: ec.body.publicKeyPem });
    expect(get.body.versions).toHaveLength(1);

    const list = remember(await tb.request.get('/v1/signing-keys').set(auth(tb.adminKey)));
    expect(list.body.items.map((k: any) => k.name)).toEqual(['edkey', 'release']);

    const dup = remember(await tb.request.post('/v1/signing-keys').set(auth(tb.adminKey)).send({ name: 'release' }));
    expectProblem(dup, 409, 'already_exists');
    const badAlg = remember(await tb.request.post('/v1/signing-keys').set(auth(tb.adminKey)).send({ name: 'x', algorithm: 'rsa' }));
    expectProblem(badAlg, 400);
    expectProblem(await tb.request.get('/v1/signing-keys/nope').set(auth(tb.adminKey)), 404, 'not_found');
  });

  it('serves public.pem without authentication', async () => {
    const key = (await tb.request.get('/v1/signing-keys/release').set(auth(tb.adminKey))).body;
    const pem = remember(await tb.request.get('/v1/signing-keys/release/public.pem'));
    expect(pem.status).toBe(200);
    expect(pem.headers['content-type']).toMatch(/^application\/x-pem-file/);
    expect(pem.text).toBe(key.publicKeyPem);
    expect(pem.text).toMatch(/^-----BEGIN PUBLIC KEY-----/);
    expectProblem(await tb.request.get('/v1/signing-keys/nope/public.pem'), 404);
  });

  it('rotates to a new version and keeps listing the old ones', async () => {
    const before = (await tb.request.get('/v1/signing-keys/release').set(auth(tb.adminKey))).body;
    const { result: rot, events } = await capture(tb, async () => remember(await tb.request.post('/v1/signing-keys/release/rotate').set(auth(tb.adminKey))));
    expect(rot.status, rot.text).toBe(200);
    expect(rot.body.currentVersion).toBe(2);
    expect(rot.body.keyId).not.toBe(before.keyId);
    expect(rot.body.versions.map((v: any) => v.version)).toEqual([2, 1]);
    expect(rot.body.versions[1]).toMatchObject({ version: 1, keyId: before.keyId, publicKeyPem: before.publicKeyPem });
    expect(rot.body.keyId).toBe(keyIdOf(rot.body.publicKeyPem));
    expect(events.map((e) => `${e.action}:${e.outcome}`)).toEqual(['signingkey.rotate:allow']);
    const pem = await tb.request.get('/v1/signing-keys/release/public.pem');
    expect(pem.text).toBe(rot.body.publicKeyPem);
  });

  it('disables and enables a key; signing with a disabled key is refused with 403', async () => {
    const dis = remember(await tb.request.post('/v1/signing-keys/edkey/disable').set(auth(tb.adminKey)));
    expect(dis.status).toBe(200);
    expect(dis.body.status).toBe('disabled');
    const { result: sign, events } = await capture(tb, () =>
      tb.request.post('/v1/signatures').set(auth(tb.adminKey)).send({ image: '127.0.0.1:1/org/app:v1', key: 'edkey' }),
    );
    expectProblem(sign, 403);
    expect(sign.body.detail).toMatch(/disabled/);
    expect(events.map((e) => `${e.action}:${e.outcome}`)).toEqual(['image.sign:deny']);
    await expect(tb.broker.services.signingKeys.signer('edkey')).rejects.toMatchObject({ kind: 'forbidden', code: 'signing_key_disabled' });
    const en = remember(await tb.request.post('/v1/signing-keys/edkey/enable').set(auth(tb.adminKey)));
    expect(en.body.status).toBe('active');
    const signer = await tb.broker.services.signingKeys.signer('edkey');
    const sig = await signer.sign(Buffer.from('x'));
    expect(crypto.verify(null, Buffer.from('x'), crypto.createPublicKey(en.body.publicKeyPem), sig)).toBe(true);
  });

  it('enforces roles: writer and signer cannot manage keys, no credential is 401', async () => {
    const writer = await tb.apiKey('writer');
    const auditor = await tb.apiKey('auditor');
    const signer = await tb.apiKey('signer', { scope: { keys: ['release'], images: ['**'] } });
    expectProblem(await tb.request.post('/v1/signing-keys').set(auth(writer)).send({ name: 'w' }), 403, 'forbidden');
    expectProblem(await tb.request.post('/v1/signing-keys').set(auth(signer)).send({ name: 'w' }), 403, 'forbidden');
    expectProblem(await tb.request.post('/v1/signing-keys/release/rotate').set(auth(writer)), 403);
    expectProblem(await tb.request.post('/v1/signing-keys/release/disable').set(auth(auditor)), 403);
    expectProblem(await tb.request.post('/v1/signing-keys/release/enable').set(auth(signer)), 403);
    expectProblem(await tb.request.post('/v1/signing-keys').send({ name: 'w' }), 401);
    expectProblem(await tb.request.get('/v1/signing-keys'), 401);
    expectProblem(await tb.request.get('/v1/signing-keys/release'), 401);
    expectProblem(await tb.request.get('/v1/signing-keys').set(auth('kw_not-a-real-key')), 401);
    for (const k of [writer, auditor, signer]) {
      const res = remember(await tb.request.get('/v1/signing-keys/release').set(auth(k)));
      expect(res.status).toBe(200);
    }
    expect((await tb.request.get('/v1/signing-keys').set(auth(tb.adminKey))).body.items).toHaveLength(2);
  });

  it('never returns private key material, and stores it only as ciphertext', async () => {
    // every body seen in this file, plus the audit log
    const audit = await tb.request.get('/v1/audit?action=signingkey.*&limit=1000').set(auth(tb.adminKey));
    expect(audit.status).toBe(200);
    expect(audit.body.items.length).toBeGreaterThanOrEqual(5);
    for (const text of [...bodies, audit.text]) {
      expect(text).not.toMatch(/PRIVATE KEY/);
      expect(text).not.toMatch(/private_?(key|ciphertext)/i);
    }
    const rows = await tb.broker.services.db('signing_key_versions').select('*');
    expect(rows).toHaveLength(3);
    for (const row of rows) {
      const ct = Buffer.from(row.private_ciphertext);
      expect(ct.length).toBeGreaterThan(16);
      expect(ct.toString('latin1')).not.toMatch(/PRIVATE KEY/);
      // a PKCS#8 DER private key would parse; the sealed form must not
      expect(() => crypto.createPrivateKey({ key: ct, format: 'der', type: 'pkcs8' })).toThrow();
      // and it does not contain the public key (which a PKCS#8 EC key embeds)
      const spki = crypto.createPublicKey(row.public_pem).export({ type: 'spki', format: 'der' });
      expect(ct.includes(spki.subarray(spki.length - 32))).toBe(false);
      for (const v of Object.values(row)) if (typeof v === 'string') expect(v).not.toMatch(/PRIVATE KEY/);
    }
    // the broker itself can open it: the private key matches the published public key
    const signer = await tb.broker.services.signingKeys.signer('release');
    const msg = Buffer.from('payload');
    const current = rows.find((r: any) => r.name === 'release' && r.version === 2);
    expect(crypto.verify('sha256', msg, crypto.createPublicKey(current.public_pem), await signer.sign(msg))).toBe(true);
  });

  it('audits key management', async () => {
    const { events } = await capture(tb, () => createKey(tb, 'audited'));
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ action: 'signingkey.create', outcome: 'allow', resourceKind: 'signing-key', resourceName: 'audited' });
    expect(events[0]!.details).toMatchObject({ algorithm: 'ecdsa-p256' });
  });
});
