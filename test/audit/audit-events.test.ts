import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuditEvent } from '../../src/audit/audit-types.js';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { UA, allEvents, auth, capture, expectNoSensitive, expectProblemCode, jwtPayload, readJsonl, textOf } from './audit-helpers.js';

const HMAC = /^hmac-sha256:[0-9a-f]{64}$/;
const LOCAL_IP = /^(::ffff:)?127\.0\.0\.1$|^::1$/;

/**
 * Each action writes exactly the events it should, with the request context, and nothing that
 * could reveal a secret value or credential - neither in the database nor in the JSONL mirror.
 */
describe('audit events', () => {
  let tb: TestBroker;
  let tmp: string;
  let auditFile: string;
  let writer: { id: string; name: string; key: string };
  let W: Record<string, string>;
  let A: Record<string, string>;
  let alice: { clientId: string; clientSecret: string; token: string };
  const sensitive = new Set<string>();
  const mark = (...values: string[]) => values.forEach((v) => sensitive.add(v));
  const VALUES = {
    db: `db-password-${crypto.randomBytes(8).toString('hex')}`,
    db2: `db-password-v2-${crypto.randomBytes(8).toString('hex')}`,
    api: `api-token-${crypto.randomBytes(8).toString('hex')}`,
    other: `batch-only-${crypto.randomBytes(8).toString('hex')}`,
    tmp: `temporary-${crypto.randomBytes(8).toString('hex')}`,
  };

  const only = (events: AuditEvent[]) => {
    expect(events, JSON.stringify(events.map((e) => e.action))).toHaveLength(1);
    return events[0];
  };

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kw-audit-ev-'));
    auditFile = path.join(tmp, 'audit.jsonl');
    tb = await startTestBroker({ env: { KEYWARDEN_AUDIT_FILE: auditFile } });
    A = auth(tb.adminKey);
    mark(tb.adminKey, ...Object.values(VALUES));
    const res = await tb.request.post('/v1/api-keys').set(A).send({ name: 'audit-writer', role: 'writer' });
    expect(res.status).toBe(201);
    writer = { id: res.body.id, name: res.body.name, key: res.body.key };
    W = auth(writer.key);
    mark(writer.key);
  });
  afterAll(async () => {
    await tb?.close();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('group.create carries actor, resource, outcome and the request context', async () => {
    const t0 = Date.now();
    const { result: res, events } = await capture(tb, () =>
      tb.request.post('/v1/groups').set(W).set('X-Request-Id', 'audit-req-0001').send({ name: 'web' }),
    );
    const t1 = Date.now();
    expect(res.status).toBe(201);
    expect(res.headers['x-request-id']).toBe('audit-req-0001');
    const e = only(events);
    expect(e).toMatchObject({
      action: 'group.create',
      actorKind: 'operator',
      actorId: writer.id,
      actorName: 'audit-writer',
      resourceKind: 'group',
      resourceName: 'web',
      outcome: 'allow',
      reason: null,
      requestId: 'audit-req-0001',
      userAgent: UA,
    });
    expect(e.sourceIp).toMatch(LOCAL_IP);
    expect(e.ts).toBeGreaterThanOrEqual(t0);
    expect(e.ts).toBeLessThanOrEqual(t1);

    // without an incoming id, the generated one is both returned and recorded
    const { result: res2, events: ev2 } = await capture(tb, () => tb.request.post('/v1/groups').set(W).send({ name: 'batch' }));
    expect(res2.status).toBe(201);
    expect(res2.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    expect(only(ev2)).toMatchObject({ action: 'group.create', resourceName: 'batch', requestId: res2.headers['x-request-id'] });
    expect(ev2[0].seq).toBe(e.seq + 1);

    // an unusable incoming id is replaced, not recorded
    const { result: res3, events: ev3 } = await capture(tb, () =>
      tb.request.post('/v1/groups').set(W).set('X-Request-Id', 'bad id with spaces').send({ name: 'ops' }),
    );
    expect(res3.status).toBe(201);
    expect(res3.headers['x-request-id']).not.toBe('bad id with spaces');
    expect(only(ev3).requestId).toBe(res3.headers['x-request-id']);
  });

  it('secret.create (+ grant.add) is written for a created secret, and nothing for a rejected one', async () => {
    const { result: res, events } = await capture(tb, () =>
      tb.request.post('/v1/secrets').set(W).set('X-Request-Id', 'audit-req-0002').send({ name: 'db.password', value: VALUES.db, groups: ['web'] }),
    );
    expect(res.status).toBe(201);
    expect(events.map((e) => e.action)).toEqual(['secret.create', 'grant.add']);
    expect(events[0]).toMatchObject({ resourceKind: 'secret', resourceName: 'db.password', outcome: 'allow', actorId: writer.id, requestId: 'audit-req-0002', details: { version: 1, groups: ['web'] } });
    expect(events[1]).toMatchObject({ resourceKind: 'secret', resourceName: 'db.password', details: { group: 'web' }, requestId: 'audit-req-0002' });
    expect(events[1].seq).toBe(events[0].seq + 1);

    for (const body of [
      { name: 'api.token', value: VALUES.api, groups: ['web'] },
      { name: 'batch.only', value: VALUES.other, groups: ['batch'] },
      { name: 'tmp.secret', value: VALUES.tmp },
    ]) {
      expect((await tb.request.post('/v1/secrets').set(W).send(body)).status).toBe(201);
    }

    const rejected = [
      { name: 'no.value' },
      { name: 'both', value: 'x-value-1', content: 'eC12YWx1ZS0x' },
      { name: 'bad name!', value: 'some-value-1' },
      { name: 'unknown.group', value: 'some-value-2', groups: ['nope'] },
      { name: 'extra.field', value: 'some-value-3', owner: 'me' },
      { name: 'db.password', value: 'duplicate-value' }, // 409
    ];
    for (const body of rejected) {
      const { result: r, events: ev } = await capture(tb, () => tb.request.post('/v1/secrets').set(W).send(body));
      expect([400, 409]).toContain(r.status);
      expect(ev, `${JSON.stringify(body)} wrote ${JSON.stringify(ev.map((e) => e.action))}`).toEqual([]);
    }
    expect((await tb.request.get('/v1/secrets/unknown.group').set(W)).status).toBe(404);
  });

  it('listing and metadata reads write no secret.read', async () => {
    alice = await tb.client('alice', ['web']);
    mark(alice.clientSecret, alice.token);
    const { events } = await capture(tb, async () => {
      expect((await tb.request.get('/v1/secrets').set(W)).status).toBe(200);
      expect((await tb.request.get('/v1/secrets/db.password').set(W)).status).toBe(200);
      expect((await tb.request.get('/v1/secrets/db.password/versions').set(W)).status).toBe(200);
      expect((await tb.request.get('/v1/groups/web').set(W)).status).toBe(200);
      const list = await tb.request.get('/v1/client/secrets').set(auth(alice.token));
      expect(list.status).toBe(200);
      expect(list.body.items.map((i: any) => i.name)).toEqual(['api.token', 'db.password']);
    });
    expect(events).toEqual([]);
  });

  it('secret.read by a client records the version and the granting group; denials are recorded too', async () => {
    const { result: res, events } = await capture(tb, () => tb.request.get('/v1/client/secrets/db.password').set(auth(alice.token)));
    expect(res.status).toBe(200);
    expect(Buffer.from(res.body.content, 'base64').toString()).toBe(VALUES.db);
    expect(only(events)).toMatchObject({
      action: 'secret.read',
      actorKind: 'client',
      actorId: alice.clientId,
      actorName: 'alice',
      resourceKind: 'secret',
      resourceName: 'db.password',
      outcome: 'allow',
      requestId: res.headers['x-request-id'],
      details: { version: 1, via: 'client', group: 'web' },
    });

    for (const name of ['batch.only', 'does.not.exist']) {
      const { result: r, events: ev } = await capture(tb, () => tb.request.get(`/v1/client/secrets/${name}`).set(auth(alice.token)));
      expect(r.status).toBe(404);
      expect(only(ev)).toMatchObject({ action: 'secret.read', outcome: 'deny', reason: 'not found or not granted', resourceName: name, actorName: 'alice' });
    }

    const { result: b, events: bev } = await capture(tb, () =>
      tb.request.post('/v1/client/secrets/batch').set(auth(alice.token)).send({ names: ['db.password', 'api.token'] }),
    );
    expect(b.status).toBe(200);
    expect(bev.map((e) => [e.action, e.resourceName, e.outcome])).toEqual([
      ['secret.read', 'db.password', 'allow'],
      ['secret.read', 'api.token', 'allow'],
    ]);
    expect(new Set(bev.map((e) => e.requestId))).toEqual(new Set([b.headers['x-request-id']]));
  });

  it('secret.read by an operator records via=operator and the version read', async () => {
    const { result: res, events } = await capture(tb, () => tb.request.get('/v1/secrets/db.password/content').set(W));
    expect(res.status).toBe(200);
    expect(only(events)).toMatchObject({ action: 'secret.read', actorKind: 'operator', actorId: writer.id, resourceName: 'db.password', outcome: 'allow', details: { version: 1, via: 'operator' } });
  });

  it('secret.update, secret.version.create, secret.rollback and secret.delete', async () => {
    let c = await capture(tb, () => tb.request.patch('/v1/secrets/db.password').set(W).send({ description: 'primary db', labels: { tier: 'prod' } }));
    expect(c.result.status).toBe(200);
    expect(only(c.events)).toMatchObject({ action: 'secret.update', resourceName: 'db.password', details: { fields: ['description', 'labels'] } });

    c = await capture(tb, () => tb.request.post('/v1/secrets/db.password/versions').set(W).send({ value: VALUES.db2 }));
    expect(c.result.status).toBe(201);
    expect(only(c.events)).toMatchObject({ action: 'secret.version.create', resourceName: 'db.password', details: { version: 2, previous: 1 } });

    c = await capture(tb, () => tb.request.get('/v1/client/secrets/db.password').set(auth(alice.token)));
    expect(only(c.events).details).toMatchObject({ version: 2, via: 'client' });

    c = await capture(tb, () => tb.request.get('/v1/secrets/db.password/content?version=1').set(W));
    expect(c.result.status).toBe(200);
    expect(only(c.events).details).toMatchObject({ version: 1, via: 'operator' });

    c = await capture(tb, () => tb.request.post('/v1/secrets/db.password/rollback').set(W).send({ version: 1 }));
    expect(c.result.status).toBe(200);
    expect(only(c.events)).toMatchObject({ action: 'secret.rollback', details: { version: 1, previous: 2 } });

    c = await capture(tb, () => tb.request.get('/v1/client/secrets/db.password').set(auth(alice.token)));
    expect(only(c.events).details).toMatchObject({ version: 1 });

    // failures of the same operations write nothing
    for (const req of [
      () => tb.request.post('/v1/secrets/db.password/rollback').set(W).send({ version: 9 }),
      () => tb.request.post('/v1/secrets/db.password/versions').set(W).send({ value: 'cas-value-x', cas: 7 }),
      () => tb.request.patch('/v1/secrets/db.password').set(W).send({ bogus: true }),
      () => tb.request.patch('/v1/secrets/nope').set(W).send({ description: 'x' }),
      () => tb.request.delete('/v1/secrets/nope').set(W),
    ]) {
      const f = await capture(tb, req);
      expect(f.result.status).toBeGreaterThanOrEqual(400);
      expect(f.events).toEqual([]);
    }

    c = await capture(tb, () => tb.request.delete('/v1/secrets/tmp.secret').set(W));
    expect(c.result.status).toBe(204);
    expect(only(c.events)).toMatchObject({ action: 'secret.delete', resourceKind: 'secret', resourceName: 'tmp.secret', outcome: 'allow', details: { version: 1 } });
  });

  it('grant.add / grant.remove and membership.add / membership.remove', async () => {
    let c = await capture(tb, () => tb.request.put('/v1/groups/ops/secrets').set(W).send({ add: ['api.token', 'batch.only'], remove: [] }));
    expect(c.result.status).toBe(200);
    expect(c.events.map((e) => [e.action, e.resourceKind, e.resourceName, e.details.group])).toEqual([
      ['grant.add', 'secret', 'api.token', 'ops'],
      ['grant.add', 'secret', 'batch.only', 'ops'],
    ]);
    c = await capture(tb, () => tb.request.put('/v1/groups/ops/secrets').set(W).send({ remove: ['batch.only'] }));
    expect(only(c.events)).toMatchObject({ action: 'grant.remove', resourceName: 'batch.only', details: { group: 'ops' } });

    c = await capture(tb, () => tb.request.put('/v1/clients/alice/groups').set(W).send({ add: ['ops'] }));
    expect(c.result.status).toBe(200);
    expect(only(c.events)).toMatchObject({ action: 'membership.add', resourceKind: 'client', resourceName: 'alice', details: { group: 'ops' } });
    c = await capture(tb, () => tb.request.put('/v1/clients/alice/groups').set(W).send({ remove: ['ops'] }));
    expect(only(c.events)).toMatchObject({ action: 'membership.remove', resourceName: 'alice', details: { group: 'ops' } });

    const bob = await tb.client('bob');
    mark(bob.clientSecret, bob.token);
    c = await capture(tb, () => tb.request.put('/v1/groups/batch/clients').set(W).send({ add: ['bob'] }));
    expect(only(c.events)).toMatchObject({ action: 'membership.add', resourceName: 'bob', details: { group: 'batch' } });

    // a change naming an unknown group or secret is rejected whole
    c = await capture(tb, () => tb.request.put('/v1/clients/alice/groups').set(W).send({ add: ['ops', 'ghost'] }));
    expect(c.result.status).toBe(400);
    expect(c.events).toEqual([]);
    c = await capture(tb, () => tb.request.put('/v1/groups/ops/secrets').set(W).send({ add: ['ghost'] }));
    expect(c.result.status).toBe(400);
    expect(c.events).toEqual([]);
  });

  it('client.create (+ membership.add), client.delete and group.delete', async () => {
    let c = await capture(tb, () => tb.request.post('/v1/clients').set(W).send({ name: 'temp', groups: ['web'] }));
    expect(c.result.status).toBe(201);
    mark(c.result.body.clientSecret);
    expect(c.events.map((e) => e.action)).toEqual(['client.create', 'membership.add']);
    expect(c.events[0]).toMatchObject({ resourceKind: 'client', resourceName: 'temp', details: { clientId: c.result.body.clientId, groups: ['web'] } });
    expect(c.events[1]).toMatchObject({ resourceName: 'temp', details: { group: 'web' } });

    const dup = await capture(tb, () => tb.request.post('/v1/clients').set(W).send({ name: 'temp' }));
    expect(dup.result.status).toBe(409);
    expect(dup.events).toEqual([]);

    c = await capture(tb, () => tb.request.delete('/v1/clients/temp').set(W));
    expect(c.result.status).toBe(204);
    expect(only(c.events)).toMatchObject({ action: 'client.delete', resourceName: 'temp', details: { clientId: expect.stringMatching(/^kwc_/) } });

    c = await capture(tb, () => tb.request.delete('/v1/groups/ops').set(W));
    expect(c.result.status).toBe(204);
    expect(only(c.events)).toMatchObject({ action: 'group.delete', resourceKind: 'group', resourceName: 'ops' });

    c = await capture(tb, () => tb.request.delete('/v1/groups/ops').set(W));
    expect(c.result.status).toBe(404);
    expect(c.events).toEqual([]);
  });

  it('apikey.create / apikey.revoke; a revoked key is an auth.failure with only an HMAC of it', async () => {
    let c = await capture(tb, () => tb.request.post('/v1/api-keys').set(A).send({ name: 'ci-key', role: 'writer' }));
    expect(c.result.status).toBe(201);
    const { id, key } = c.result.body;
    mark(key);
    expect(only(c.events)).toMatchObject({ action: 'apikey.create', actorKind: 'operator', actorName: 'bootstrap-admin', resourceKind: 'api-key', resourceName: id, details: { role: 'writer', name: 'ci-key' } });

    c = await capture(tb, () => tb.request.delete(`/v1/api-keys/${id}`).set(A));
    expect(c.result.status).toBe(204);
    expect(only(c.events)).toMatchObject({ action: 'apikey.revoke', resourceName: id, details: { role: 'writer', name: 'ci-key' } });

    c = await capture(tb, () => tb.request.get('/v1/secrets').set(auth(key)));
    expectProblemCode(c.result, 401, 'api_key_revoked');
    const e = only(c.events);
    expect(e).toMatchObject({ action: 'auth.failure', outcome: 'deny', reason: 'api_key_revoked', actorKind: 'operator', details: { path: '/v1/secrets' } });
    expect(e.details.credential).toMatch(HMAC);
  });

  it('client.secret.rotate', async () => {
    const carol = await tb.client('carol');
    mark(carol.clientSecret, carol.token);
    const c = await capture(tb, () => tb.request.post('/v1/clients/carol/secret').set(W));
    expect(c.result.status).toBe(200);
    mark(c.result.body.clientSecret);
    expect(only(c.events)).toMatchObject({ action: 'client.secret.rotate', resourceKind: 'client', resourceName: 'carol', details: { clientId: carol.clientId } });
  });

  it('auth.token.issue records the jti; failed logins record a reason and no credential', async () => {
    let c = await capture(tb, () =>
      tb.request.post('/v1/auth/token').set('User-Agent', UA).type('form').send({ grant_type: 'client_credentials', client_id: alice.clientId, client_secret: alice.clientSecret }),
    );
    expect(c.result.status).toBe(200);
    const token = c.result.body.access_token;
    mark(token);
    const claims = jwtPayload(token);
    const issued = only(c.events);
    expect(issued).toMatchObject({
      action: 'auth.token.issue',
      actorKind: 'client',
      actorId: alice.clientId,
      actorName: 'alice',
      resourceKind: 'client',
      resourceName: 'alice',
      outcome: 'allow',
      userAgent: UA,
      details: { jti: claims.jti, grantType: 'client_credentials', expiresAt: new Date(claims.exp * 1000).toISOString() },
    });

    const wrong = `kws_${crypto.randomBytes(24).toString('base64url')}`;
    mark(wrong);
    c = await capture(tb, () => tb.request.post('/v1/auth/token').type('form').send({ grant_type: 'client_credentials', client_id: alice.clientId, client_secret: wrong }));
    expectProblemCode(c.result, 401, 'invalid_client');
    expect(only(c.events)).toMatchObject({ action: 'auth.failure', outcome: 'deny', reason: 'invalid client credentials', actorKind: 'client', actorId: alice.clientId, details: { grantType: 'client_credentials' } });

    // the same wrong secret by HTTP Basic
    c = await capture(tb, () =>
      tb.request.post('/v1/auth/token').auth(alice.clientId, wrong).type('form').send({ grant_type: 'client_credentials' }),
    );
    expect(c.result.status).toBe(401);
    expect(only(c.events)).toMatchObject({ action: 'auth.failure', reason: 'invalid client credentials' });

    // a bad bearer token: the presented value is only ever stored as an HMAC
    const badKey = `kw_${crypto.randomBytes(32).toString('base64url')}`;
    const badJwt = `eyJhbGciOiJFUzI1NiJ9.${Buffer.from('{"sub":"x"}').toString('base64url')}.${crypto.randomBytes(16).toString('base64url')}`;
    mark(badKey, badJwt);
    const failures: AuditEvent[] = [];
    for (const [bad, kind, reason] of [
      [badKey, 'operator', 'invalid_api_key'],
      [badJwt, 'unknown', 'invalid_token'],
      [badKey, 'operator', 'invalid_api_key'],
    ] as const) {
      c = await capture(tb, () => tb.request.get('/v1/client/secrets').set(auth(bad)));
      expect(c.result.status).toBe(401);
      const e = only(c.events);
      expect(e).toMatchObject({ action: 'auth.failure', outcome: 'deny', actorKind: kind, reason, details: { path: '/v1/client/secrets' } });
      expect(e.details.credential).toMatch(HMAC);
      failures.push(e);
    }
    // the HMAC is stable, so repeated use of one credential can be correlated
    expect(failures[0].details.credential).toBe(failures[2].details.credential);
    expect(failures[0].details.credential).not.toBe(failures[1].details.credential);

    // a request without credentials is a 401 but not an auth failure event
    c = await capture(tb, () => tb.request.get('/v1/secrets'));
    expect(c.result.status).toBe(401);
    expect(c.events).toEqual([]);
  });

  it('bootstrap.create, use (auth.token.issue) and reuse (auth.bootstrap.reuse alert)', async () => {
    const dave = await tb.client('dave', ['web']);
    mark(dave.clientSecret, dave.token);
    let c = await capture(tb, () => tb.request.post('/v1/clients/dave/bootstrap-tokens').set(W).send({ ttl: 600 }));
    expect(c.result.status).toBe(201);
    const { token: bootstrap, accessor } = c.result.body;
    mark(bootstrap);
    expect(only(c.events)).toMatchObject({ action: 'bootstrap.create', resourceKind: 'client', resourceName: 'dave', outcome: 'allow', details: { accessor, expiresAt: c.result.body.expiresAt } });

    const exchange = () => tb.request.post('/v1/auth/token').type('form').send({ grant_type: 'urn:keywarden:bootstrap', bootstrap_token: bootstrap });
    c = await capture(tb, exchange);
    expect(c.result.status).toBe(200);
    const access = c.result.body.access_token;
    mark(access);
    const jti = jwtPayload(access).jti;
    expect(only(c.events)).toMatchObject({ action: 'auth.token.issue', actorName: 'dave', details: { jti, grantType: 'urn:keywarden:bootstrap', accessor } });

    c = await capture(tb, exchange);
    expectProblemCode(c.result, 401, 'bootstrap_token_reused');
    const alert = only(c.events);
    expect(alert).toMatchObject({
      action: 'auth.bootstrap.reuse',
      actorKind: 'client',
      actorId: dave.clientId,
      actorName: 'dave',
      resourceKind: 'client',
      resourceName: 'dave',
      outcome: 'deny',
      details: { alert: true, accessor, revokedJti: jti },
    });
    expect(alert.reason).toMatch(/again/);
    expect(alert.details.credential).toMatch(HMAC);
    // the token the first use obtained is revoked (and that failure is audited too)
    c = await capture(tb, () => tb.request.get('/v1/client/secrets').set(auth(access)));
    expectProblemCode(c.result, 401, 'token_revoked');
    expect(only(c.events)).toMatchObject({ action: 'auth.failure', reason: 'token_revoked', actorKind: 'unknown' });

    const unknown = `kwb_${crypto.randomBytes(24).toString('base64url')}`;
    mark(unknown);
    c = await capture(tb, () => tb.request.post('/v1/auth/token').type('form').send({ grant_type: 'urn:keywarden:bootstrap', bootstrap_token: unknown }));
    expectProblemCode(c.result, 401, 'invalid_bootstrap_token');
    const f = only(c.events);
    expect(f).toMatchObject({ action: 'auth.failure', reason: 'unknown bootstrap token', details: { grantType: 'urn:keywarden:bootstrap' } });
    expect(f.details.credential).toMatch(HMAC);
  });

  it('credential.jwt.mint records jti, audience and expiry; a refused audience is a deny', async () => {
    let c = await capture(tb, () => tb.request.patch('/v1/clients/alice').set(W).send({ allowedAudiences: ['svc-a'] }));
    expect(c.result.status).toBe(200);
    expect(only(c.events)).toMatchObject({ action: 'client.update', resourceName: 'alice', details: { fields: ['allowedAudiences'] } });

    c = await capture(tb, () => tb.request.post('/v1/client/credentials/jwt').set(auth(alice.token)).send({ audience: 'svc-a', ttl: 300 }));
    expect(c.result.status).toBe(201);
    mark(c.result.body.token);
    expect(jwtPayload(c.result.body.token).jti).toBe(c.result.body.jti);
    expect(only(c.events)).toMatchObject({
      action: 'credential.jwt.mint',
      actorKind: 'client',
      actorName: 'alice',
      resourceKind: 'audience',
      resourceName: 'svc-a',
      outcome: 'allow',
      details: { jti: c.result.body.jti, audience: 'svc-a', expiresAt: c.result.body.expiresAt },
    });

    c = await capture(tb, () => tb.request.post('/v1/client/credentials/jwt').set(auth(alice.token)).send({ audience: 'svc-b', ttl: 300 }));
    expectProblemCode(c.result, 403, 'audience_not_allowed');
    const deny = only(c.events);
    expect(deny).toMatchObject({ action: 'credential.jwt.mint', outcome: 'deny', resourceName: 'svc-b' });
    expect(deny.reason).toBeTruthy();
    expect(deny.details).not.toHaveProperty('jti');
  });

  it('jwtkey.rotate', async () => {
    const c = await capture(tb, () => tb.request.post('/v1/jwt-keys/rotate').set(A));
    expect(c.result.status).toBe(200);
    expect(only(c.events)).toMatchObject({ action: 'jwtkey.rotate', resourceKind: 'jwt-key', resourceName: c.result.body.kid, details: { retired: c.result.body.retired } });
    expect(c.result.body.retired.length).toBeGreaterThan(0);
  });

  it('every event is well-formed: numbered in order, one leaf each in that order, the API returns the same records', async () => {
    await tb.broker.services.auditSequencer.flush();
    const events = await allEvents(tb);
    expect(events.length).toBeGreaterThan(50);
    events.forEach((e, i) => {
      // one broker, one writer at a time: numbers and leaves follow the order of recording
      expect(e.seq).toBe(i + 1);
      expect(e.leafIndex).toBe(i);
      if (i > 0) expect(e.ts).toBeGreaterThanOrEqual(events[i - 1].ts);
      expect(e.prevHash).toBeUndefined();
      expect(['operator', 'client', 'ci', 'system', 'anonymous', 'unknown']).toContain(e.actorKind);
      expect(['allow', 'deny', 'error']).toContain(e.outcome);
      expect(e.action).toMatch(/^[a-z0-9.]+$/);
      if (e.outcome !== 'allow' && e.action !== 'audit.verify') expect(e.reason, JSON.stringify(e)).toBeTruthy();
    });
    const api = await tb.request.get('/v1/audit').query({ order: 'asc', limit: 1000 }).set(A);
    expect(api.status).toBe(200);
    expect(api.body.items).toEqual(events);
    const verify = await tb.request.post('/v1/audit/verify').set(A).send({});
    expect(verify.body).toMatchObject({ ok: true, treeSize: events.length, leavesChecked: events.length });
  });

  it('no secret value, client secret, API key, token or bootstrap token appears in any event or in the mirror', async () => {
    expect(sensitive.size).toBeGreaterThan(20);
    const events = await allEvents(tb);
    expectNoSensitive(JSON.stringify(events), sensitive, 'audit_events');
    const raw = await tb.broker.services.db('audit_events').select();
    expectNoSensitive(JSON.stringify(raw), sensitive, 'audit_events rows');
    const { res, text } = await textOf(tb.request.get('/v1/audit/export').set(A));
    expect(res.status).toBe(200);
    expectNoSensitive(text, sensitive, 'the export');

    const fileText = fs.readFileSync(auditFile, 'utf8');
    expectNoSensitive(fileText, sensitive, 'the JSONL mirror');
    // and the mirror holds exactly the committed events, besides the signed tree heads
    const mirrored = readJsonl(auditFile).filter((line) => !('type' in line));
    const now = await allEvents(tb);
    expect(mirrored.map((e) => e.seq)).toEqual(now.map((e) => e.seq));
    expect(mirrored.map(({ leafIndex: _l, ...e }) => e)).toEqual(now.map(({ leafIndex: _l, ...e }) => e));
  });
});
