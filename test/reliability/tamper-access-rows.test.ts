import crypto from 'node:crypto';
import type { Knex } from 'knex';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IntegrityFailureError } from '../../src/core/errors.js';
import type { DbHandle } from '../../src/db/connection.js';
import { capture } from '../support/audit-events.js';
import { bearer, freshDatabase, startTestBroker, type TestBroker } from '../support/broker.js';
import { expectProblem, markSensitive } from '../core/helpers.js';
import { cachesCaughtUp } from '../support/cache-bound.js';

/**
 * Issue 28, tamper evidence, findings 7 and 8. Each edit is made the way someone with write
 * access to the database (but not the root key) would: through a connection of its own (the
 * SQLite file opened a second time, or the PostgreSQL schema), while the broker runs.
 */

const fastVerify = { KEYWARDEN_AUDIT_VERIFY_INTERVAL: '1' };
const b64 = (s: string) => Buffer.from(s).toString('base64');

/** Polls until `probe` holds, at most `ms`. */
async function eventually(ms: number, probe: () => Promise<boolean>): Promise<boolean> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (await probe()) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return probe();
}

/** The rows the background scan reported as integrity violations (its audit events). */
async function flagged(tb: TestBroker, auditor: Record<string, string>): Promise<string[]> {
  const res = await tb.request.get('/v1/audit').query({ action: 'integrity.violation', limit: 1000 }).set(auditor);
  expect(res.status).toBe(200);
  return (res.body.items as Array<{ reason: string }>).map((e) => e.reason);
}

async function idOf(knex: Knex, table: 'clients' | 'groups' | 'secrets', name: string): Promise<number> {
  const row = await knex(table).where({ name }).first('id');
  expect(row, `${table} ${name}`).toBeDefined();
  return Number(row.id);
}

describe('finding 7: a replayed secret row (with its old, valid MAC) is refused on every read path', () => {
  let tb: TestBroker;
  let edit: DbHandle;
  let W: Record<string, string>;
  let AU: Record<string, string>;
  let reader: string;

  beforeAll(async () => {
    tb = await startTestBroker({ env: fastVerify });
    edit = await tb.db.open();
    W = bearer(await tb.apiKey('writer'));
    AU = bearer(await tb.apiKey('auditor'));
    expect((await tb.request.post('/v1/groups').set(W).send({ name: 'readers' })).status).toBe(201);
    reader = (await tb.client('reader', ['readers'])).token;
    markSensitive('replay-old-credential-v1', 'replay-current-credential-v2');
  });
  afterAll(async () => {
    await edit?.close();
    await tb?.close();
  });

  it('operator content read, client read, Vault KV read and metadata, and the broker’s registry credentials', async () => {
    const oldValue = JSON.stringify({ username: 'svc', password: 'replay-old-credential-v1' });
    const newValue = JSON.stringify({ username: 'svc', password: 'replay-current-credential-v2' });
    expect((await tb.request.post('/v1/secrets').set(W).send({ name: 'app.db', value: oldValue, groups: ['readers'] })).status).toBe(201);
    const saved = await edit.knex('secrets').where({ name: 'app.db' }).first();
    expect((await tb.request.post('/v1/secrets/app.db/versions').set(W).send({ value: newValue })).status).toBe(201);
    expect((await tb.request.put('/v1/registry-credentials/registry.example.com').set(bearer(tb.adminKey)).send({ secret: 'app.db' })).status).toBeLessThan(300);

    // before the edit every path serves version 2
    const before = await tb.request.get('/v1/secrets/app.db/content').set(W);
    expect(before.status).toBe(200);
    expect(before.body).toMatchObject({ version: 2, content: b64(newValue) });
    expect((await tb.request.get('/v1/client/secrets/app.db').set(bearer(reader))).status).toBe(200);
    expect((await tb.request.get('/v1/secret/data/app/db').set({ 'X-Vault-Token': reader })).status).toBe(200);
    expect(await tb.broker.services.registryCredentials.credentialsFor('registry.example.com', 'gate')).toEqual({ username: 'svc', password: 'replay-current-credential-v2' });

    // the replay: the whole row as it was at version 1, with the MAC the broker wrote then
    await edit.knex('secrets').where({ id: saved.id }).update({ current_version: saved.current_version, latest_version: saved.latest_version, row_mac: saved.row_mac });
    await cachesCaughtUp(tb);

    const { result: operatorRead, events } = await capture(tb, () => tb.request.get('/v1/secrets/app.db/content').set(W));
    const problem = expectProblem(operatorRead, 503, 'integrity_failure');
    expect(problem.detail).toMatch(/older than its newest version/);
    expect(operatorRead.text).not.toContain(b64(oldValue));
    // the refusal is on the record as for a client's read, and no successful read is
    expect(events.filter((e) => e.action === 'secret.read').map((e) => [e.outcome, e.details?.via, e.details?.integrity])).toEqual([['error', 'operator', 'row_mac']]);
    // naming the old version explicitly does not get around it
    expectProblem(await tb.request.get('/v1/secrets/app.db/content').query({ version: 1 }).set(W), 503, 'integrity_failure');

    expectProblem(await tb.request.get('/v1/client/secrets/app.db').set(bearer(reader)), 503, 'integrity_failure');
    for (const path of ['/v1/secret/data/app/db', '/v1/secret/data/app/db?version=1', '/v1/secret/metadata/app/db']) {
      const res = await tb.request.get(path).set({ 'X-Vault-Token': reader });
      expect(res.status, `${path}: ${res.text}`).toBe(503);
      expect(res.text).not.toContain('replay-old-credential-v1');
      expect(res.text).not.toContain(b64(oldValue));
    }
    await expect(tb.broker.services.registryCredentials.credentialsFor('registry.example.com', 'gate')).rejects.toBeInstanceOf(IntegrityFailureError);
    const refused = await tb.request.get('/v1/audit').query({ action: 'secret.read', resource: 'app.db', outcome: 'error', limit: 100 }).set(AU);
    const vias = (refused.body.items as Array<{ details: { via: string } }>).map((e) => e.details.via);
    expect(new Set(vias)).toEqual(new Set(['operator', 'client', 'vault', 'broker']));

    // and the background scan reports the row
    expect(await eventually(5000, async () => (await flagged(tb, AU)).some((r) => r.includes('(app.db): older than its newest version')))).toBe(true);

    // the operator's repair: a rollback (or a new version) goes past the newest stored version and reseals the row
    const repaired = await tb.request.post('/v1/secrets/app.db/rollback').set(W).send({ version: 2 });
    expect(repaired.status, repaired.text).toBe(200);
    expect(repaired.body).toMatchObject({ version: 2, latestVersion: 2 });
    expect((await tb.request.get('/v1/secrets/app.db/content').set(W)).body).toMatchObject({ version: 2, content: b64(newValue) });
    const next = await tb.request.post('/v1/secrets/app.db/versions').set(W).send({ value: newValue });
    expect(next.status, next.text).toBe(201);
    expect(next.body.version).toBe(3);
    expect((await tb.request.get('/v1/client/secrets/app.db').set(bearer(reader))).body.version).toBe(3);
    expect((await tb.broker.services.rowIntegrityScanner.scan()).filter((v) => v.row.includes('app.db'))).toEqual([]);
  });

  it('a new version written over a replayed row repairs it too (it does not collide with the newest stored version)', async () => {
    expect((await tb.request.post('/v1/secrets').set(W).send({ name: 'replayed.again', value: 'replay-old-credential-v1', groups: ['readers'] })).status).toBe(201);
    const saved = await edit.knex('secrets').where({ name: 'replayed.again' }).first();
    expect((await tb.request.post('/v1/secrets/replayed.again/versions').set(W).send({ value: 'replay-current-credential-v2' })).status).toBe(201);
    await edit.knex('secrets').where({ id: saved.id }).update({ current_version: saved.current_version, latest_version: saved.latest_version, row_mac: saved.row_mac });
    await cachesCaughtUp(tb);
    expectProblem(await tb.request.get('/v1/secrets/replayed.again/content').set(W), 503, 'integrity_failure');
    const next = await tb.request.post('/v1/secrets/replayed.again/versions').set(W).send({ value: 'replay-current-credential-v2' });
    expect(next.status, next.text).toBe(201);
    expect(next.body).toMatchObject({ version: 3, latestVersion: 3 });
    expect((await tb.request.get('/v1/secrets/replayed.again/content').set(W)).status).toBe(200);
  });
});

describe('finding 8: memberships and delegations are bound by MACs', () => {
  let tb: TestBroker;
  let edit: DbHandle;
  let admin: Record<string, string>;
  let W: Record<string, string>;
  let AU: Record<string, string>;
  let reader: string;
  let plugin: string;

  beforeAll(async () => {
    tb = await startTestBroker({ env: fastVerify });
    edit = await tb.db.open();
    admin = bearer(tb.adminKey);
    W = bearer(await tb.apiKey('writer'));
    AU = bearer(await tb.apiKey('auditor'));
    for (const g of ['readers', 'payments']) expect((await tb.request.post('/v1/groups').set(W).send({ name: g })).status).toBe(201);
    expect((await tb.request.post('/v1/groups').set(W).send({ name: 'finance', allowedAudiences: ['https://finance.example'] })).status).toBe(201);
    markSensitive('finance-only-value', 'payments-value', 'readers-value');
    for (const [name, value, group] of [
      ['finance.key', 'finance-only-value', 'finance'],
      ['payments.key', 'payments-value', 'payments'],
      ['readers.key', 'readers-value', 'readers'],
    ]) {
      expect((await tb.request.post('/v1/secrets').set(W).send({ name, value, groups: [group] })).status).toBe(201);
    }
    reader = (await tb.client('reader', ['readers'])).token;
    await tb.client('payments', ['payments']);
    await tb.client('finance', ['finance']);
    const created = await tb.request.post('/v1/clients').set(admin).send({ name: 'plugin', actsFor: ['payments'] });
    expect(created.status).toBe(201);
    const t = await tb.request.post('/v1/auth/token').type('form').send({ grant_type: 'client_credentials', client_id: created.body.clientId, client_secret: created.body.clientSecret });
    expect(t.status).toBe(200);
    plugin = t.body.access_token;
  });
  afterAll(async () => {
    await edit?.close();
    await tb?.close();
  });

  const delegatedRead = (client: string, secret: string) => tb.request.post('/v1/client/delegated/secrets/read').set(bearer(plugin)).send({ client, secret });

  it('a membership row inserted by hand lets the client read nothing of that group, and the scan reports it', async () => {
    const readerId = await idOf(edit.knex, 'clients', 'reader');
    const financeId = await idOf(edit.knex, 'groups', 'finance');
    expectProblem(await tb.request.get('/v1/client/secrets/finance.key').set(bearer(reader)), 404, 'not_found');

    await edit.knex('memberships').insert({ client_id: readerId, group_id: financeId, created_at: Date.now() });
    await cachesCaughtUp(tb);
    const { result, events } = await capture(tb, () => tb.request.get('/v1/client/secrets/finance.key').set(bearer(reader)));
    const problem = expectProblem(result, 503, 'integrity_failure');
    expect(problem.detail).toMatch(/group membership/);
    expect(result.text).not.toContain(b64('finance-only-value'));
    expect(events.map((e) => [e.action, e.outcome, e.details?.integrity])).toEqual([['secret.read', 'error', 'row_mac']]);
    // the listings leave it out; what the reader is really granted is still served
    const listed = await tb.request.get('/v1/client/secrets').set(bearer(reader));
    expect(listed.status).toBe(200);
    expect(JSON.stringify(listed.body)).not.toContain('finance.key');
    expect(JSON.stringify(listed.body)).toContain('readers.key');
    expect((await tb.request.get('/v1/client/secrets/readers.key').set(bearer(reader))).status).toBe(200);
    // nor does it lend the group's JWT audiences
    expectProblem(await tb.request.post('/v1/client/credentials/jwt').set(bearer(reader)).send({ audience: 'https://finance.example' }), 403, 'audience_not_allowed');

    // a MAC copied from another membership row does not fit this one
    const donor = await edit.knex('memberships').whereNotNull('row_mac').first();
    await edit.knex('memberships').where({ client_id: readerId, group_id: financeId }).update({ row_mac: donor.row_mac });
    await cachesCaughtUp(tb);
    expectProblem(await tb.request.get('/v1/client/secrets/finance.key').set(bearer(reader)), 503, 'integrity_failure');
    expect(await eventually(5000, async () => (await flagged(tb, AU)).some((r) => r.includes(`membership client ${readerId} → group ${financeId}`)))).toBe(true);

    // an operator's own membership change replaces the forged row: the read works, the scan is clean of it
    expect((await tb.request.put('/v1/clients/reader/groups').set(W).send({ add: ['finance'] })).status).toBe(200);
    expect((await tb.request.get('/v1/client/secrets/finance.key').set(bearer(reader))).status).toBe(200);
    expect((await tb.request.post('/v1/client/credentials/jwt').set(bearer(reader)).send({ audience: 'https://finance.example' })).status).toBe(201);
    const scan = await tb.broker.services.rowIntegrityScanner.scan();
    expect(scan.filter((v) => v.table === 'memberships')).toEqual([]);
    expect((await tb.request.put('/v1/clients/reader/groups').set(W).send({ remove: ['finance'] })).status).toBe(200);
  });

  it('a delegation added to acts_for by hand is not honoured, and the scan reports it', async () => {
    const pluginId = await idOf(edit.knex, 'clients', 'plugin');
    const ok = await delegatedRead('payments', 'payments.key');
    expect(ok.status, ok.text).toBe(200);
    expectProblem(await delegatedRead('finance', 'finance.key'), 403, 'not_delegated');

    await edit.knex('clients').where({ id: pluginId }).update({ acts_for: JSON.stringify(['payments', 'finance']) });
    await cachesCaughtUp(tb);
    const { result, events } = await capture(tb, () => delegatedRead('finance', 'finance.key'));
    const problem = expectProblem(result, 503, 'integrity_failure');
    expect(problem.detail).toMatch(/delegation/);
    expect(result.text).not.toContain(b64('finance-only-value'));
    expect(events.map((e) => [e.action, e.outcome, e.details?.integrity])).toEqual([['secret.read', 'error', 'row_mac']]);
    // the whole delegation is untrusted now, the part an admin set included; so is listing
    expectProblem(await delegatedRead('payments', 'payments.key'), 503, 'integrity_failure');
    expectProblem(await tb.request.post('/v1/client/delegated/secrets/list').set(bearer(plugin)).send({ client: 'finance', includeContent: true }), 503, 'integrity_failure');
    expect(await eventually(5000, async () => (await flagged(tb, AU)).some((r) => r.includes(`delegation of client ${pluginId} (plugin)`)))).toBe(true);

    // release_gate switched on by hand is refused too, on the record
    await edit.knex('clients').where({ id: pluginId }).update({ acts_for: JSON.stringify(['payments']), release_gate: true });
    await cachesCaughtUp(tb);
    const gate = await capture(tb, () => tb.request.post('/v1/client/releases').set(bearer(plugin)).send({ image: 'r.example.com/x:1' }));
    expectProblem(gate.result, 503, 'integrity_failure');
    expect(gate.events.map((e) => [e.action, e.outcome])).toEqual([['authz.deny', 'error']]);

    // an admin setting the delegation again seals what the admin set
    expect((await tb.request.patch('/v1/clients/plugin').set(admin).send({ actsFor: ['payments'], releaseGate: false })).status).toBe(200);
    expect((await delegatedRead('payments', 'payments.key')).status).toBe(200);
    expectProblem(await delegatedRead('finance', 'finance.key'), 403, 'not_delegated');
    expect((await tb.broker.services.rowIntegrityScanner.scan()).filter((v) => v.table === 'clients')).toEqual([]);
  });

  it('an admin setting only actsFor on a tampered row does not seal the release_gate set by hand', async () => {
    const pluginId = await idOf(edit.knex, 'clients', 'plugin');
    await edit.knex('clients').where({ id: pluginId }).update({ release_gate: true });
    await cachesCaughtUp(tb);
    const res = await tb.request.patch('/v1/clients/plugin').set(admin).send({ actsFor: ['payments'] });
    expect(res.status).toBe(200);
    expect(res.body.releaseGate).toBe(false);
    expectProblem(await tb.request.post('/v1/client/releases').set(bearer(plugin)).send({ image: 'r.example.com/x:1' }), 403, 'release_gate_not_allowed');
    expect((await delegatedRead('payments', 'payments.key')).status).toBe(200);
  });
});

describe('finding 8 across a restart: the forged rows stay refused and reported', () => {
  it('a membership and a delegation added by hand while the broker was down are not sealed by the next start', async () => {
    const tdb = freshDatabase();
    const rootKey = crypto.randomBytes(32).toString('base64');
    const first = await startTestBroker({ db: tdb, rootKey, keepDatabase: true });
    let second: TestBroker | undefined;
    try {
      const admin = bearer(first.adminKey);
      for (const g of ['mine', 'theirs']) expect((await first.request.post('/v1/groups').set(admin).send({ name: g })).status).toBe(201);
      markSensitive('theirs-restart-value');
      expect((await first.request.post('/v1/secrets').set(admin).send({ name: 'theirs.key', value: 'theirs-restart-value', groups: ['theirs'] })).status).toBe(201);
      expect((await first.request.post('/v1/secrets').set(admin).send({ name: 'mine.key', value: 'mine-restart-value', groups: ['mine'] })).status).toBe(201);
      const mine = await first.client('me', ['mine']);
      await first.client('them', ['theirs']);
      expect((await first.request.post('/v1/clients').set(admin).send({ name: 'relay', actsFor: ['me'] })).status).toBe(201);

      // one forged row with the broker running, the other while it is down
      const edit = await tdb.open();
      try {
        const meId = await idOf(edit.knex, 'clients', 'me');
        await edit.knex('memberships').insert({ client_id: meId, group_id: await idOf(edit.knex, 'groups', 'theirs'), created_at: Date.now() });
        await first.close();
        await edit.knex('clients').where({ name: 'relay' }).update({ acts_for: JSON.stringify(['me', 'them']), release_gate: true });
      } finally {
        await edit.close();
      }

      second = await startTestBroker({ db: tdb, rootKey, keepDatabase: true });
      const token = (await second.request.post('/v1/auth/token').type('form').send({ grant_type: 'client_credentials', client_id: mine.clientId, client_secret: mine.clientSecret })).body.access_token;
      expectProblem(await second.request.get('/v1/client/secrets/theirs.key').set(bearer(token)), 503, 'integrity_failure');
      expect((await second.request.get('/v1/client/secrets/mine.key').set(bearer(token))).status).toBe(200);
      const violations = await second.broker.services.rowIntegrityScanner.scan();
      expect(violations.map((v) => v.table).sort()).toEqual(['clients', 'memberships']);
      expect(violations.find((v) => v.table === 'clients')?.row).toMatch(/\(relay\)/);
      expect(await second.broker.services.rowIntegrityScanner.backfillOnce(Date.now)).toBe(0);
      expect(await second.broker.services.db('audit_events').where({ action: 'integrity.backfill' }).first()).toBeUndefined();
    } finally {
      await second?.close();
      await tdb.drop();
    }
  });

  it('memberships and delegations from before migration 011 are sealed once at startup; a MAC removed after that is tampering', async () => {
    const tdb = freshDatabase();
    const rootKey = crypto.randomBytes(32).toString('base64');
    const first = await startTestBroker({ db: tdb, rootKey, keepDatabase: true });
    let second: TestBroker | undefined;
    try {
      const admin = bearer(first.adminKey);
      expect((await first.request.post('/v1/groups').set(admin).send({ name: 'g' })).status).toBe(201);
      expect((await first.request.post('/v1/secrets').set(admin).send({ name: 'old', value: 'sealed-at-start', groups: ['g'] })).status).toBe(201);
      const c = await first.client('c', ['g']);
      expect((await first.request.post('/v1/clients').set(admin).send({ name: 'relay', actsFor: ['c'] })).status).toBe(201);
      await first.close();
      // the database as migration 011 leaves one that existed before it
      const handle = await tdb.open();
      try {
        await handle.knex('memberships').update({ row_mac: null });
        await handle.knex('clients').update({ delegation_mac: null });
        await handle.knex('row_integrity_state').where({ id: 2 }).update({ backfilled_at: null, backfilled_rows: null });
      } finally {
        await handle.close();
      }
      second = await startTestBroker({ db: tdb, rootKey, keepDatabase: true });
      const token = (await second.request.post('/v1/auth/token').type('form').send({ grant_type: 'client_credentials', client_id: c.clientId, client_secret: c.clientSecret })).body.access_token;
      expect((await second.request.get('/v1/client/secrets/old').set(bearer(token))).status).toBe(200);
      const backfill = await second.broker.services.db('audit_events').where({ action: 'integrity.backfill' }).first();
      expect(backfill).toBeDefined();
      expect(await second.broker.services.rowIntegrityScanner.scan()).toEqual([]);
      // the backfill ran: a MAC removed now is not sealed again but refused
      await second.broker.services.db('memberships').update({ row_mac: null });
      await cachesCaughtUp(second!);
      expectProblem(await second.request.get('/v1/client/secrets/old').set(bearer(token)), 503, 'integrity_failure');
      expect(await second.broker.services.rowIntegrityScanner.backfillOnce(Date.now)).toBe(0);
    } finally {
      await second?.close();
      await tdb.drop();
    }
  });
});
