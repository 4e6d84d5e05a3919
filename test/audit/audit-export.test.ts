import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { compactVerify, importJWK, type JWK } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chainHash } from '../../src/audit/audit-chain.js';
import { pruneAuditLog } from '../../src/audit/audit-retention.js';
import { verifyExportFile } from '../../src/audit/offline-verify.js';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { allEvents, auth, headSeq, textOf } from './audit-helpers.js';

/** Signed checkpoints: verifiable with the public JWKS, anchoring offline exports and pruned logs. */
describe('audit checkpoints, offline verification and pruning', () => {
  let tb: TestBroker;
  let now = Date.parse('2031-03-01T08:00:00.000Z');
  let A: Record<string, string>;
  let AU: Record<string, string>;
  let W: Record<string, string>;
  let tmp: string;
  const db = () => tb.broker.services.db;

  const jwks = async (): Promise<{ keys: JWK[] }> => {
    const res = await tb.request.get('/.well-known/jwks.json');
    expect(res.status).toBe(200);
    return res.body;
  };
  const exportTo = async (file: string, query: Record<string, string> = { checkpoints: 'true' }) => {
    const { res, text } = await textOf(tb.request.get('/v1/audit/export').query(query).set(AU));
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^application\/x-ndjson/);
    fs.writeFileSync(file, text);
    return text.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));
  };
  const rewriteLine = (file: string, match: (obj: any) => boolean, edit: (obj: any) => any) => {
    const lines = fs.readFileSync(file, 'utf8').split('\n');
    const idx = lines.findIndex((l) => l.trim() && match(JSON.parse(l)));
    expect(idx).toBeGreaterThanOrEqual(0);
    lines[idx] = JSON.stringify(edit(JSON.parse(lines[idx])));
    const out = path.join(tmp, `tampered-${Math.random().toString(36).slice(2)}.ndjson`);
    fs.writeFileSync(out, lines.join('\n'));
    return out;
  };

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kw-audit-cp-'));
    tb = await startTestBroker({ clock: () => now });
    A = auth(tb.adminKey);
    AU = auth(await tb.apiKey('auditor'));
    W = auth(await tb.apiKey('writer'));
    for (const g of ['a', 'b', 'c', 'd']) expect((await tb.request.post('/v1/groups').set(W).send({ name: g })).status).toBe(201);
    expect((await tb.request.post('/v1/secrets').set(W).send({ name: 'k1', value: 'checkpoint-secret-1', groups: ['a'] })).status).toBe(201);
  });
  afterAll(async () => {
    await tb?.close();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  let checkpoint: any;

  it('POST /v1/audit/checkpoints signs the head; the JWS verifies against the published JWKS', async () => {
    const head = await tb.broker.services.auditQuery.head();
    const res = await tb.request.post('/v1/audit/checkpoints').set(A);
    expect(res.status).toBe(201);
    checkpoint = res.body;
    expect(checkpoint).toMatchObject({ seq: head.seq, headHash: head.hash, reason: 'on-demand', time: new Date(now).toISOString(), issuer: tb.config.issuer });

    const keys = await jwks();
    const jwk = keys.keys.find((k) => k.kid === checkpoint.kid);
    expect(jwk).toBeTruthy();
    expect(jwk).not.toHaveProperty('d');
    const { payload, protectedHeader } = await compactVerify(checkpoint.jws, await importJWK(jwk!, jwk!.alg ?? 'ES256'));
    expect(protectedHeader).toMatchObject({ kid: checkpoint.kid, typ: 'kw-audit-checkpoint+jws' });
    expect(JSON.parse(Buffer.from(payload).toString('utf8'))).toEqual({ seq: head.seq, headHash: head.hash, time: checkpoint.time, issuer: tb.config.issuer });

    // an altered payload does not verify
    const [h, p, s] = checkpoint.jws.split('.');
    const forged = JSON.parse(Buffer.from(p, 'base64url').toString());
    forged.seq = head.seq + 5;
    await expect(compactVerify(`${h}.${Buffer.from(JSON.stringify(forged)).toString('base64url')}.${s}`, await importJWK(jwk!, 'ES256'))).rejects.toThrow();

    // recorded, and listed for auditors
    const last = (await allEvents(tb)).at(-1)!;
    expect(last).toMatchObject({ action: 'audit.checkpoint', details: { seq: head.seq }, seq: head.seq + 1 });
    const list = await tb.request.get('/v1/audit/checkpoints').set(AU);
    expect(list.status).toBe(200);
    expect(list.body.items.map((c: any) => c.id)).toContain(checkpoint.id);
    expect(list.body.items.find((c: any) => c.id === checkpoint.id)).toMatchObject({ seq: head.seq, jws: checkpoint.jws });

    // and the online verifier checks it
    expect((await tb.request.post('/v1/audit/verify').set(AU).send({})).body).toMatchObject({ ok: true, checkpointsChecked: 1 });
  });

  it('an export with checkpoints verifies offline; any edited line makes it fail', async () => {
    now += 60_000;
    expect((await tb.request.post('/v1/groups').set(W).send({ name: 'e' })).status).toBe(201);
    const file = path.join(tmp, 'export.ndjson');
    const lines = await exportTo(file);
    const events = lines.filter((l) => l.type !== 'checkpoint');
    const cps = lines.filter((l) => l.type === 'checkpoint');
    expect(events.map((e) => e.seq)).toEqual((await allEvents(tb)).map((e) => e.seq));
    expect(events.at(-1).action).toBe('audit.export');
    expect(cps).toHaveLength(1);
    const keys = await jwks();
    expect(await verifyExportFile(file, keys)).toMatchObject({ ok: true, checked: events.length, checkpointsVerified: 1 });

    const edited = rewriteLine(file, (o) => o.seq === 3 && o.type !== 'checkpoint', (o) => ({ ...o, actorName: 'mallory' }));
    expect(await verifyExportFile(edited, keys)).toMatchObject({ ok: false, firstBrokenSeq: 3 });

    const editedDetails = rewriteLine(file, (o) => o.seq === 4 && o.type !== 'checkpoint', (o) => ({ ...o, details: { ...o.details, extra: 1 } }));
    expect(await verifyExportFile(editedDetails, keys)).toMatchObject({ ok: false, firstBrokenSeq: 4 });

    const dropped = fs.readFileSync(file, 'utf8').split('\n').filter((l) => !(l.trim() && JSON.parse(l).seq === 5 && JSON.parse(l).type !== 'checkpoint'));
    const droppedFile = path.join(tmp, 'dropped.ndjson');
    fs.writeFileSync(droppedFile, dropped.join('\n'));
    expect(await verifyExportFile(droppedFile, keys)).toMatchObject({ ok: false, firstBrokenSeq: 5 });

    // a forged checkpoint line (payload changed, signature kept) is rejected
    const forgedCp = rewriteLine(file, (o) => o.type === 'checkpoint', (o) => {
      const [h, p, s] = o.jws.split('.');
      const payload = JSON.parse(Buffer.from(p, 'base64url').toString());
      payload.headHash = '0'.repeat(64);
      return { ...o, jws: `${h}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}.${s}` };
    });
    const r = await verifyExportFile(forgedCp, keys);
    expect(r.ok).toBe(false);
    expect(r.reason).toMatch(/signature/);

    // an event rewritten and the whole chain after it recomputed still contradicts the signed checkpoint
    const objs = fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));
    let prev: string | undefined;
    for (const o of objs) {
      if (o.type === 'checkpoint') continue;
      if (o.seq === 3) o.actorName = 'mallory';
      if (o.seq >= 3) {
        if (prev) o.prevHash = prev;
        const { hash: _h, ...rest } = o;
        o.hash = chainHash(o.prevHash, rest);
      }
      prev = o.hash;
    }
    const rechained = path.join(tmp, 'rechained.ndjson');
    fs.writeFileSync(rechained, objs.map((o) => JSON.stringify(o)).join('\n'));
    const rr = await verifyExportFile(rechained, keys);
    expect(rr).toMatchObject({ ok: false, firstBrokenSeq: checkpoint.seq });
    expect(rr.reason).toMatch(/signed checkpoint/);

    // with a JWKS lacking the signing key the checkpoint is skipped, never trusted
    expect(await verifyExportFile(file, { keys: [] })).toMatchObject({ ok: true, checkpointsVerified: 0, checkpointsSkipped: 1 });
  });

  it('a partial export is anchored only by a signed checkpoint', async () => {
    const keys = await jwks();
    const anchored = path.join(tmp, 'anchored.ndjson');
    const lines = await exportTo(anchored, { since: String(checkpoint.seq + 1), checkpoints: 'true' });
    expect(lines.find((l) => l.type !== 'checkpoint').seq).toBe(checkpoint.seq + 1);
    expect(await verifyExportFile(anchored, keys)).toMatchObject({ ok: true });

    const unanchored = path.join(tmp, 'unanchored.ndjson');
    await exportTo(unanchored, { since: String(checkpoint.seq + 2), checkpoints: 'true' });
    expect(await verifyExportFile(unanchored, keys)).toMatchObject({ ok: false, firstBrokenSeq: checkpoint.seq + 2 });
  });

  it('an export cut off before a signed checkpoint is detected offline', async () => {
    const keys = await jwks();
    const file = path.join(tmp, 'full.ndjson');
    const lines = await exportTo(file);
    const events = lines.filter((l) => l.type !== 'checkpoint');
    expect(events.at(-1).seq).toBeGreaterThan(checkpoint.seq);
    const cut = (lastSeq: number) => {
      const out = path.join(tmp, `cut-${lastSeq}.ndjson`);
      fs.writeFileSync(out, lines.filter((l) => l.type === 'checkpoint' || l.seq <= lastSeq).map((l) => JSON.stringify(l)).join('\n'));
      return out;
    };
    // cutting events the checkpoint does not cover cannot be told from an older export
    expect(await verifyExportFile(cut(checkpoint.seq), keys)).toMatchObject({ ok: true });
    // but the checkpoint vouches for everything up to its seq
    const r = await verifyExportFile(cut(checkpoint.seq - 2), keys);
    expect(r).toMatchObject({ ok: false, firstBrokenSeq: checkpoint.seq - 1 });
    expect(r.reason).toMatch(/missing/);
    const none = path.join(tmp, 'only-checkpoints.ndjson');
    fs.writeFileSync(none, lines.filter((l) => l.type === 'checkpoint').map((l) => JSON.stringify(l)).join('\n'));
    expect(await verifyExportFile(none, keys)).toMatchObject({ ok: false });

    // an honest export that ends before the checkpoint (until=) carries no checkpoint beyond its end
    const early = path.join(tmp, 'until.ndjson');
    const earlyLines = await exportTo(early, { until: String(checkpoint.seq - 2), checkpoints: 'true' });
    expect(earlyLines.filter((l) => l.type === 'checkpoint')).toEqual([]);
    expect(await verifyExportFile(early, keys)).toMatchObject({ ok: true, checked: checkpoint.seq - 2 });
  });

  it('checkpoints signed by a since-rotated key still verify', async () => {
    expect((await tb.request.post('/v1/jwt-keys/rotate').set(A)).status).toBe(200);
    const keys = await jwks();
    expect(keys.keys.map((k) => k.kid)).toContain(checkpoint.kid);
    expect((await tb.request.post('/v1/audit/verify').set(AU).send({})).body).toMatchObject({ ok: true, checkpointsChecked: 1 });
  });

  it('after pruning, verify is anchored by the prune checkpoint; without that checkpoint it fails', async () => {
    now += 86_400_000;
    const cutoff = now;
    for (const g of ['f', 'g']) expect((await tb.request.post('/v1/groups').set(W).send({ name: g })).status).toBe(201);
    const headBefore = await headSeq(tb);
    const oldCount = (await allEvents(tb)).filter((e) => e.ts < cutoff).length;

    const s = tb.broker.services;
    const result = await pruneAuditLog({ dal: s.auditQuery, checkpoints: s.checkpoints, audit: s.audit }, cutoff);
    expect(result.removed).toBe(oldCount);
    expect(result.throughSeq).toBe(oldCount);
    const remaining = await allEvents(tb);
    expect(remaining[0].seq).toBe(result.throughSeq + 1);
    expect(remaining.at(-1)).toMatchObject({ action: 'audit.prune', seq: headBefore + 1, details: { removed: oldCount, throughSeq: result.throughSeq, checkpointId: result.checkpointId } });

    const v = await tb.request.post('/v1/audit/verify').set(AU).send({});
    expect(v.body).toMatchObject({ ok: true, checked: remaining.length, fromSeq: result.throughSeq + 1 });

    // the export of the pruned log verifies offline too
    const file = path.join(tmp, 'pruned.ndjson');
    await exportTo(file);
    expect(await verifyExportFile(file, await jwks())).toMatchObject({ ok: true });

    // a forged anchor: signature no longer matches
    const cpRow = await db()('audit_checkpoints').where({ id: result.checkpointId }).first();
    const [h, p, sig] = String(cpRow.jws).split('.');
    const payload = JSON.parse(Buffer.from(p, 'base64url').toString());
    payload.headHash = 'a'.repeat(64);
    await db()('audit_checkpoints').where({ id: result.checkpointId }).update({ jws: `${h}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}.${sig}` });
    expect((await tb.request.post('/v1/audit/verify').set(AU).send({})).body).toMatchObject({ ok: false, firstBrokenSeq: result.throughSeq + 1 });
    await db()('audit_checkpoints').where({ id: result.checkpointId }).update({ jws: cpRow.jws });

    // deleting the anchoring checkpoint makes the pruned log unverifiable
    await db()('audit_checkpoints').where({ id: result.checkpointId }).delete();
    const broken = await tb.request.post('/v1/audit/verify').set(AU).send({});
    expect(broken.body).toMatchObject({ ok: false, firstBrokenSeq: result.throughSeq + 1 });
    expect(broken.body.reason).toMatch(/checkpoint/);

    await db()('audit_checkpoints').insert(cpRow);
    expect((await tb.request.post('/v1/audit/verify').set(AU).send({})).body).toMatchObject({ ok: true });
  });
});
