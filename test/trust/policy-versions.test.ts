/**
 * GET /v1/policies/{name}/versions: a trust policy's history (every create, update and delete,
 * with the document each version stored), for the same callers as GET /v1/policies/{name}.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, startTestBroker, type TestBroker } from '../support/broker.js';
import { expectProblem } from '../core/helpers.js';

describe('trust policy version history', () => {
  let tb: TestBroker;
  let admin: Record<string, string>;
  let keys: Record<'writer' | 'auditor' | 'signer', Record<string, string>>;
  let client: Record<string, string>;

  beforeAll(async () => {
    tb = await startTestBroker();
    admin = bearer(tb.adminKey);
    keys = {
      writer: bearer(await tb.apiKey('writer')),
      auditor: bearer(await tb.apiKey('auditor')),
      signer: bearer(await tb.apiKey('signer')),
    };
    client = bearer((await tb.client('history-client')).token);
  });
  afterAll(async () => {
    await tb?.close();
  });

  const doc = (over: Record<string, unknown> = {}) => ({ name: 'hist', images: ['r.example.com/team/*'], mode: 'enforce', ...over });

  it('lists every version newest first, with the document each stored and who changed it', async () => {
    expect((await tb.request.post('/v1/policies').set(admin).send(doc())).status).toBe(201);
    expect((await tb.request.put('/v1/policies/hist').set(admin).send(doc({ mode: 'warn' }))).status).toBe(200);
    expect((await tb.request.put('/v1/policies/hist').set(admin).send(doc({ images: ['r.example.com/**'], rules: { nonRootUser: true } }))).status).toBe(200);

    const res = await tb.request.get('/v1/policies/hist/versions').set(keys.auditor);
    expect(res.status).toBe(200);
    const items = res.body.items as Array<{ version: number; change: string; document: Record<string, unknown> | null; updatedBy: string; at: string }>;
    expect(items.map((v) => [v.version, v.change])).toEqual([
      [3, 'update'],
      [2, 'update'],
      [1, 'create'],
    ]);
    expect(items[2].document).toMatchObject({ name: 'hist', mode: 'enforce', images: ['r.example.com/team/*'] });
    expect(items[1].document).toMatchObject({ mode: 'warn', images: ['r.example.com/team/*'] });
    expect(items[0].document).toMatchObject({ mode: 'enforce', images: ['r.example.com/**'], rules: { nonRootUser: true } });
    expect(items[1].document).not.toHaveProperty('rules');
    for (const v of items) {
      expect(v.updatedBy).toMatch(/^admin:/);
      expect(Number.isNaN(Date.parse(v.at))).toBe(false);
    }
    // the newest version is the current document
    const current = await tb.request.get('/v1/policies/hist').set(keys.auditor);
    expect(current.body.version).toBe(items[0].version);
    expect(current.body.document).toEqual(items[0].document);
  });

  it('keeps the history of a deleted policy, the delete included (no document)', async () => {
    expect((await tb.request.post('/v1/policies').set(admin).send(doc({ name: 'gone' }))).status).toBe(201);
    expect((await tb.request.delete('/v1/policies/gone').set(admin)).status).toBe(204);
    const res = await tb.request.get('/v1/policies/gone/versions').set(keys.signer);
    expect(res.status).toBe(200);
    expect(res.body.items.map((v: { change: string }) => v.change)).toEqual(['delete', 'create']);
    expect(res.body.items[0].document).toBeNull();
    expect(res.body.items[1].document).toMatchObject({ name: 'gone' });
  });

  it('is 404 for a policy that never existed and 400 for a malformed name', async () => {
    expectProblem(await tb.request.get('/v1/policies/no-such-policy/versions').set(keys.auditor), 404, 'not_found');
    expectProblem(await tb.request.get('/v1/policies/bad%20name!/versions').set(keys.auditor), 400);
  });

  it('lets auditors, signers and admins read it, and no one else', async () => {
    expect((await tb.request.get('/v1/policies/hist/versions').set(admin)).status).toBe(200);
    expect((await tb.request.get('/v1/policies/hist/versions').set(keys.signer)).status).toBe(200);
    expectProblem(await tb.request.get('/v1/policies/hist/versions').set(keys.writer), 403, 'forbidden');
    expectProblem(await tb.request.get('/v1/policies/hist/versions').set(client), 403, 'forbidden');
    expectProblem(await tb.request.get('/v1/policies/hist/versions'), 401, 'unauthenticated');
  });
});
