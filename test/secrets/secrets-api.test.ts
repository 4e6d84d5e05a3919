import crypto from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { auth, b64, expectProblem, markSensitive, unb64 } from '../core/helpers.js';

const MiB = 1024 * 1024;

describe('operator secrets API', () => {
  let tb: TestBroker;
  let writer: Record<string, string>;
  let auditor: Record<string, string>;

  beforeAll(async () => {
    tb = await startTestBroker();
    writer = auth(await tb.apiKey('writer'));
    auditor = auth(await tb.apiKey('auditor'));
    expect((await tb.request.post('/v1/groups').set(writer).send({ name: 'team-a' })).status).toBe(201);
  });
  afterAll(async () => {
    await tb?.close();
  });

  async function create(body: Record<string, unknown>) {
    if (typeof body.value === 'string') markSensitive(body.value);
    return tb.request.post('/v1/secrets').set(writer).send(body);
  }
  async function content(name: string, version?: number) {
    const res = await tb.request.get(`/v1/secrets/${name}/content${version ? `?version=${version}` : ''}`).set(writer);
    return res;
  }

  describe('create and read', () => {
    it('creates from a UTF-8 value and serves it back, with Location and ETag', async () => {
      const res = await create({ name: 'db.password', value: 'hunter2-é-value', description: 'db', labels: { env: 'prod' }, metadata: { mode: '0400' }, groups: ['team-a'] });
      expect(res.status).toBe(201);
      expect(res.headers.location).toBe('/v1/secrets/db.password');
      expect(res.headers.etag).toBe('"1"');
      expect(res.body).toMatchObject({ name: 'db.password', description: 'db', version: 1, latestVersion: 1, labels: { env: 'prod' }, metadata: { mode: '0400' }, groups: ['team-a'], type: 'opaque' });
      expect(res.body.size).toBe(Buffer.byteLength('hunter2-é-value'));
      expect(res.body.checksum).toMatch(/^[0-9a-f]{64}$/);
      expect(JSON.stringify(res.body)).not.toContain('hunter2');

      const c = await content('db.password');
      expect(c.status).toBe(200);
      expect(c.headers['cache-control']).toBe('no-store');
      expect(unb64(c.body.content)).toBe('hunter2-é-value');
      expect(c.body).toMatchObject({ name: 'db.password', version: 1, checksum: res.body.checksum, size: res.body.size });

      const detail = await tb.request.get('/v1/secrets/db.password').set(auditor);
      expect(detail.status).toBe(200);
      expect(detail.headers.etag).toBe('"1"');
      expect(detail.body).toEqual(res.body);
    });

    it('creates from base64 binary content, byte for byte', async () => {
      const bytes = crypto.randomBytes(300);
      const res = await create({ name: 'tls.key', content: bytes.toString('base64') });
      expect(res.status).toBe(201);
      expect(res.body.size).toBe(300);
      const c = await content('tls.key');
      expect(Buffer.from(c.body.content, 'base64').equals(bytes)).toBe(true);
    });

    it('an empty value is allowed and reads back empty', async () => {
      expect((await create({ name: 'empty', value: '' })).status).toBe(201);
      const c = await content('empty');
      expect(c.body).toMatchObject({ content: '', size: 0 });
    });

    it('refuses a duplicate name with 409 already_exists', async () => {
      expect((await create({ name: 'dup', value: 'first-dup-value' })).status).toBe(201);
      expectProblem(await create({ name: 'dup', value: 'second-dup-value' }), 409, 'already_exists');
      expect(unb64((await content('dup')).body.content)).toBe('first-dup-value');
    });

    it('an unknown group fails the whole create', async () => {
      expectProblem(await create({ name: 'orphan', value: 'orphan-value', groups: ['team-a', 'no-such-group'] }), 400, 'invalid_request');
      expectProblem(await tb.request.get('/v1/secrets/orphan').set(writer), 404, 'not_found');
    });

    it('accepts expiry as ISO date or epoch seconds', async () => {
      const a = await create({ name: 'exp-iso', value: 'exp-iso-value', expiry: '2031-01-02T03:04:05Z' });
      expect(a.body.expiry).toBe('2031-01-02T03:04:05.000Z');
      const b = await create({ name: 'exp-epoch', value: 'exp-epoch-value', expiry: 1924992000 });
      expect(b.body.expiry).toBe(new Date(1924992000 * 1000).toISOString());
    });
  });

  describe('validation', () => {
    it.each([
      ['space in name', { name: 'has space', value: 'x' }],
      ['slash in name', { name: 'a/b', value: 'x' }],
      ['empty name', { name: '', value: 'x' }],
      ['129-char name', { name: 'a'.repeat(129), value: 'x' }],
      ['unicode name', { name: 'pässword', value: 'x' }],
      ['content and value', { name: 'both', value: 'x', content: 'eA==' }],
      ['neither content nor value', { name: 'neither' }],
      ['content not base64', { name: 'nb64', content: 'not base64!' }],
      ['content unpadded', { name: 'unpadded', content: 'abc' }],
      ['unknown field', { name: 'extra', value: 'x', owner: 'me' }],
      ['bad label key', { name: 'badlabel', value: 'x', labels: { 'bad key': 'v' } }],
      ['bad metadata mode', { name: 'badmode', value: 'x', metadata: { mode: '999' } }],
      ['bad expiry', { name: 'badexp', value: 'x', expiry: 'tomorrow' }],
      ['value not a string', { name: 'num', value: 42 }],
    ])('%s → 400 invalid_request', async (_label, body) => {
      const res = await tb.request.post('/v1/secrets').set(writer).send(body);
      const problem = expectProblem(res, 400, 'invalid_request');
      expect(problem.detail).toBeTruthy();
      if ('name' in body && typeof body.name === 'string' && body.name.length > 0 && body.name.length <= 128) {
        expect((await tb.request.get(`/v1/secrets/${encodeURIComponent(body.name)}`).set(writer)).status).not.toBe(200);
      }
    });

    it('schema errors list the offending path', async () => {
      const problem = expectProblem(await tb.request.post('/v1/secrets').set(writer).send({ name: 'x y', value: 'v' }), 400, 'invalid_request');
      expect(problem.errors.map((e: any) => e.path)).toContain('name');
    });

    it('a malformed name in the path is a 400, not a lookup', async () => {
      expectProblem(await tb.request.get('/v1/secrets/bad%20name').set(writer), 400, 'invalid_request');
      expectProblem(await tb.request.get(`/v1/secrets/${'a'.repeat(129)}`).set(writer), 400, 'invalid_request');
    });

    it('a non-JSON body and a broken percent-encoding are problems too', async () => {
      expectProblem(await tb.request.post('/v1/secrets').set(writer).set('Content-Type', 'text/plain').send('name=x&value=y'), 415, 'unsupported_media_type');
      expectProblem(await tb.request.get('/v1/secrets/%E0%A4%A').set(writer), 400);
    });

    it('malformed JSON → 400 malformed_json', async () => {
      const res = await tb.request.post('/v1/secrets').set(writer).set('Content-Type', 'application/json').send('{"name": "x", "value": ');
      expectProblem(res, 400, 'malformed_json');
    });

    it('a JSON body that is not an object → 400', async () => {
      const res = await tb.request.post('/v1/secrets').set(writer).set('Content-Type', 'application/json').send('"just a string"');
      expect(res.status).toBe(400);
      expectProblem(res, 400);
    });

    it('content over 1 MiB → 413 content_too_large; exactly 1 MiB is fine', async () => {
      const over = crypto.randomBytes(MiB + 1);
      const res = await tb.request.post('/v1/secrets').set(writer).send({ name: 'too-big', content: over.toString('base64') });
      expectProblem(res, 413, 'content_too_large');
      expectProblem(await tb.request.get('/v1/secrets/too-big').set(writer), 404, 'not_found');
      const overValue = await tb.request.post('/v1/secrets').set(writer).send({ name: 'too-big-v', value: 'x'.repeat(MiB + 1) });
      expectProblem(overValue, 413, 'content_too_large');

      const exact = crypto.randomBytes(MiB);
      const ok = await tb.request.post('/v1/secrets').set(writer).send({ name: 'one-mib', content: exact.toString('base64') });
      expect(ok.status).toBe(201);
      expect(ok.body.size).toBe(MiB);
      const back = await content('one-mib');
      expect(Buffer.from(back.body.content, 'base64').equals(exact)).toBe(true);

      const v = await tb.request.post('/v1/secrets/one-mib/versions').set(writer).send({ content: over.toString('base64') });
      expectProblem(v, 413, 'content_too_large');
    });

    it('a body over the configured limit → 413 body_too_large', async () => {
      const res = await tb.request.post('/v1/secrets').set(writer).send({ name: 'huge', value: 'y'.repeat(tb.config.maxBodyBytes + 10) });
      expectProblem(res, 413, 'body_too_large');
    });
  });

  describe('versions, rollback and check-and-set', () => {
    it('adds versions, lists them newest first, reads old ones, rolls back', async () => {
      expect((await create({ name: 'api.token', value: 'token-v1-aaaa' })).status).toBe(201);
      markSensitive('token-v2-bbbb', 'token-v3-cccc');
      const v2 = await tb.request.post('/v1/secrets/api.token/versions').set(writer).send({ value: 'token-v2-bbbb' });
      expect(v2.status).toBe(201);
      expect(v2.headers.etag).toBe('"2"');
      expect(v2.body).toMatchObject({ version: 2, latestVersion: 2 });

      const list = await tb.request.get('/v1/secrets/api.token/versions').set(auditor);
      expect(list.status).toBe(200);
      expect(list.body.items.map((i: any) => [i.version, i.current])).toEqual([
        [2, true],
        [1, false],
      ]);
      expect(list.body.items[0].checksum).not.toBe(list.body.items[1].checksum);

      expect(unb64((await content('api.token')).body.content)).toBe('token-v2-bbbb');
      expect(unb64((await content('api.token', 1)).body.content)).toBe('token-v1-aaaa');
      expectProblem(await content('api.token', 7), 404, 'not_found');
      expectProblem(await tb.request.get('/v1/secrets/api.token/content?version=abc').set(writer), 400, 'invalid_request');

      const rb = await tb.request.post('/v1/secrets/api.token/rollback').set(writer).send({ version: 1 });
      expect(rb.status).toBe(200);
      expect(rb.headers.etag).toBe('"1"');
      expect(rb.body).toMatchObject({ version: 1, latestVersion: 2, checksum: list.body.items[1].checksum });
      expect(unb64((await content('api.token')).body.content)).toBe('token-v1-aaaa');

      // a new version after a rollback never reuses a number
      const v3 = await tb.request.post('/v1/secrets/api.token/versions').set(writer).send({ value: 'token-v3-cccc' });
      expect(v3.body).toMatchObject({ version: 3, latestVersion: 3 });
      expect(unb64((await content('api.token', 2)).body.content)).toBe('token-v2-bbbb');

      expectProblem(await tb.request.post('/v1/secrets/api.token/rollback').set(writer).send({ version: 99 }), 404, 'not_found');
      expectProblem(await tb.request.post('/v1/secrets/api.token/rollback').set(writer).send({ version: '1' }), 400, 'invalid_request');
      expectProblem(await tb.request.post('/v1/secrets/nope/rollback').set(writer).send({ version: 1 }), 404, 'not_found');
      expectProblem(await tb.request.post('/v1/secrets/nope/versions').set(writer).send({ value: 'abcdefg' }), 404, 'not_found');
      expectProblem(await tb.request.get('/v1/secrets/nope/versions').set(writer), 404, 'not_found');
    });

    it('cas mismatch → 409 cas_mismatch; If-Match mismatch → 412; nothing is written', async () => {
      expect((await create({ name: 'cas.s', value: 'cas-value-one' })).status).toBe(201);
      const ok = await tb.request.post('/v1/secrets/cas.s/versions').set(writer).send({ value: 'cas-value-two', cas: 1 });
      expect(ok.status).toBe(201);
      markSensitive('cas-value-two', 'cas-value-stale', 'cas-value-three');
      expectProblem(await tb.request.post('/v1/secrets/cas.s/versions').set(writer).send({ value: 'cas-value-stale', cas: 1 }), 409, 'cas_mismatch');
      expectProblem(await tb.request.post('/v1/secrets/cas.s/versions').set(writer).set('If-Match', '"1"').send({ value: 'cas-value-stale' }), 412, 'precondition_failed');
      expectProblem(await tb.request.post('/v1/secrets/cas.s/versions').set(writer).set('If-Match', 'garbage').send({ value: 'cas-value-stale' }), 400, 'invalid_request');
      expectProblem(await tb.request.post('/v1/secrets/cas.s/versions').set(writer).send({ value: 'x', cas: -1 }), 400, 'invalid_request');
      const versions = await tb.request.get('/v1/secrets/cas.s/versions').set(writer);
      expect(versions.body.items).toHaveLength(2);
      expect(unb64((await content('cas.s')).body.content)).toBe('cas-value-two');

      const withEtag = await tb.request.post('/v1/secrets/cas.s/versions').set(writer).set('If-Match', '"2"').send({ value: 'cas-value-three' });
      expect(withEtag.status).toBe(201);
      expect(withEtag.body.version).toBe(3);
      // cas is compared with the current version, which a rollback changes
      await tb.request.post('/v1/secrets/cas.s/rollback').set(writer).send({ version: 1 });
      expectProblem(await tb.request.post('/v1/secrets/cas.s/versions').set(writer).send({ value: 'cas-value-stale', cas: 3 }), 409, 'cas_mismatch');
      expect((await tb.request.post('/v1/secrets/cas.s/versions').set(writer).send({ value: 'cas-value-three', cas: 1 })).body.version).toBe(4);
    });

    it('parallel writers with the same cas: exactly one wins', async () => {
      expect((await create({ name: 'race', value: 'race-base-value' })).status).toBe(201);
      const N = 8;
      const results = await Promise.all(
        Array.from({ length: N }, (_, i) => tb.request.post('/v1/secrets/race/versions').set(writer).send({ value: `race-value-${i}`, cas: 1 })),
      );
      for (let i = 0; i < N; i++) markSensitive(`race-value-${i}`);
      const winners = results.filter((r) => r.status === 201);
      expect(winners).toHaveLength(1);
      for (const r of results.filter((r) => r.status !== 201)) expectProblem(r, 409);
      expect(results.filter((r) => r.status === 409).every((r) => ['cas_mismatch', 'already_exists'].includes(r.body.code))).toBe(true);
      const versions = await tb.request.get('/v1/secrets/race/versions').set(writer);
      expect(versions.body.items.map((v: any) => v.version)).toEqual([2, 1]);
      const winnerIndex = results.indexOf(winners[0]);
      expect(unb64((await content('race')).body.content)).toBe(`race-value-${winnerIndex}`);
    });

    it('parallel creates of one name: exactly one 201, the rest 409 already_exists', async () => {
      const results = await Promise.all(
        Array.from({ length: 5 }, (_, i) => tb.request.post('/v1/secrets').set(writer).send({ name: 'same-name', value: `same-name-value-${i}` })),
      );
      for (let i = 0; i < 5; i++) markSensitive(`same-name-value-${i}`);
      expect(results.filter((r) => r.status === 201)).toHaveLength(1);
      for (const r of results.filter((r) => r.status !== 201)) expectProblem(r, 409, 'already_exists');
      const winner = results.findIndex((r) => r.status === 201);
      expect(unb64((await content('same-name')).body.content)).toBe(`same-name-value-${winner}`);
    });

    it('parallel writers without cas all land, on distinct version numbers', async () => {
      expect((await create({ name: 'race2', value: 'race2-base' })).status).toBe(201);
      const results = await Promise.all(Array.from({ length: 6 }, (_, i) => tb.request.post('/v1/secrets/race2/versions').set(writer).send({ value: `r2-${i}` })));
      const statuses = results.map((r) => r.status);
      // a writer that loses a unique-index race must get a 409 it can retry, never a 500
      expect(statuses.every((s) => s === 201 || s === 409), statuses.join(',')).toBe(true);
      const created = results.filter((r) => r.status === 201).map((r) => r.body.version);
      expect(new Set(created).size).toBe(created.length);
      const versions = await tb.request.get('/v1/secrets/race2/versions').set(writer);
      expect(versions.body.items).toHaveLength(1 + created.length);
    });
  });

  describe('update and delete', () => {
    it('PATCH changes metadata only, never the version', async () => {
      const created = await create({ name: 'patchme', value: 'patch-value', labels: { a: '1' } });
      const res = await tb.request
        .patch('/v1/secrets/patchme')
        .set(writer)
        .send({ description: 'new desc', labels: { b: '2' }, metadata: { owner: 'app', mode: '0440' }, expiry: '2030-05-05T00:00:00Z' });
      expect(res.status).toBe(200);
      expect(res.body).toMatchObject({ description: 'new desc', labels: { b: '2' }, metadata: { owner: 'app', mode: '0440' }, expiry: '2030-05-05T00:00:00.000Z', version: 1, checksum: created.body.checksum });
      const cleared = await tb.request.patch('/v1/secrets/patchme').set(writer).send({ expiry: null });
      expect(cleared.body.expiry).toBeNull();
      expect(cleared.body.description).toBe('new desc');
      // label filter follows the patch
      const byOld = await tb.request.get('/v1/secrets?label=a').set(writer);
      expect(byOld.body.items.map((i: any) => i.name)).not.toContain('patchme');
      const byNew = await tb.request.get('/v1/secrets?label=b=2').set(writer);
      expect(byNew.body.items.map((i: any) => i.name)).toContain('patchme');
      expectProblem(await tb.request.patch('/v1/secrets/patchme').set(writer).send({ value: 'sneaky' }), 400, 'invalid_request');
      expectProblem(await tb.request.patch('/v1/secrets/nope').set(writer).send({ description: 'x' }), 404, 'not_found');
    });

    it('DELETE hides the secret everywhere and frees the name', async () => {
      await create({ name: 'doomed', value: 'doomed-value-old', groups: ['team-a'] });
      expect((await tb.request.delete('/v1/secrets/doomed').set(writer)).status).toBe(204);
      expectProblem(await tb.request.get('/v1/secrets/doomed').set(writer), 404, 'not_found');
      expectProblem(await content('doomed'), 404, 'not_found');
      expectProblem(await tb.request.get('/v1/secrets/doomed/versions').set(writer), 404, 'not_found');
      expectProblem(await tb.request.delete('/v1/secrets/doomed').set(writer), 404, 'not_found');
      const list = await tb.request.get('/v1/secrets').set(writer);
      expect(list.body.items.map((i: any) => i.name)).not.toContain('doomed');
      const group = await tb.request.get('/v1/groups/team-a').set(writer);
      expect(group.body.secrets).not.toContain('doomed');

      const again = await create({ name: 'doomed', value: 'doomed-value-new' });
      expect(again.status).toBe(201);
      expect(again.body).toMatchObject({ version: 1, latestVersion: 1, groups: [] });
      expect(unb64((await content('doomed')).body.content)).toBe('doomed-value-new');
      expect((await tb.request.get('/v1/secrets/doomed/versions').set(writer)).body.items).toHaveLength(1);
    });
  });

  describe('list filters and pagination', () => {
    beforeAll(async () => {
      await tb.request.post('/v1/groups').set(writer).send({ name: 'listers' });
      const soon = Date.now() + 3600_000;
      const later = Date.now() + 30 * 86400_000;
      await create({ name: 'l-prod-1', value: 'lv-prod-1', labels: { env: 'prod', tier: 'db' }, groups: ['listers'], expiry: new Date(soon).toISOString() });
      await create({ name: 'l-prod-2', value: 'lv-prod-2', labels: { env: 'prod' }, expiry: new Date(later).toISOString() });
      await create({ name: 'l-dev-1', value: 'lv-dev-1', labels: { env: 'dev' }, groups: ['listers'] });
      await create({ name: 'l-none', value: 'lv-none' });
    });

    const names = (res: any) => res.body.items.map((i: any) => i.name);

    it('label key, and key=value', async () => {
      const byKey = await tb.request.get('/v1/secrets?label=env').set(auditor);
      expect(byKey.status).toBe(200);
      expect(names(byKey).filter((n: string) => n.startsWith('l-'))).toEqual(['l-dev-1', 'l-prod-1', 'l-prod-2']);
      const prod = names(await tb.request.get('/v1/secrets?label=env=prod').set(auditor));
      expect(prod.filter((n: string) => n.startsWith('l-'))).toEqual(['l-prod-1', 'l-prod-2']);
      expect(prod).not.toContain('l-dev-1');
      expect(names(await tb.request.get('/v1/secrets?label=tier=db').set(auditor))).toEqual(['l-prod-1']);
      expect(names(await tb.request.get('/v1/secrets?label=env=staging').set(auditor))).toEqual([]);
      const item = byKey.body.items.find((i: any) => i.name === 'l-prod-1');
      expect(item).toMatchObject({ labels: { env: 'prod', tier: 'db' }, version: 1 });
      expect(JSON.stringify(byKey.body)).not.toContain('lv-prod');
    });

    it('group and expiringBefore', async () => {
      expect(names(await tb.request.get('/v1/secrets?group=listers').set(auditor))).toEqual(['l-dev-1', 'l-prod-1']);
      const inADay = new Date(Date.now() + 86400_000).toISOString();
      const expiring = names(await tb.request.get(`/v1/secrets?expiringBefore=${encodeURIComponent(inADay)}`).set(auditor));
      expect(expiring).toContain('l-prod-1');
      expect(expiring).not.toContain('l-prod-2');
      expect(expiring).not.toContain('l-none');
      expect(names(await tb.request.get(`/v1/secrets?group=listers&label=env=prod`).set(auditor))).toEqual(['l-prod-1']);
    });

    it('pages with a cursor through everything, once each', async () => {
      const all = names(await tb.request.get('/v1/secrets?limit=1000').set(auditor));
      expect(all.length).toBeGreaterThan(5);
      expect([...all].sort()).toEqual(all);
      const seen: string[] = [];
      let cursor: string | null = null;
      let pages = 0;
      do {
        const res: any = await tb.request.get(`/v1/secrets?limit=2${cursor ? `&cursor=${cursor}` : ''}`).set(auditor);
        expect(res.status).toBe(200);
        expect(res.body.items.length).toBeLessThanOrEqual(2);
        seen.push(...names(res));
        cursor = res.body.nextCursor;
        pages++;
      } while (cursor && pages < 100);
      expect(seen).toEqual(all);
    });

    it('bad query parameters → 400', async () => {
      expectProblem(await tb.request.get('/v1/secrets?cursor=%%%').set(auditor), 400, 'invalid_request');
      expectProblem(await tb.request.get(`/v1/secrets?cursor=${Buffer.from('42').toString('base64url')}`).set(auditor), 400, 'invalid_request');
      expectProblem(await tb.request.get('/v1/secrets?limit=0').set(auditor), 400, 'invalid_request');
      expectProblem(await tb.request.get('/v1/secrets?limit=5000').set(auditor), 400, 'invalid_request');
      expectProblem(await tb.request.get('/v1/secrets?expiringBefore=soon').set(auditor), 400, 'invalid_request');
      expectProblem(await tb.request.get('/v1/secrets?colour=red').set(auditor), 400, 'invalid_request');
      expectProblem(await tb.request.get('/v1/secrets?group=bad%20group').set(auditor), 400, 'invalid_request');
    });
  });
});
