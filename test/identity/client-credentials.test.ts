import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { auth, expectProblem, markSensitive } from '../core/helpers.js';

describe('client credentials and client lifecycle', () => {
  let tb: TestBroker;
  let w: Record<string, string>;
  let now = Date.now();
  const clock = () => now;

  beforeAll(async () => {
    tb = await startTestBroker({ clock });
    w = auth(await tb.apiKey('writer'));
    await tb.request.post('/v1/groups').set(w).send({ name: 'apps' });
    markSensitive('client-cred-secret-value');
    await tb.request.post('/v1/secrets').set(w).send({ name: 'app.secret', value: 'client-cred-secret-value', groups: ['apps'] });
  });
  afterAll(async () => {
    await tb?.close();
  });

  async function newClient(name: string, groups = ['apps']) {
    const res = await tb.request.post('/v1/clients').set(w).send({ name, groups });
    expect(res.status).toBe(201);
    markSensitive(res.body.clientSecret);
    return res.body as { clientId: string; clientSecret: string };
  }
  const form = (params: Record<string, string>) => tb.request.post('/v1/auth/token').type('form').send(params);
  const canRead = (token: string) => tb.request.get('/v1/client/secrets/app.secret').set(auth(token));

  it('issues tokens for form, JSON and HTTP Basic client authentication', async () => {
    const c = await newClient('svc-a');
    const viaForm = await form({ grant_type: 'client_credentials', client_id: c.clientId, client_secret: c.clientSecret });
    const viaJson = await tb.request.post('/v1/auth/token').send({ grant_type: 'client_credentials', client_id: c.clientId, client_secret: c.clientSecret });
    const basic = Buffer.from(`${encodeURIComponent(c.clientId)}:${encodeURIComponent(c.clientSecret)}`).toString('base64');
    const viaBasic = await tb.request.post('/v1/auth/token').set('Authorization', `Basic ${basic}`).type('form').send({ grant_type: 'client_credentials' });
    for (const res of [viaForm, viaJson, viaBasic]) {
      expect(res.status, res.text).toBe(200);
      expect(res.headers['cache-control']).toBe('no-store');
      expect(res.body.token_type).toBe('Bearer');
      // the lifetime granted, however long the audit write took
      expect(res.body.expires_in).toBe(tb.config.accessTokenTtlSeconds);
      expect(res.body.access_token.split('.')).toHaveLength(3);
      const read = await canRead(res.body.access_token);
      expect(read.status).toBe(200);
      expect(Buffer.from(read.body.content, 'base64').toString()).toBe('client-cred-secret-value');
    }
  });

  it('wrong or unknown credentials → 401 invalid_client, with nothing echoed', async () => {
    const c = await newClient('svc-b');
    const wrong = await form({ grant_type: 'client_credentials', client_id: c.clientId, client_secret: `${c.clientSecret}x` });
    const body = expectProblem(wrong, 401, 'invalid_client');
    expect(body.error).toBe('invalid_client');
    expect(wrong.headers['www-authenticate']).toMatch(/^Basic /);
    expect(wrong.text).not.toContain(c.clientSecret);
    const unknown = await form({ grant_type: 'client_credentials', client_id: 'kwc_nobody', client_secret: 'kws_whatever-secret' });
    expectProblem(unknown, 401, 'invalid_client');
    expect(unknown.text).not.toContain('kws_whatever-secret');
    const wrongBasic = Buffer.from(`${c.clientId}:not-the-secret`).toString('base64');
    expectProblem(await tb.request.post('/v1/auth/token').set('Authorization', `Basic ${wrongBasic}`).type('form').send({ grant_type: 'client_credentials' }), 401, 'invalid_client');
  });

  it('malformed token requests → 400 with OAuth error codes', async () => {
    const c = await newClient('svc-c');
    expect(expectProblem(await form({ client_id: c.clientId, client_secret: c.clientSecret }), 400, 'invalid_request').error).toBe('invalid_request');
    expect(expectProblem(await form({ grant_type: 'password', client_id: c.clientId, client_secret: c.clientSecret }), 400, 'unsupported_grant_type').error).toBe('unsupported_grant_type');
    expectProblem(await form({ grant_type: 'client_credentials', client_id: c.clientId }), 400, 'invalid_request');
    expectProblem(await tb.request.post('/v1/auth/token').send({ grant_type: 'client_credentials', client_id: c.clientId, client_secret: 5 }), 400, 'invalid_request');
    expectProblem(await tb.request.post('/v1/auth/token').set('Authorization', `Basic ${Buffer.from('nocolon').toString('base64')}`).type('form').send({ grant_type: 'client_credentials' }), 400);
  });

  it('disabling a client stops its token at once and refuses new ones; enabling restores', async () => {
    const c = await newClient('svc-d');
    const token = (await form({ grant_type: 'client_credentials', client_id: c.clientId, client_secret: c.clientSecret })).body.access_token;
    expect((await canRead(token)).status).toBe(200);
    const patched = await tb.request.patch('/v1/clients/svc-d').set(w).send({ enabled: false });
    expect(patched.status).toBe(200);
    expect(patched.body.enabled).toBe(false);
    expectProblem(await canRead(token), 401, 'client_disabled');
    expectProblem(await tb.request.get('/v1/client/secrets').set(auth(token)), 401, 'client_disabled');
    const refused = await form({ grant_type: 'client_credentials', client_id: c.clientId, client_secret: c.clientSecret });
    expect(expectProblem(refused, 401, 'client_disabled').error).toBe('invalid_client');
    await tb.request.patch('/v1/clients/svc-d').set(w).send({ enabled: true });
    const fresh = await form({ grant_type: 'client_credentials', client_id: c.clientId, client_secret: c.clientSecret });
    expect(fresh.status).toBe(200);
    expect((await canRead(fresh.body.access_token)).status).toBe(200);
  });

  it('deleting a client kills its token, also against a new client of the same name', async () => {
    const c = await newClient('svc-e');
    const token = (await form({ grant_type: 'client_credentials', client_id: c.clientId, client_secret: c.clientSecret })).body.access_token;
    expect((await canRead(token)).status).toBe(200);
    expect((await tb.request.delete('/v1/clients/svc-e').set(w)).status).toBe(204);
    expectProblem(await canRead(token), 401, 'client_deleted');
    expectProblem(await form({ grant_type: 'client_credentials', client_id: c.clientId, client_secret: c.clientSecret }), 401, 'invalid_client');
    expectProblem(await tb.request.get('/v1/clients/svc-e').set(w), 404, 'not_found');
    await newClient('svc-e');
    expectProblem(await canRead(token), 401);
  });

  it('rotating the client secret refuses the old secret and tokens issued before it', async () => {
    const c = await newClient('svc-f');
    const oldToken = (await form({ grant_type: 'client_credentials', client_id: c.clientId, client_secret: c.clientSecret })).body.access_token;
    now += 5_000;
    const rotated = await tb.request.post('/v1/clients/svc-f/secret').set(w);
    expect(rotated.status).toBe(200);
    expect(rotated.headers['cache-control']).toBe('no-store');
    expect(rotated.body).toMatchObject({ name: 'svc-f', clientId: c.clientId });
    expect(rotated.body.clientSecret).toMatch(/^kws_/);
    expect(rotated.body.clientSecret).not.toBe(c.clientSecret);
    markSensitive(rotated.body.clientSecret);
    expectProblem(await form({ grant_type: 'client_credentials', client_id: c.clientId, client_secret: c.clientSecret }), 401, 'invalid_client');
    expectProblem(await canRead(oldToken), 401, 'token_revoked');
    now += 1_000;
    const fresh = await form({ grant_type: 'client_credentials', client_id: c.clientId, client_secret: rotated.body.clientSecret });
    expect(fresh.status).toBe(200);
    expect((await canRead(fresh.body.access_token)).status).toBe(200);
  });

  it('tokens expire with the clock', async () => {
    const c = await newClient('svc-g');
    const token = (await form({ grant_type: 'client_credentials', client_id: c.clientId, client_secret: c.clientSecret })).body.access_token;
    expect((await canRead(token)).status).toBe(200);
    now += (tb.config.accessTokenTtlSeconds + 5) * 1000;
    expectProblem(await canRead(token), 401, 'token_expired');
  });

  it('a tampered token is refused', async () => {
    const c = await newClient('svc-h');
    const token: string = (await form({ grant_type: 'client_credentials', client_id: c.clientId, client_secret: c.clientSecret })).body.access_token;
    const [h, p, s] = token.split('.');
    const claims = JSON.parse(Buffer.from(p, 'base64url').toString());
    claims.kw.n = 'svc-a';
    const forged = `${h}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${s}`;
    expectProblem(await canRead(forged), 401, 'invalid_token');
  });
});

describe('clients and groups API', () => {
  let tb: TestBroker;
  let w: Record<string, string>;
  let aud: Record<string, string>;

  beforeAll(async () => {
    tb = await startTestBroker();
    w = auth(await tb.apiKey('writer'));
    aud = auth(await tb.apiKey('auditor'));
  });
  afterAll(async () => {
    await tb?.close();
  });

  it('groups: create, duplicate, get, list with cursor, change secrets and clients, delete', async () => {
    const g = await tb.request.post('/v1/groups').set(w).send({ name: 'grp-1', description: 'first', labels: { team: 'x' } });
    expect(g.status).toBe(201);
    expect(g.headers.location).toBe('/v1/groups/grp-1');
    expect(g.body).toMatchObject({ name: 'grp-1', description: 'first', labels: { team: 'x' }, secrets: [], clients: [] });
    expectProblem(await tb.request.post('/v1/groups').set(w).send({ name: 'grp-1' }), 409, 'already_exists');
    expectProblem(await tb.request.post('/v1/groups').set(w).send({ name: 'bad/name' }), 400, 'invalid_request');
    for (const n of ['grp-2', 'grp-3', 'grp-4']) await tb.request.post('/v1/groups').set(w).send({ name: n });

    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const res: any = await tb.request.get(`/v1/groups?limit=3${cursor ? `&cursor=${cursor}` : ''}`).set(aud);
      expect(res.status).toBe(200);
      seen.push(...res.body.items.map((i: any) => i.name));
      cursor = res.body.nextCursor;
    } while (cursor);
    expect(seen).toEqual(['grp-1', 'grp-2', 'grp-3', 'grp-4']);

    markSensitive('grp-secret-value');
    await tb.request.post('/v1/secrets').set(w).send({ name: 'gs', value: 'grp-secret-value' });
    await tb.request.post('/v1/clients').set(w).send({ name: 'gc' });
    const withSecret = await tb.request.put('/v1/groups/grp-1/secrets').set(w).send({ add: ['gs'] });
    expect(withSecret.status).toBe(200);
    expect(withSecret.body.secrets).toEqual(['gs']);
    expect((await tb.request.put('/v1/groups/grp-1/secrets').set(w).send({ add: ['gs'] })).body.secrets).toEqual(['gs']);
    expectProblem(await tb.request.put('/v1/groups/grp-1/secrets').set(w).send({ add: ['no-such'] }), 400, 'invalid_request');
    expectProblem(await tb.request.put('/v1/groups/no-such/secrets').set(w).send({ add: ['gs'] }), 404, 'not_found');
    const withClient = await tb.request.put('/v1/groups/grp-1/clients').set(w).send({ add: ['gc'] });
    expect(withClient.body.clients).toEqual(['gc']);
    expectProblem(await tb.request.put('/v1/groups/grp-1/clients').set(w).send({ add: ['nobody'] }), 400, 'invalid_request');
    expect((await tb.request.get('/v1/secrets/gs').set(aud)).body.groups).toEqual(['grp-1']);
    expect((await tb.request.get('/v1/clients/gc').set(aud)).body.groups).toEqual(['grp-1']);
    expect((await tb.request.get('/v1/groups/grp-1').set(aud)).body).toMatchObject({ secrets: ['gs'], clients: ['gc'] });

    expect((await tb.request.delete('/v1/groups/grp-1').set(w)).status).toBe(204);
    expectProblem(await tb.request.get('/v1/groups/grp-1').set(aud), 404, 'not_found');
    expect((await tb.request.get('/v1/secrets/gs').set(aud)).body.groups).toEqual([]);
    expect((await tb.request.get('/v1/clients/gc').set(aud)).body.groups).toEqual([]);
    expectProblem(await tb.request.delete('/v1/groups/grp-1').set(w), 404, 'not_found');
  });

  it('clients: create returns the secret once; get, list, patch, groups, delete', async () => {
    await tb.request.post('/v1/groups').set(w).send({ name: 'cg-1' });
    await tb.request.post('/v1/groups').set(w).send({ name: 'cg-2' });
    const c = await tb.request.post('/v1/clients').set(w).send({ name: 'cl-1', description: 'd', labels: { a: 'b' }, groups: ['cg-2', 'cg-1'] });
    expect(c.status).toBe(201);
    expect(c.headers['cache-control']).toBe('no-store');
    expect(c.body).toMatchObject({ name: 'cl-1', description: 'd', labels: { a: 'b' }, enabled: true, groups: ['cg-1', 'cg-2'] });
    expect(c.body.clientId).toMatch(/^kwc_/);
    expect(c.body.clientSecret).toMatch(/^kws_/);
    markSensitive(c.body.clientSecret);

    const got = await tb.request.get('/v1/clients/cl-1').set(aud);
    expect(got.status).toBe(200);
    expect(got.body).toMatchObject({ name: 'cl-1', clientId: c.body.clientId, groups: ['cg-1', 'cg-2'] });
    expect(got.body).not.toHaveProperty('clientSecret');
    expect(JSON.stringify(got.body)).not.toContain(c.body.clientSecret);
    const stored = await tb.broker.services.db('clients').where({ name: 'cl-1' }).first();
    expect(stored.secret_hash).not.toContain(c.body.clientSecret);

    expectProblem(await tb.request.post('/v1/clients').set(w).send({ name: 'cl-1' }), 409, 'already_exists');
    expectProblem(await tb.request.post('/v1/clients').set(w).send({ name: 'cl-x', groups: ['nope'] }), 400, 'invalid_request');
    expectProblem(await tb.request.get('/v1/clients/cl-x').set(aud), 404, 'not_found');

    for (const n of ['cl-2', 'cl-3']) await tb.request.post('/v1/clients').set(w).send({ name: n });
    const page1 = await tb.request.get('/v1/clients?limit=2').set(aud);
    expect(page1.body.items.map((i: any) => i.name)).toEqual(['cl-1', 'cl-2']);
    expect(JSON.stringify(page1.body)).not.toContain('kws_');
    const page2 = await tb.request.get(`/v1/clients?limit=2&cursor=${page1.body.nextCursor}`).set(aud);
    expect(page2.body.items.map((i: any) => i.name)).toEqual(['cl-3', 'gc']);
    if (page2.body.nextCursor !== null) {
      const page3 = await tb.request.get(`/v1/clients?limit=2&cursor=${page2.body.nextCursor}`).set(aud);
      expect(page3.body).toEqual({ items: [], nextCursor: null });
    }

    const patched = await tb.request.patch('/v1/clients/cl-1').set(w).send({ description: 'changed', labels: {} });
    expect(patched.body).toMatchObject({ description: 'changed', labels: {}, enabled: true });
    expectProblem(await tb.request.patch('/v1/clients/cl-1').set(w).send({ name: 'renamed' }), 400, 'invalid_request');
    expectProblem(await tb.request.patch('/v1/clients/nobody').set(w).send({ description: 'x' }), 404, 'not_found');

    const moved = await tb.request.put('/v1/clients/cl-1/groups').set(w).send({ add: ['cg-1'], remove: ['cg-2'] });
    expect(moved.body.groups).toEqual(['cg-1']);
    expectProblem(await tb.request.put('/v1/clients/cl-1/groups').set(w).send({ add: ['no-group'] }), 400, 'invalid_request');
    expect((await tb.request.get('/v1/clients/cl-1').set(aud)).body.groups).toEqual(['cg-1']);

    expect((await tb.request.delete('/v1/clients/cl-1').set(w)).status).toBe(204);
    expect((await tb.request.get('/v1/groups/cg-1').set(aud)).body.clients).toEqual([]);
    expectProblem(await tb.request.post('/v1/clients/cl-1/secret').set(w), 404, 'not_found');
  });
});
