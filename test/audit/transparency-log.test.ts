import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { eventLeaf, openCheckpoint, rfcLeaf, verifyConsistencyRfc, verifyInclusionRfc } from '../support/independent-tlog-verifier.js';

describe('the audit log is a verifiable Merkle tree', () => {
  let tb: TestBroker;
  let auditor: string;
  let verifierKey: string;

  beforeAll(async () => {
    // the timer is off: the test decides when events are sequenced
    tb = await startTestBroker({ env: { KEYWARDEN_AUDIT_SEQUENCE_INTERVAL_MS: '0' } });
    auditor = await tb.apiKey('auditor');
    const writer = await tb.apiKey('writer');
    for (let i = 0; i < 13; i++) {
      expect((await tb.request.post('/v1/secrets').set({ Authorization: `Bearer ${writer}` }).send({ name: `tl-${i}`, value: `v${i}` })).status).toBe(201);
    }
    await tb.broker.services.auditSequencer.flush();
    const cp = await tb.request.get('/v1/audit/checkpoint').set({ Authorization: `Bearer ${auditor}` });
    expect(cp.status).toBe(200);
    verifierKey = cp.body.verifierKey;
  });
  afterAll(() => tb?.close());

  const A = () => ({ Authorization: `Bearer ${auditor}` });

  it('publishes a signed tlog-checkpoint that an independent verifier opens', async () => {
    const res = await tb.request.get('/v1/audit/checkpoint').set(A()).set('Accept', 'text/plain');
    expect(res.status).toBe(200);
    expect(res.type).toBe('text/plain');
    const cp = openCheckpoint(res.text, verifierKey);
    expect(cp.origin).toBe('127.0.0.1:8750/audit-log');
    expect(cp.size).toBeGreaterThanOrEqual(14);
    const json = await tb.request.get('/v1/audit/checkpoint').set(A());
    expect(json.body.treeSize).toBe(cp.size);
    expect(json.body.rootHash).toBe(cp.root.toString('hex'));
    expect(() => openCheckpoint(res.text.replace(/\n\d+\n/, `\n${cp.size + 1}\n`), verifierKey)).toThrow('bad signature');
  });

  it('proves every event is included, checked with RFC 9162 2.1.3.2', async () => {
    const head = (await tb.request.get('/v1/audit/checkpoint').set(A())).body;
    const root = openCheckpoint(head.checkpoint, verifierKey).root;
    for (let leaf = 0; leaf < head.treeSize; leaf++) {
      const res = await tb.request.get('/v1/audit/proof/inclusion').query({ leaf }).set(A());
      expect(res.status).toBe(200);
      const proof = res.body.hashes.map((h: string) => Buffer.from(h, 'hex'));
      // the leaf hash is recomputed from the event, not taken from the answer
      const leafHash = eventLeaf(res.body.event);
      expect(leafHash.toString('hex')).toBe(res.body.leafHash);
      expect(verifyInclusionRfc(leaf, head.treeSize, leafHash, proof, root)).toBe(true);
      // the same proof does not hold for another position or a changed event
      expect(verifyInclusionRfc((leaf + 1) % head.treeSize, head.treeSize, leafHash, proof, root) && head.treeSize > 1 && proof.length > 0).toBe(false);
      expect(verifyInclusionRfc(leaf, head.treeSize, eventLeaf({ ...res.body.event, outcome: 'deny' }), proof, root)).toBe(false);
    }
  });

  it('finds an event by its number, and proves it in an older tree size too', async () => {
    const events = (await tb.request.get('/v1/audit').query({ action: 'secret.create', order: 'asc' }).set(A())).body.items;
    const third = events[2];
    const res = await tb.request.get('/v1/audit/proof/inclusion').query({ seq: third.seq, treeSize: third.leafIndex + 1 }).set(A());
    expect(res.status).toBe(200);
    expect(res.body.leafIndex).toBe(third.leafIndex);
    expect(res.body.treeSize).toBe(third.leafIndex + 1);
    expect(verifyInclusionRfc(third.leafIndex, third.leafIndex + 1, eventLeaf(third), res.body.hashes.map((h: string) => Buffer.from(h, 'hex')), Buffer.from(res.body.rootHash, 'hex'))).toBe(true);
  });

  it('proves consistency between any two tree sizes, checked with RFC 9162 2.1.4.2', async () => {
    const size = (await tb.request.get('/v1/audit/checkpoint').set(A())).body.treeSize;
    for (let m = 1; m <= size; m++) {
      for (const n of [m, Math.min(size, m + 1), Math.min(size, m + 5), size]) {
        const res = await tb.request.get('/v1/audit/proof/consistency').query({ from: m, to: n }).set(A());
        expect(res.status).toBe(200);
        const proof = res.body.hashes.map((h: string) => Buffer.from(h, 'hex'));
        const [fromRoot, toRoot] = [Buffer.from(res.body.fromRoot, 'hex'), Buffer.from(res.body.toRoot, 'hex')];
        expect(verifyConsistencyRfc(m, n, proof, fromRoot, toRoot)).toBe(true);
        if (m < n) expect(verifyConsistencyRfc(m, n, proof, rfcLeaf('forged'), toRoot)).toBe(false);
      }
    }
    // the roots the proofs use are the signed ones
    const signed = openCheckpoint((await tb.request.get('/v1/audit/checkpoint').set(A())).body.checkpoint, verifierKey);
    const res = await tb.request.get('/v1/audit/proof/consistency').query({ from: 3 }).set(A());
    expect(Buffer.from(res.body.toRoot, 'hex').equals(signed.root)).toBe(true);
  });

  it('refuses bad proof requests with problem+json, and callers without the auditor role', async () => {
    const size = (await tb.request.get('/v1/audit/checkpoint').set(A())).body.treeSize;
    for (const query of [{}, { leaf: 0, seq: 1 }, { leaf: -1 }, { leaf: 'x' }, { leaf: size }, { leaf: 0, treeSize: size + 1 }]) {
      const res = await tb.request.get('/v1/audit/proof/inclusion').query(query).set(A());
      expect(res.status, JSON.stringify(query)).toBe(400);
      expect(res.type).toBe('application/problem+json');
    }
    expect((await tb.request.get('/v1/audit/proof/inclusion').query({ seq: 999999 }).set(A())).status).toBe(404);
    expect((await tb.request.get('/v1/audit/proof/consistency').query({ from: size, to: 1 }).set(A())).status).toBe(400);
    const writer = await tb.apiKey('writer');
    for (const path of ['/v1/audit/checkpoint', '/v1/audit/proof/consistency?from=1', '/v1/audit/proof/inclusion?leaf=0']) {
      expect((await tb.request.get(path).set({ Authorization: `Bearer ${writer}` })).status).toBe(403);
      expect((await tb.request.get(path)).status).toBe(401);
    }
  });

  it('answers 409 for an event that is queued and not in the tree yet', async () => {
    const writer = await tb.apiKey('writer');
    await tb.request.post('/v1/secrets').set({ Authorization: `Bearer ${writer}` }).send({ name: 'tl-queued', value: 'q' });
    const [queued] = (await tb.request.get('/v1/audit').query({ action: 'secret.create', resource: 'tl-queued' }).set(A())).body.items;
    expect(queued.leafIndex).toBeNull();
    const res = await tb.request.get('/v1/audit/proof/inclusion').query({ seq: queued.seq }).set(A());
    expect(res.status).toBe(409);
    expect(res.body.code).toBe('not_yet_sequenced');
    await tb.broker.services.auditSequencer.flush();
    expect((await tb.request.get('/v1/audit/proof/inclusion').query({ seq: queued.seq }).set(A())).status).toBe(200);
  });

  it('verifies the whole log, and that it extends a checkpoint kept earlier', async () => {
    const kept = (await tb.request.get('/v1/audit/checkpoint').set(A())).body.checkpoint;
    const writer = await tb.apiKey('writer');
    await tb.request.post('/v1/secrets').set({ Authorization: `Bearer ${writer}` }).send({ name: 'tl-later', value: 'l' });
    await tb.broker.services.auditSequencer.flush();
    const res = await tb.request.post('/v1/audit/verify').set(A()).send({ checkpoint: kept });
    expect(res.status).toBe(200);
    expect(res.body.ok).toBe(true);
    expect(res.body.consistentWith.treeSize).toBe(openCheckpoint(kept, verifierKey).size);
    expect(res.body.leavesChecked).toBe(res.body.treeSize);
    const forged = await tb.request.post('/v1/audit/verify').set(A()).send({ checkpoint: kept.replace(/— (\S+) (\S+)/, (_m: string, n: string, sig: string) => `— ${n} ${Buffer.from(Buffer.from(sig, 'base64').map((b, i) => (i === 10 ? b ^ 1 : b))).toString('base64')}`) });
    expect(forged.body.ok).toBe(false);
    expect(forged.body.reason).toMatch(/does not verify/);
  });
});
