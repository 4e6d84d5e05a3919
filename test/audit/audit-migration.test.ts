import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Knex } from 'knex';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chainHash, type ChainedEvent } from '../../src/audit/audit-chain.js';
import { verifyExportFile } from '../../src/audit/offline-verify.js';
import { migrationsDirectory } from '../../src/db/migrate.js';
import { createBroker } from '../../src/broker.js';
import { loadConfig } from '../../src/config.js';
import { freshDatabase, silentLogger, startTestBroker, type TestBroker, type TestDatabase } from '../support/broker.js';
import { baseEnv, REPO_ROOT, runCli } from '../cli/cli-support.js';
import { allEvents, auth } from './audit-helpers.js';
import { eventLeaf, openCheckpoint, verifyInclusionRfc } from '../support/independent-tlog-verifier.js';

/*
 * Issue #12: "Existing chained events become the first leaves of the tree, in their current order.
 * Verification of exports made before the change still works, or is explicitly versioned."
 * A database is migrated to 007 (the hash chain), filled the way the old code filled it, and
 * then opened by the current broker, which runs 008.
 */

/** The migrations up to and including `last`, named as src/db/migrate.ts names them, so 008 follows on from them. */
class MigrationsUpTo implements Knex.MigrationSource<string> {
  constructor(private readonly last: string) {}
  async getMigrations(): Promise<string[]> {
    return fs
      .readdirSync(migrationsDirectory())
      .filter((f) => /^\d+_[a-z0-9_]+\.js$/.test(f) && f.slice(0, 3) <= this.last)
      .sort();
  }
  getMigrationName(migration: string): string {
    return migration;
  }
  async getMigration(migration: string): Promise<Knex.Migration> {
    return import(pathToFileURL(path.join(migrationsDirectory(), migration)).href);
  }
}

const ACTIONS = [
  { action: 'group.create', resourceKind: 'group', resourceName: 'payments' },
  { action: 'secret.create', resourceKind: 'secret', resourceName: 'db-password' },
  { action: 'grant.add', resourceKind: 'secret', resourceName: 'db-password' },
  { action: 'secret.read', resourceKind: 'secret', resourceName: 'db-password' },
  { action: 'client.token', resourceKind: 'client', resourceName: 'ci-runner' },
];

/** A hash chain as the pre-008 code wrote it: seq firstSeq.., each event hashed onto the previous hash. */
function buildChain(firstSeq: number, count: number, prevHash: string): ChainedEvent[] {
  const out: ChainedEvent[] = [];
  let prev = prevHash;
  for (let i = 0; i < count; i++) {
    const seq = firstSeq + i;
    const kind = ACTIONS[i % ACTIONS.length];
    const body = {
      seq,
      ts: Date.parse('2030-06-01T10:00:00.000Z') + seq * 61_000,
      actorKind: i % 2 ? ('client' as const) : ('operator' as const),
      actorId: i % 2 ? '7' : 'xS6v6Y0MsyAo',
      actorName: i % 2 ? 'ci-runner' : 'writer-ops',
      ...kind,
      outcome: i === 3 ? ('deny' as const) : ('allow' as const),
      reason: i === 3 ? 'no grant' : null,
      requestId: crypto.randomUUID(),
      sourceIp: '10.0.0.7',
      userAgent: 'keywarden-cli/0.9',
      details: i === 1 ? { version: 1, groups: ['payments'] } : {},
      prevHash: prev,
    };
    const hash = chainHash(prev, body);
    out.push({ ...body, hash });
    prev = hash;
  }
  return out;
}

/** Writes the chain into the 007 schema the way the old AuditDal did, head row included. */
async function insertChain(knex: Knex, events: ChainedEvent[]): Promise<void> {
  await knex('audit_events').insert(
    events.map((e) => ({
      seq: e.seq,
      ts: e.ts,
      actor_kind: e.actorKind,
      actor_id: e.actorId,
      actor_name: e.actorName,
      action: e.action,
      resource_kind: e.resourceKind,
      resource_name: e.resourceName,
      outcome: e.outcome,
      reason: e.reason,
      request_id: e.requestId,
      source_ip: e.sourceIp,
      user_agent: e.userAgent,
      details: JSON.stringify(e.details),
      prev_hash: e.prevHash,
      hash: e.hash,
    })),
  );
  const last = events[events.length - 1];
  await knex('audit_head').where({ id: 1 }).update({ seq: last.seq, hash: last.hash });
}

const GENESIS = '0'.repeat(64);

describe.each([
  { name: 'a chain from the genesis', firstSeq: 1, count: 11, prev: GENESIS },
  // older events were pruned before the upgrade: the first kept event links to a removed one
  { name: 'a pruned chain (first seq 41)', firstSeq: 41, count: 6, prev: crypto.createHash('sha256').update('pruned event 40').digest('hex') },
])('migration 008 on $name', ({ firstSeq, count, prev }) => {
  let db: TestDatabase;
  let tb: TestBroker;
  let AU: Record<string, string>;
  const chain = buildChain(firstSeq, count, prev);
  const oldMax = firstSeq + count - 1;

  beforeAll(async () => {
    db = freshDatabase();
    const handle = await db.open();
    try {
      await handle.knex.migrate.latest({ migrationSource: new MigrationsUpTo('007') });
      expect(await handle.knex.schema.hasTable('audit_head')).toBe(true);
      expect(await handle.knex.schema.hasTable('audit_tree_heads')).toBe(false);
      await insertChain(handle.knex, chain);
    } finally {
      await handle.close();
    }
    tb = await startTestBroker({ db, env: { KEYWARDEN_AUDIT_SEQUENCE_INTERVAL_MS: '0' } });
    AU = auth(await tb.apiKey('auditor'));
    const W = auth(await tb.apiKey('writer'));
    expect((await tb.request.post('/v1/groups').set(W).send({ name: 'after-upgrade' })).status).toBe(201);
    await tb.broker.services.auditSequencer.flush();
  });
  afterAll(async () => {
    await tb?.close();
  });

  it('turns the chained events into leaves 0..k-1 in seq order, keeping their chain fields', async () => {
    const events = await allEvents(tb);
    const migrated = events.filter((e) => e.seq <= oldMax);
    expect(migrated.map((e) => e.seq)).toEqual(chain.map((e) => e.seq));
    expect(migrated.map((e) => e.leafIndex)).toEqual(chain.map((_, i) => i));
    for (const [i, e] of migrated.entries()) {
      const { leafIndex: _l, ...content } = e;
      expect(content).toEqual(chain[i]);
    }
  });

  it('numbers new events above the old maximum and gives them the following leaves', async () => {
    const events = await allEvents(tb);
    const later = events.filter((e) => e.seq > oldMax);
    // the bootstrap admin key, two API keys, the group: written by the new code after 008
    expect(later.length).toBeGreaterThanOrEqual(4);
    expect(events.length).toBe(count + later.length);
    expect(later.map((e) => e.leafIndex)).toEqual(later.map((_, i) => count + i));
    for (const e of later) {
      expect(e.prevHash).toBeUndefined();
      expect(e.hash).toBeUndefined();
    }
    expect(later.find((e) => e.action === 'group.create' && e.resourceName === 'after-upgrade')).toBeDefined();
  });

  it('verifies the whole log after the upgrade', async () => {
    const res = await tb.request.post('/v1/audit/verify').set(AU).send({});
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ ok: true, leavesWithoutEvent: 0 });
    expect(res.body.leavesChecked).toBe(res.body.treeSize);
    expect(res.body.treeSize).toBeGreaterThan(count);
  });

  it('proves a migrated event included under the signed head, checked independently', async () => {
    const head = (await tb.request.get('/v1/audit/checkpoint').set(AU)).body;
    const signed = openCheckpoint(head.checkpoint, head.verifierKey);
    for (const original of [chain[0], chain[count - 1]]) {
      const res = await tb.request.get('/v1/audit/proof/inclusion').query({ seq: original.seq }).set(AU);
      expect(res.status).toBe(200);
      expect(res.body.treeSize).toBe(signed.size);
      expect(res.body.rootHash).toBe(signed.root.toString('hex'));
      // the leaf is computed from the event as it was chained, prevHash and hash included
      const leaf = eventLeaf({ ...original });
      expect(leaf.toString('hex')).toBe(res.body.leafHash);
      const proof = res.body.hashes.map((h: string) => Buffer.from(h, 'hex'));
      expect(verifyInclusionRfc(original.seq - firstSeq, signed.size, leaf, proof, signed.root)).toBe(true);
      // the chain link is part of the leaf: a different prevHash is not included
      expect(verifyInclusionRfc(original.seq - firstSeq, signed.size, eventLeaf({ ...original, prevHash: GENESIS.replace(/0$/, '1') }), proof, signed.root)).toBe(false);
    }
  });

  it('exports the migrated log in format 2, which verifies offline', async () => {
    const res = await tb.request.get('/v1/audit/export').set(AU).buffer(true).parse((r, cb) => {
      let data = '';
      r.setEncoding('utf8');
      r.on('data', (c: string) => (data += c));
      r.on('end', () => cb(null, data));
    });
    expect(res.status).toBe(200);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kw-mig-'));
    try {
      const file = path.join(dir, 'export.ndjson');
      fs.writeFileSync(file, res.body as string);
      const verifierKey = (await tb.request.get('/v1/audit/checkpoint').set(AU)).body.verifierKey;
      const result = await verifyExportFile(file, { verifierKey });
      expect(result).toMatchObject({ ok: true, format: 2 });
      expect(result.checked).toBeGreaterThan(count);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

const FIXTURE = path.join(REPO_ROOT, 'test/fixtures/audit-export-v1');

/*
 * export.ndjson and jwks.json were produced by the code before the Merkle tree (commit 0aea29d):
 * a broker on SQLite, some writes, two checkpoints (POST /v1/audit/checkpoints), then
 * GET /v1/audit/export?checkpoints=true and /.well-known/jwks.json.
 */
describe('migration 008 on a chain edited before the upgrade', () => {
  it('does not vouch for it: the tree built on it verifies, the chain inside its leaves does not', async () => {
    const db = freshDatabase();
    const handle = await db.open();
    const chain = buildChain(1, 8, GENESIS);
    try {
      await handle.knex.migrate.latest({ migrationSource: new MigrationsUpTo('007') });
      await insertChain(handle.knex, chain);
      // an edit that leaves the stored hash alone: the old chain verifier would have caught it
      await handle.knex('audit_events').where({ seq: 5 }).update({ outcome: 'deny', reason: 'rewritten' });
    } finally {
      await handle.close();
    }
    // the broker itself, without the test helper's admin key (recording one is refused)
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kw-mig-'));
    const config = loadConfig({
      KEYWARDEN_DATA_DIR: dataDir,
      KEYWARDEN_DATABASE_URL: db.url,
      KEYWARDEN_ROOT_KEY: crypto.randomBytes(32).toString('base64'),
      KEYWARDEN_LOG_LEVEL: 'silent',
      KEYWARDEN_ISSUER: 'http://127.0.0.1:8750',
      KEYWARDEN_AUDIT_SEQUENCE_INTERVAL_MS: '0',
    });
    const brokerHandle = await db.open();
    const broker = await createBroker(config, { logger: silentLogger, db: brokerHandle });
    try {
      // the startup verification found it before anything was served
      expect(broker.services.auditChain.status).toBe('broken');
      expect(broker.services.auditChain.failure).toMatchObject({ firstBadLeaf: 4 });
      expect(broker.services.auditChain.failure?.reason).toMatch(/breaks the hash chain/);
      expect(await broker.services.auditVerifier.verify()).toMatchObject({ ok: false, firstBadLeaf: 4 });
      // and what must be recorded is refused
      await expect(broker.services.audit.record({ actor: { kind: 'system' }, action: 'test.write', outcome: 'allow' })).rejects.toMatchObject({ code: 'audit_chain_broken' });
    } finally {
      await broker.close();
      await brokerHandle.close();
      await db.drop();
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  });
});

describe('a format-1 export made before the upgrade', () => {
  const jwks = JSON.parse(fs.readFileSync(path.join(FIXTURE, 'jwks.json'), 'utf8'));
  const file = path.join(FIXTURE, 'export.ndjson');
  let tmp: string;
  beforeAll(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kw-v1-'));
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  const edited = (edit: (lines: string[]) => string[]): string => {
    const lines = fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.trim());
    const out = path.join(tmp, `edited-${crypto.randomBytes(4).toString('hex')}.ndjson`);
    fs.writeFileSync(out, edit(lines).join('\n') + '\n');
    return out;
  };
  const editEvent = (seq: number, change: (e: any) => any) =>
    edited((lines) => lines.map((l) => (JSON.parse(l).seq === seq && JSON.parse(l).type === undefined ? JSON.stringify(change(JSON.parse(l))) : l)));

  it('still verifies with the JWKS of that time, as format 1', async () => {
    const result = await verifyExportFile(file, { jwks });
    expect(result).toMatchObject({ ok: true, format: 1, checked: 13 });
    expect(result.legacy).toMatchObject({ ok: true, checkpointsVerified: 2 });
  });

  it('says which key it needs when given only a verifier key', async () => {
    const result = await verifyExportFile(file, { verifierKey: 'x+00000000+AQ' });
    expect(result).toMatchObject({ ok: false, format: 1 });
    expect(result.reason).toMatch(/--jwks/);
  });

  it('fails when an event, a checkpoint or the end of the file was changed', async () => {
    const cases = {
      'event content': editEvent(6, (e) => ({ ...e, resourceName: 'other-secret' })),
      'event re-hashed on its own': editEvent(12, (e) => {
        const { hash: _h, ...rest } = e;
        return { ...rest, outcome: 'deny', hash: chainHash(e.prevHash, { ...rest, outcome: 'deny' }) };
      }),
      'dropped event': edited((lines) => lines.filter((l) => JSON.parse(l).seq !== 5 || JSON.parse(l).type)),
      'reordered events': edited((lines) => [lines[1], lines[0], ...lines.slice(2)]),
      'checkpoint signature': edited((lines) =>
        lines.map((l) => {
          const o = JSON.parse(l);
          return o.type === 'checkpoint' ? JSON.stringify({ ...o, jws: o.jws.slice(0, -4) + (o.jws.endsWith('AAAA') ? 'BBBB' : 'AAAA') }) : l;
        }),
      ),
      // the second checkpoint covers seq 10: cutting from there on is detected
      'cut before a checkpoint': edited((lines) => lines.filter((l) => !(JSON.parse(l).seq >= 9 && JSON.parse(l).type === undefined))),
      'not JSON': edited((lines) => [...lines.slice(0, 3), '{"seq":', ...lines.slice(3)]),
    };
    for (const [name, f] of Object.entries(cases)) {
      const result = await verifyExportFile(f, { jwks });
      expect(result.ok, name).toBe(false);
      expect(result.format, name).toBe(1);
    }
    // another broker's key under the same kid: the checkpoints' signatures do not verify
    const otherKey = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' });
    const other = await verifyExportFile(file, { jwks: { keys: [{ ...otherKey, kid: jwks.keys[0].kid, alg: 'ES256', use: 'sig' }] } });
    expect(other).toMatchObject({ ok: false, format: 1 });
    expect(other.reason).toMatch(/signature does not verify/);
  });

  it('an empty file is not a valid export', async () => {
    const empty = path.join(tmp, 'empty.ndjson');
    fs.writeFileSync(empty, '');
    expect((await verifyExportFile(empty, { jwks })).ok).toBe(false);
  });

  it('the CLI verifies it with --jwks (exit 0) and rejects an edited copy (exit 1)', async () => {
    const jwksFile = path.join(FIXTURE, 'jwks.json');
    const ok = await runCli(['audit', 'verify-export', '--file', file, '--jwks', jwksFile], baseEnv());
    expect(ok.code, ok.stderr).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({ ok: true, format: 1 });
    const bad = await runCli(['audit', 'verify-export', '--file', editEvent(7, (e) => ({ ...e, actorName: 'someone-else' })), '--jwks', jwksFile], baseEnv());
    expect(bad.code).toBe(1);
    expect(JSON.parse(bad.stdout)).toMatchObject({ ok: false, format: 1 });
  }, 60_000);
});
