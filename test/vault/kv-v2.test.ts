import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kvPathToName, nameToKvPath } from '../../src/vault/kv-service.js';
import { auth, markSensitive } from '../core/helpers.js';
import { capture } from '../support/audit-events.js';
import { startTestBroker, type TestBroker } from '../support/broker.js';

const CAS = 'check-and-set parameter did not match the current version';
const vt = (token: string) => ({ 'X-Vault-Token': token });

function expectVaultError(res: { status: number; headers: Record<string, string>; body: any; text: string }, status: number, first?: string | RegExp) {
  expect(res.status, res.text).toBe(status);
  expect(res.headers['content-type']).toBe('application/json');
  expect(Array.isArray(res.body.errors)).toBe(true);
  if (typeof first === 'string') expect(res.body.errors[0]).toBe(first);
  else if (first) expect(res.body.errors[0]).toMatch(first);
  return res.body.errors as string[];
}

describe('KV path ↔ secret name', () => {
  it('joins segments with "." and back, one to one', () => {
    expect(kvPathToName('app/db')).toBe('app.db');
    expect(kvPathToName('a_b-c')).toBe('a_b-c');
    expect(nameToKvPath('app.db.password')).toBe('app/db/password');
    for (const name of ['.env', 'a..b', 'x.']) expect(nameToKvPath(name)).toBeUndefined();
    for (const path of ['a.b', 'a//b', '', 'x/', 'ä']) expect(() => kvPathToName(path)).toThrow(/invalid path/);
    expect(() => kvPathToName('a'.repeat(129))).toThrow(/128/);
  });
});

describe('Vault KV v2 over Keywarden secrets', () => {
  let tb: TestBroker;
  let writer: Record<string, string>;
  let writerKey: string;
  let token: string;
  let outsiderToken: string;

  beforeAll(async () => {
    tb = await startTestBroker();
    writerKey = await tb.apiKey('writer');
    writer = auth(writerKey);
    await tb.request.post('/v1/groups').set(writer).send({ name: 'payments' });
    token = (await tb.client('billing', ['payments'])).token;
    outsiderToken = (await tb.client('outsider', [])).token;
    markSensitive(token);
    markSensitive(outsiderToken);
  });
  afterAll(async () => {
    await tb?.close();
  });

  const grant = (name: string) => tb.request.put('/v1/groups/payments/secrets').set(writer).send({ add: [name] });

  it('writes with cas: 0 creates, a stale or repeated cas is Vault\'s 400 and writes nothing', async () => {
    const { result: first, events } = await capture(tb, () => tb.request.post('/v1/secret/data/app/db').set(vt(writerKey)).send({ options: { cas: 0 }, data: { user: 'svc', password: 'hunter2' } }));
    expect(first.status, first.text).toBe(200);
    expect(first.body.data).toMatchObject({ version: 1, destroyed: false, deletion_time: '', custom_metadata: null });
    expect(first.body.data.created_time).toMatch(/^\d{4}-/);
    expect(events.filter((e) => e.action === 'secret.create').map((e) => e.resourceName)).toEqual(['app.db']);

    // it is an ordinary Keywarden secret: named with '.', typed as KV, its content canonical JSON
    const native = await tb.request.get('/v1/secrets/app.db').set(writer);
    expect(native.body).toMatchObject({ type: 'vault-kv/v2', version: 1, groups: [] });
    const content = await tb.request.get('/v1/secrets/app.db/content').set(writer);
    expect(Buffer.from(content.body.content, 'base64').toString()).toBe('{"password":"hunter2","user":"svc"}');

    expectVaultError(await tb.request.post('/v1/secret/data/app/db').set(vt(writerKey)).send({ options: { cas: 0 }, data: { x: '1' } }), 400, CAS);
    const second = await tb.request.put('/v1/secret/data/app/db').set(auth(writerKey)).send({ options: { cas: 1 }, data: { user: 'svc', password: 'correct horse' } });
    expect(second.status, second.text).toBe(200);
    expect(second.body.data.version).toBe(2);
    const { result: stale, events: staleEvents } = await capture(tb, () => tb.request.post('/v1/secret/data/app/db').set(vt(writerKey)).send({ options: { cas: 1 }, data: { x: '1' } }));
    expectVaultError(stale, 400, CAS);
    expect(staleEvents.filter((e) => e.action.startsWith('secret.'))).toEqual([]);
    expectVaultError(await tb.request.post('/v1/secret/data/new/one').set(vt(writerKey)).send({ options: { cas: 3 }, data: { x: '1' } }), 400, CAS);
    expect((await tb.request.get('/v1/secrets/new.one').set(writer)).status).toBe(404);
    expect((await tb.request.get('/v1/secrets/app.db').set(writer)).body.version).toBe(2);
  });

  it('an ungranted and a missing path are the same bare 404, each an audited deny', async () => {
    const { result: ungranted, events } = await capture(tb, () => tb.request.get('/v1/secret/data/app/db').set(vt(token)));
    expectVaultError(ungranted, 404);
    expect(ungranted.body).toEqual({ errors: [] });
    const missing = await tb.request.get('/v1/secret/data/app/nothing').set(vt(token));
    expect(missing.status).toBe(404);
    expect(missing.body).toEqual(ungranted.body);
    const deny = events.find((e) => e.action === 'secret.read');
    expect(deny).toMatchObject({ outcome: 'deny', resourceKind: 'secret', resourceName: 'app.db', actorKind: 'client', actorName: 'billing' });
    expectVaultError(await tb.request.get('/v1/secret/metadata/app/db').set(vt(token)), 404);
  });

  it('a granted client reads the latest and a given version, each read audited as the native client read', async () => {
    await grant('app.db');
    const { result: latest, events } = await capture(tb, () => tb.request.get('/v1/secret/data/app/db').set(vt(token)));
    expect(latest.status, latest.text).toBe(200);
    expect(latest.headers['cache-control']).toBe('no-store');
    expect(latest.body).toMatchObject({ mount_type: 'kv', warnings: null, data: { data: { user: 'svc', password: 'correct horse' }, metadata: { version: 2, destroyed: false } } });
    expect(events.filter((e) => e.action === 'secret.read')).toEqual([
      expect.objectContaining({ outcome: 'allow', resourceKind: 'secret', resourceName: 'app.db', details: expect.objectContaining({ via: 'client', version: 2, group: 'payments' }) }),
    ]);
    const { result: v1, events: v1Events } = await capture(tb, () => tb.request.get('/v1/secret/data/app/db?version=1').set({ Authorization: `Bearer ${token}` }));
    expect(v1.status, v1.text).toBe(200);
    expect(v1.body.data).toMatchObject({ data: { user: 'svc', password: 'hunter2' }, metadata: { version: 1 } });
    expect(v1Events.find((e) => e.action === 'secret.read')?.details).toMatchObject({ version: 1 });
    // the read marks the client's last read, as the native read does (access report)
    const report = await tb.request.get('/v1/secrets/app.db').set(writer);
    expect(report.status).toBe(200);

    const { result: none, events: noneEvents } = await capture(tb, () => tb.request.get('/v1/secret/data/app/db?version=9').set(vt(token)));
    expect(none.status).toBe(404);
    expect(none.body).toEqual({ errors: [] });
    expect(noneEvents.find((e) => e.action === 'secret.read')).toMatchObject({ outcome: 'deny', details: { version: 9 } });
    expectVaultError(await tb.request.get('/v1/secret/data/app/db?version=x').set(vt(token)), 400);
    // another client, not in the group, still gets the 404
    expect((await tb.request.get('/v1/secret/data/app/db').set(vt(outsiderToken))).status).toBe(404);
  });

  it('metadata lists every version; list shows the granted keys only', async () => {
    const meta = await tb.request.get('/v1/secret/metadata/app/db').set(vt(token));
    expect(meta.status, meta.text).toBe(200);
    expect(meta.body.data).toMatchObject({ current_version: 2, oldest_version: 1, cas_required: false, max_versions: 0 });
    expect(Object.keys(meta.body.data.versions)).toEqual(['1', '2']);
    expect(meta.body.data.versions['1']).toMatchObject({ deletion_time: '', destroyed: false });

    await tb.request.post('/v1/secret/data/app/cache').set(vt(writerKey)).send({ data: { url: 'redis://x' } });
    await tb.request.post('/v1/secret/data/top').set(vt(writerKey)).send({ data: { a: 1 } });
    await tb.request.post('/v1/secret/data/hidden/thing').set(vt(writerKey)).send({ data: { a: 1 } });
    await grant('app.cache');
    await grant('top');
    const root = await tb.request.get('/v1/secret/metadata/?list=true').set(vt(token));
    expect(root.status, root.text).toBe(200);
    expect(root.body.data.keys).toEqual(['app/', 'top']);
    const app = await tb.request.get('/v1/secret/metadata/app?list=true').set(vt(token));
    expect(app.body.data.keys).toEqual(['cache', 'db']);
    expect((await tb.request.get('/v1/secret/metadata/app/?list=true').set(vt(token))).body.data.keys).toEqual(['cache', 'db']);
    // an ungranted prefix lists like an empty one: Vault's 404
    expectVaultError(await tb.request.get('/v1/secret/metadata/hidden?list=true').set(vt(token)), 404);
    expectVaultError(await tb.request.get('/v1/secret/metadata/app?list=true').set(vt(outsiderToken)), 404);
  });

  it('a secret that is not a KV secret reads as base64 "value" and is not writable through KV', async () => {
    await tb.request.post('/v1/secrets').set(writer).send({ name: 'tls.key', content: Buffer.from([0, 1, 2, 255]).toString('base64'), groups: ['payments'] });
    const res = await tb.request.get('/v1/secret/data/tls/key').set(vt(token));
    expect(res.status, res.text).toBe(200);
    expect(res.body.data.data).toEqual({ value: 'AAEC/w==' });
    expect(res.body.data.metadata.custom_metadata).toEqual({ keywarden_encoding: 'base64' });
    expect(res.body.warnings).toEqual(['not a KV secret: data.value is its content in base64']);
    expectVaultError(await tb.request.post('/v1/secret/data/tls/key').set(vt(writerKey)).send({ data: { value: 'x' } }), 400, /not a KV secret/);
    expectVaultError(await tb.request.post('/v1/secret/data/a.b').set(vt(writerKey)).send({ data: { x: 1 } }), 400, /segment "a.b"/);
    expectVaultError(await tb.request.post('/v1/secret/data/app/x').set(vt(writerKey)).send({ nodata: true }), 400, /no data provided/);
  });

  it('clients may not write and operators may not read values through KV: Vault\'s 403, an audited authz.deny', async () => {
    const { result: write, events } = await capture(tb, () => tb.request.post('/v1/secret/data/app/db').set(vt(token)).send({ data: { x: '1' } }));
    expectVaultError(write, 403, 'permission denied');
    expect(events.find((e) => e.action === 'authz.deny')).toMatchObject({ outcome: 'deny', actorKind: 'client', resourceKind: 'route', resourceName: 'POST /v1/secret/data/{path+}' });
    expectVaultError(await tb.request.get('/v1/secret/data/app/db').set(vt(writerKey)), 403, 'permission denied');
    expectVaultError(await tb.request.get('/v1/secret/data/app/db'), 403, 'permission denied');
    expectVaultError(await tb.request.post('/v1/secret/destroy/app/db').set(vt(token)).send({ versions: [1] }), 403);
  });

  it('delete deletes the secret everywhere; undelete brings it back without its grants; destroy is refused', async () => {
    expectVaultError(await tb.request.post('/v1/secret/delete/app/db').set(vt(writerKey)).send({ versions: [1] }), 400, /current version \(2\)/);
    const { result: del, events } = await capture(tb, () => tb.request.delete('/v1/secret/data/app/db').set(vt(writerKey)));
    expect(del.status, del.text).toBe(204);
    expect(events.find((e) => e.action === 'secret.delete')).toMatchObject({ resourceName: 'app.db', outcome: 'allow' });
    expect((await tb.request.get('/v1/secret/data/app/db').set(vt(token))).status).toBe(404);
    expect((await tb.request.get('/v1/secret/data/app/db?version=1').set(vt(token))).status).toBe(404);
    // no second delivery path: the native client read sees the same deletion
    expect((await tb.request.get('/v1/client/secrets/app.db').set(auth(token))).status).toBe(404);

    // a version that was not current at deletion restores nothing (Vault ignores it)
    expect((await tb.request.post('/v1/secret/undelete/app/db').set(vt(writerKey)).send({ versions: [1] })).status).toBe(204);
    expect((await tb.request.get('/v1/secrets/app.db').set(writer)).status).toBe(404);
    const { result: undel, events: undelEvents } = await capture(tb, () => tb.request.post('/v1/secret/undelete/app/db').set(vt(writerKey)).send({ versions: [2] }));
    expect(undel.status, undel.text).toBe(204);
    expect(undelEvents.find((e) => e.action === 'secret.restore')).toMatchObject({ resourceName: 'app.db', details: expect.objectContaining({ version: 2 }) });
    expect((await tb.request.get('/v1/secrets/app.db').set(writer)).body).toMatchObject({ version: 2, groups: [] });
    expect((await tb.request.get('/v1/secret/data/app/db').set(vt(token))).status).toBe(404);
    await grant('app.db');
    const back = await tb.request.get('/v1/secret/data/app/db').set(vt(token));
    expect(back.status, back.text).toBe(200);
    expect(back.body.data.data.password).toBe('correct horse');

    expectVaultError(await tb.request.post('/v1/secret/destroy/app/db').set(vt(writerKey)).send({ versions: [1] }), 400, /destroy is not supported/);
    expect((await tb.request.delete('/v1/secret/metadata/app/cache').set(vt(writerKey))).status).toBe(204);
    expect((await tb.request.get('/v1/secret/data/app/cache').set(vt(token))).status).toBe(404);
    // writing at a deleted path creates a new secret there
    const fresh = await tb.request.post('/v1/secret/data/app/cache').set(vt(writerKey)).send({ options: { cas: 0 }, data: { url: 'redis://y' } });
    expect(fresh.body.data.version).toBe(1);
    expect((await tb.request.delete('/v1/secret/data/app/nothing').set(vt(writerKey))).status).toBe(404);
  });

  it('an older version read through KV is row-integrity checked as the native read: a tampered row fails closed, on the record', async () => {
    await tb.request.post('/v1/secret/data/tamper/me').set(vt(writerKey)).send({ data: { v: 1 } });
    await tb.request.post('/v1/secret/data/tamper/me').set(vt(writerKey)).send({ data: { v: 2 } });
    await grant('tamper.me');
    expect((await tb.request.get('/v1/secret/data/tamper/me?version=1').set(vt(token))).status).toBe(200);
    const secret = await tb.broker.services.db('secrets').where({ name: 'tamper.me' }).whereNull('deleted_at').first();
    await tb.broker.services.db('secret_versions').where({ secret_id: secret.id, version: 1 }).update({ checksum: 'f'.repeat(64) });
    const { result: res, events } = await capture(tb, () => tb.request.get('/v1/secret/data/tamper/me?version=1').set(vt(token)));
    expectVaultError(res, 503);
    expect(events.find((e) => e.action === 'secret.read')).toMatchObject({ outcome: 'error', resourceName: 'tamper.me', details: expect.objectContaining({ integrity: 'row_mac' }) });
    expect((await tb.request.get('/v1/secret/data/tamper/me').set(vt(token))).body.data.data).toEqual({ v: 2 });
  });
});
