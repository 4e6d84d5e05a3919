import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { auth, expectProblem, markSensitive, unb64 } from '../core/helpers.js';

/** The access rule: a client reads a secret only through a group that holds a grant to it. */
describe('client secret access', () => {
  let tb: TestBroker;
  let w: Record<string, string>;
  let alice: { token: string; clientSecret: string };
  let bob: { token: string; clientSecret: string };
  let carol: { token: string; clientSecret: string };

  const VALUES: Record<string, string> = {
    'web.key': 'web-key-value-1',
    'web.cert': 'web-cert-value-1',
    'batch.db': 'batch-db-value-1',
    shared: 'shared-value-1',
  };

  beforeAll(async () => {
    tb = await startTestBroker();
    w = auth(await tb.apiKey('writer'));
    for (const g of ['web', 'batch']) expect((await tb.request.post('/v1/groups').set(w).send({ name: g })).status).toBe(201);
    const grants: Record<string, string[]> = { 'web.key': ['web'], 'web.cert': ['web'], 'batch.db': ['batch'], shared: ['web', 'batch'] };
    for (const [name, value] of Object.entries(VALUES)) {
      markSensitive(value);
      const res = await tb.request.post('/v1/secrets').set(w).send({ name, value, labels: { app: name }, metadata: { mode: '0400' }, groups: grants[name] });
      expect(res.status).toBe(201);
    }
    alice = await tb.client('alice', ['web']);
    bob = await tb.client('bob', ['batch']);
    carol = await tb.client('carol');
    markSensitive(alice.clientSecret, bob.clientSecret, carol.clientSecret);
  });
  afterAll(async () => {
    await tb?.close();
  });

  const read = (token: string, name: string) => tb.request.get(`/v1/client/secrets/${name}`).set(auth(token));
  const batch = (token: string, names: string[]) => tb.request.post('/v1/client/secrets/batch').set(auth(token)).send({ names });
  const listNames = async (token: string) => {
    const res = await tb.request.get('/v1/client/secrets').set(auth(token));
    expect(res.status).toBe(200);
    return res.body.items.map((i: any) => i.name);
  };

  /** The problem body with the requested name and request id taken out. */
  function normalized(body: Record<string, any>, name: string) {
    const { instance: _i, ...rest } = body;
    return { ...rest, detail: String(rest.detail).split(name).join('<name>') };
  }

  it('a member reads a granted secret with its metadata', async () => {
    const res = await read(alice.token, 'web.key');
    expect(res.status).toBe(200);
    expect(res.headers['cache-control']).toBe('no-store');
    expect(unb64(res.body.content)).toBe('web-key-value-1');
    expect(res.body).toMatchObject({ name: 'web.key', version: 1, metadata: { mode: '0400' }, labels: { app: 'web.key' } });
    const detail = await tb.request.get('/v1/secrets/web.key').set(w);
    expect(res.body.checksum).toBe(detail.body.checksum);
  });

  it('the list shows exactly the granted secrets, without values', async () => {
    expect(await listNames(alice.token)).toEqual(['shared', 'web.cert', 'web.key']);
    expect(await listNames(bob.token)).toEqual(['batch.db', 'shared']);
    expect(await listNames(carol.token)).toEqual([]);
    const res = await tb.request.get('/v1/client/secrets').set(auth(alice.token));
    expect(JSON.stringify(res.body)).not.toContain('value-1');
    expect(res.body.items[0]).not.toHaveProperty('content');
  });

  it('outside the group: 404 with the same body as a secret that does not exist', async () => {
    const denied = await read(alice.token, 'batch.db');
    const missing = await read(alice.token, 'no-such-secret');
    const a = expectProblem(denied, 404, 'not_found');
    const b = expectProblem(missing, 404, 'not_found');
    expect(normalized(a, 'batch.db')).toEqual(normalized(b, 'no-such-secret'));
    expect(denied.headers['content-type']).toBe(missing.headers['content-type']);
    expect(Object.keys(denied.headers).sort()).toEqual(Object.keys(missing.headers).sort());
    expectProblem(await read(carol.token, 'shared'), 404, 'not_found');
    expectProblem(await read(alice.token, 'bad%20name'), 400, 'invalid_request');
  });

  it('removing the grant, then restoring it', async () => {
    expect((await read(bob.token, 'shared')).status).toBe(200);
    const res = await tb.request.put('/v1/groups/batch/secrets').set(w).send({ remove: ['shared'] });
    expect(res.status).toBe(200);
    expect(res.body.secrets).toEqual(['batch.db']);
    expectProblem(await read(bob.token, 'shared'), 404, 'not_found');
    expect(await listNames(bob.token)).toEqual(['batch.db']);
    // still granted to web: alice is unaffected
    expect((await read(alice.token, 'shared')).status).toBe(200);
    await tb.request.put('/v1/groups/batch/secrets').set(w).send({ add: ['shared'] });
    expect((await read(bob.token, 'shared')).status).toBe(200);
  });

  it('removing the membership (either direction), then restoring it', async () => {
    const res = await tb.request.put('/v1/clients/bob/groups').set(w).send({ remove: ['batch'] });
    expect(res.status).toBe(200);
    expect(res.body.groups).toEqual([]);
    expectProblem(await read(bob.token, 'batch.db'), 404, 'not_found');
    expect(await listNames(bob.token)).toEqual([]);
    await tb.request.put('/v1/groups/batch/clients').set(w).send({ add: ['bob'] });
    expect((await read(bob.token, 'batch.db')).status).toBe(200);
    const viaGroup = await tb.request.put('/v1/groups/batch/clients').set(w).send({ remove: ['bob'] });
    expect(viaGroup.body.clients).toEqual([]);
    expectProblem(await read(bob.token, 'batch.db'), 404, 'not_found');
    await tb.request.put('/v1/clients/bob/groups').set(w).send({ add: ['batch'] });
    expect((await read(bob.token, 'batch.db')).status).toBe(200);
  });

  it('a client follows new versions and rollbacks', async () => {
    markSensitive('web-cert-value-2');
    await tb.request.post('/v1/secrets/web.cert/versions').set(w).send({ value: 'web-cert-value-2' });
    let res = await read(alice.token, 'web.cert');
    expect(res.body.version).toBe(2);
    expect(unb64(res.body.content)).toBe('web-cert-value-2');
    await tb.request.post('/v1/secrets/web.cert/rollback').set(w).send({ version: 1 });
    res = await read(alice.token, 'web.cert');
    expect(res.body.version).toBe(1);
    expect(unb64(res.body.content)).toBe('web-cert-value-1');
  });

  it('batch: all granted → every value; one not granted → 404 and no values at all', async () => {
    const ok = await batch(alice.token, ['web.key', 'shared', 'web.key']);
    expect(ok.status).toBe(200);
    expect(ok.headers['cache-control']).toBe('no-store');
    expect(ok.body.items.map((i: any) => [i.name, unb64(i.content)])).toEqual([
      ['web.key', 'web-key-value-1'],
      ['shared', 'shared-value-1'],
    ]);
    const mixed = await batch(alice.token, ['web.key', 'batch.db']);
    expectProblem(mixed, 404, 'not_found');
    expect(mixed.text).not.toContain('batch.db');
    expect(mixed.body.items).toBeUndefined();
    const withMissing = await batch(alice.token, ['shared', 'nope']);
    expectProblem(withMissing, 404, 'not_found');
    // the two failures are indistinguishable
    expect(normalized(mixed.body, 'x')).toEqual(normalized(withMissing.body, 'x'));
    expectProblem(await batch(alice.token, []), 400, 'invalid_request');
    expectProblem(await batch(alice.token, ['bad name']), 400, 'invalid_request');
    expectProblem(await batch(alice.token, Array.from({ length: 101 }, (_, i) => `s${i}`)), 400, 'invalid_request');
    expectProblem(await tb.request.post('/v1/client/secrets/batch').set(auth(alice.token)).send({ names: ['web.key'], extra: 1 }), 400, 'invalid_request');
  });

  it('a denied batch records no successful read', async () => {
    const before = await tb.broker.services.db('secret_reads').count<{ n: number }[]>('* as n').first();
    await batch(carol.token, ['shared', 'web.key']);
    const after = await tb.broker.services.db('secret_reads').count<{ n: number }[]>('* as n').first();
    expect(Number(after!.n)).toBe(Number(before!.n));
    const denials = await tb.broker.services.db('audit_events').where({ action: 'secret.read', outcome: 'deny', actor_name: 'carol' });
    expect(denials.length).toBeGreaterThanOrEqual(2);
  });

  it('a deleted secret 404s and leaves the list', async () => {
    markSensitive('temp-value-123');
    await tb.request.post('/v1/secrets').set(w).send({ name: 'temp', value: 'temp-value-123', groups: ['web'] });
    expect((await read(alice.token, 'temp')).status).toBe(200);
    expect((await tb.request.delete('/v1/secrets/temp').set(w)).status).toBe(204);
    expectProblem(await read(alice.token, 'temp'), 404, 'not_found');
    expect(await listNames(alice.token)).not.toContain('temp');
    expectProblem(await batch(alice.token, ['web.key', 'temp']), 404, 'not_found');
    // a new secret under the old name is not granted by the old grant
    await tb.request.post('/v1/secrets').set(w).send({ name: 'temp', value: 'temp-value-456' });
    markSensitive('temp-value-456');
    expectProblem(await read(alice.token, 'temp'), 404, 'not_found');
  });

  it('a client granted one secret through two groups sees it once', async () => {
    const dual = await tb.client('dual', ['web', 'batch']);
    markSensitive(dual.clientSecret);
    const names = await listNames(dual.token);
    expect(names.filter((n: string) => n === 'shared')).toHaveLength(1);
    expect(names).toEqual([...new Set(names)].sort());
    const res = await read(dual.token, 'shared');
    expect(res.status).toBe(200);
    const b = await batch(dual.token, ['shared', 'batch.db', 'web.key']);
    expect(b.body.items.map((i: any) => i.name)).toEqual(['shared', 'batch.db', 'web.key']);
  });

  it('deleting the group removes access through it', async () => {
    await tb.request.post('/v1/groups').set(w).send({ name: 'ephemeral' });
    await tb.request.put('/v1/groups/ephemeral/secrets').set(w).send({ add: ['batch.db'] });
    await tb.request.put('/v1/groups/ephemeral/clients').set(w).send({ add: ['carol'] });
    expect((await read(carol.token, 'batch.db')).status).toBe(200);
    expect((await tb.request.delete('/v1/groups/ephemeral').set(w)).status).toBe(204);
    expectProblem(await read(carol.token, 'batch.db'), 404, 'not_found');
  });
});
