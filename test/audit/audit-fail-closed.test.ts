import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pruneAuditLog } from '../../src/audit/audit-retention.js';
import { dialectUnderTest, startTestBroker, type TestBroker } from '../support/broker.js';
import { allEvents, auth, expectNoSensitive, expectProblemCode, headSeq, readJsonl } from './audit-helpers.js';

const VALUE = 'fail-closed-secret-value-7Qx9';
const NEW_VALUE = 'never-stored-secret-value-3Kp2';

/**
 * When the audit event cannot be written the operation does not happen: reads return no
 * content, writes roll back, and the JSONL mirror gets nothing.
 */
describe('audit fail-closed', () => {
  let tb: TestBroker;
  let W: Record<string, string>;
  let client: { clientId: string; clientSecret: string; token: string };
  let tmp: string;
  let auditFile: string;
  const db = () => tb.broker.services.db;

  async function breakAudit() {
    if (dialectUnderTest === 'postgres') {
      await db().raw(`CREATE OR REPLACE FUNCTION audit_fail() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'audit down'; END $$`);
      await db().raw('CREATE TRIGGER audit_fail BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION audit_fail()');
    } else {
      await db().raw(`CREATE TRIGGER audit_fail BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'audit down'); END;`);
    }
  }
  async function repairAudit() {
    if (dialectUnderTest === 'postgres') await db().raw('DROP TRIGGER IF EXISTS audit_fail ON audit_events');
    else await db().raw('DROP TRIGGER IF EXISTS audit_fail');
  }

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kw-audit-fc-'));
    auditFile = path.join(tmp, 'audit.jsonl');
    tb = await startTestBroker({ env: { KEYWARDEN_AUDIT_FILE: auditFile } });
    W = auth(await tb.apiKey('writer'));
    expect((await tb.request.post('/v1/groups').set(W).send({ name: 'app' })).status).toBe(201);
    expect((await tb.request.post('/v1/secrets').set(W).send({ name: 'app.key', value: VALUE, groups: ['app'] })).status).toBe(201);
    client = await tb.client('app-client', ['app']);
  });
  afterAll(async () => {
    await tb?.close();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('with the audit insert failing, nothing is served or changed, and every call is a 503 audit_unavailable', async () => {
    // events still queued would be sequenced during the outage and change nothing that matters, but
    // sequence them first so that the mirror's event lines are settled
    await tb.broker.services.auditSequencer.flush();
    const head = await headSeq(tb);
    const mirrored = readJsonl(auditFile).length;
    await breakAudit();
    try {
      // a client read: no content
      const read = await tb.request.get('/v1/client/secrets/app.key').set(auth(client.token));
      expectProblemCode(read, 503, 'audit_unavailable');
      expectNoSensitive(read.text, [VALUE], 'the 503 body');
      const batch = await tb.request.post('/v1/client/secrets/batch').set(auth(client.token)).send({ names: ['app.key'] });
      expectProblemCode(batch, 503, 'audit_unavailable');
      expectNoSensitive(batch.text, [VALUE], 'the 503 body');
      // an operator read: no content
      const opRead = await tb.request.get('/v1/secrets/app.key/content').set(W);
      expectProblemCode(opRead, 503, 'audit_unavailable');
      expectNoSensitive(opRead.text, [VALUE], 'the 503 body');

      // writes roll back
      expectProblemCode(await tb.request.post('/v1/secrets').set(W).send({ name: 'new.secret', value: NEW_VALUE, groups: ['app'] }), 503, 'audit_unavailable');
      expectProblemCode(await tb.request.post('/v1/secrets/app.key/versions').set(W).send({ value: NEW_VALUE }), 503, 'audit_unavailable');
      expectProblemCode(await tb.request.delete('/v1/secrets/app.key').set(W), 503, 'audit_unavailable');
      expectProblemCode(await tb.request.post('/v1/groups').set(W).send({ name: 'new-group' }), 503, 'audit_unavailable');
      expectProblemCode(await tb.request.post('/v1/clients').set(W).send({ name: 'new-client' }), 503, 'audit_unavailable');
      expectProblemCode(await tb.request.put('/v1/groups/app/clients').set(W).send({ remove: ['app-client'] }), 503, 'audit_unavailable');

      // no token is handed out when its issue cannot be recorded
      const token = await tb.request.post('/v1/auth/token').type('form').send({ grant_type: 'client_credentials', client_id: client.clientId, client_secret: client.clientSecret });
      expectProblemCode(token, 503, 'audit_unavailable');
      expect(token.body).not.toHaveProperty('access_token');
      const key = await tb.request.post('/v1/api-keys').set(auth(tb.adminKey)).send({ name: 'never', role: 'writer' });
      expectProblemCode(key, 503, 'audit_unavailable');
      expect(key.text).not.toMatch(/kw_/);

      // pruning removes nothing when its event cannot be recorded
      const s = tb.broker.services;
      const stored = await s.db('audit_events').count('* as n').first();
      await expect(pruneAuditLog({ dal: s.auditQuery, sequencer: s.auditSequencer, audit: s.audit }, Date.now() + 1000)).rejects.toMatchObject({ kind: 'unavailable' });
      expect(await s.db('audit_events').where({ leaf_index: 0 }).first()).toBeDefined();
      expect(await s.db('audit_events').count('* as n').first()).toEqual(stored);

      expect(await headSeq(tb)).toBe(head);
    } finally {
      await repairAudit();
    }

    // nothing of the refused operations exists
    expect((await tb.request.get('/v1/secrets/new.secret').set(W)).status).toBe(404);
    const detail = await tb.request.get('/v1/secrets/app.key').set(W);
    expect(detail.status).toBe(200);
    expect(detail.body).toMatchObject({ version: 1, latestVersion: 1, groups: ['app'] });
    expect((await tb.request.get('/v1/groups/new-group').set(W)).status).toBe(404);
    expect((await tb.request.get('/v1/clients/new-client').set(W)).status).toBe(404);
    expect((await tb.request.get('/v1/groups/app').set(W)).body.clients).toEqual(['app-client']);
    expect((await tb.request.get('/v1/api-keys').set(auth(tb.adminKey))).body.items.map((k: any) => k.name)).not.toContain('never');
    // the refused read left no trace in the last-read table either
    const access = await tb.request.get('/v1/reports/access').set(auth(tb.adminKey));
    expect(access.body.clients.find((c: any) => c.name === 'app-client').secrets[0]).toMatchObject({ name: 'app.key', lastReadAt: null });
    // and the mirror holds no event that the database does not
    expect(readJsonl(auditFile)).toHaveLength(mirrored);
    expect(await headSeq(tb)).toBe(head);
  });

  it('once the audit store works again, so does everything else, and the chain is intact', async () => {
    const read = await tb.request.get('/v1/client/secrets/app.key').set(auth(client.token));
    expect(read.status).toBe(200);
    expect(Buffer.from(read.body.content, 'base64').toString()).toBe(VALUE);
    expect((await tb.request.post('/v1/secrets').set(W).send({ name: 'new.secret', value: NEW_VALUE })).status).toBe(201);
    await tb.broker.services.auditSequencer.flush();
    const events = await allEvents(tb);
    expect(events.slice(-2).map((e) => e.action)).toEqual(['secret.read', 'secret.create']);
    // every event recorded before and after the outage is in the tree, in the order of its number
    expect(events.map((e) => e.leafIndex)).toEqual(events.map((_, i) => i));
    const verify = await tb.request.post('/v1/audit/verify').set(auth(tb.adminKey)).send({});
    expect(verify.body).toMatchObject({ ok: true, treeSize: events.length, leavesChecked: events.length, leavesWithoutEvent: 0 });
    const key = (e: { seq: number; action: string; ts: number }) => `${e.seq} ${e.action} ${e.ts}`;
    expect(readJsonl(auditFile).map(key)).toEqual((await allEvents(tb)).map(key));
  });
});
