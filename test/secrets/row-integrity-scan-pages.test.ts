import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DbHandle } from '../../src/db/connection.js';
import { bearer, startTestBroker, type TestBroker } from '../support/broker.js';

/**
 * The row-integrity scan reads its tables a page at a time and gives the event loop a turn in
 * between (issue 27, target 4). Tampered rows anywhere, in the first, a middle or the last page,
 * and the checks of a secret against its versions (which page by id range), are found whatever
 * the page size. The edits are made through a connection of their own, as in test/reliability.
 */
describe('the row-integrity scan in pages', () => {
  let tb: TestBroker;
  let edit: DbHandle;
  const ids = new Map<string, number>();

  beforeAll(async () => {
    // no background passes: the test runs the scan itself
    tb = await startTestBroker({ env: { KEYWARDEN_AUDIT_VERIFY_INTERVAL: '0', KEYWARDEN_AUDIT_FULL_VERIFY_INTERVAL: '0' } });
    edit = await tb.db.open();
    const W = bearer(await tb.apiKey('writer'));
    for (const g of ['a', 'b']) expect((await tb.request.post('/v1/groups').set(W).send({ name: g })).status).toBe(201);
    for (let i = 0; i < 11; i++) {
      const name = `paged-${i}`;
      expect((await tb.request.post('/v1/secrets').set(W).send({ name, value: `value-${i}`, groups: ['a', 'b'] })).status).toBe(201);
      ids.set(name, Number((await edit.knex('secrets').where({ name }).first('id')).id));
    }
    // paged-8 gets a second version, then its row is put back to the first (with its valid MAC)
    const saved = await edit.knex('secrets').where({ name: 'paged-8' }).first();
    expect((await tb.request.post('/v1/secrets/paged-8/versions').set(W).send({ value: 'value-8-v2' })).status).toBe(201);
    await edit.knex('secrets').where({ id: saved.id }).update({ current_version: saved.current_version, latest_version: saved.latest_version, row_mac: saved.row_mac });
    // first page: a renamed secret; a middle page: an edited version checksum; the last page: the current version of paged-10 removed
    await edit.knex('secrets').where({ id: ids.get('paged-0') }).update({ name: 'renamed-0' });
    await edit.knex('secret_versions').where({ secret_id: ids.get('paged-5'), version: 1 }).update({ checksum: 'f'.repeat(64) });
    await edit.knex('secret_versions').where({ secret_id: ids.get('paged-10') }).delete();
  });
  afterAll(async () => {
    await edit?.close();
    await tb?.close();
  });

  it('finds the same violations with pages of 2 rows as with the default page, each of them', async () => {
    const scanner = tb.broker.services.rowIntegrityScanner;
    const small = await scanner.scan({ page: 2 });
    const rows = small.map((v) => `${v.table}|${v.row}|${v.reason}`).sort();
    expect(rows).toEqual((await scanner.scan()).map((v) => `${v.table}|${v.row}|${v.reason}`).sort());
    // each tampered row, and nothing else: the untouched rows of every page verify
    expect(rows).toEqual(
      [
        `secrets|secret ${ids.get('paged-0')} (renamed-0)|mismatch`,
        `secret_versions|version 1 of secret ${ids.get('paged-5')}|mismatch`,
        `secrets|secret ${ids.get('paged-8')} (paged-8): older than its newest version|mismatch`,
        `secrets|secret ${ids.get('paged-10')} (paged-10): its current version does not exist|mismatch`,
      ].sort(),
    );
  });

  it('gives up when its signal is aborted', async () => {
    const stop = new AbortController();
    stop.abort(new Error('stopping'));
    await expect(tb.broker.services.rowIntegrityScanner.scan({ page: 2, signal: stop.signal })).rejects.toThrow('stopping');
  });
});
