import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { openDatabase, type DbHandle } from '../../src/db/connection.js';
import { Database } from '../../src/db/database.js';
import { AUTOCHECKPOINT_FALLBACK_PAGES } from '../../src/db/sqlite-checkpointer.js';

/**
 * On SQLite the write-ahead log is checkpointed by a worker thread (src/db/sqlite-checkpointer.ts),
 * not inside a commit on the event loop (issue 27, target 4); the broker's own connections keep a
 * far larger automatic checkpoint as a fallback. A SQLite file whatever database the rest of the
 * suite runs on.
 */
describe('the SQLite WAL checkpointer', () => {
  let dir: string | undefined;
  let handle: DbHandle | undefined;
  let db: Database | undefined;
  afterEach(async () => {
    db?.close();
    await handle?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
    db = handle = dir = undefined;
  });

  it('copies what the broker committed into the database file, from its own thread', async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kw-checkpoint-'));
    handle = await openDatabase(`sqlite://${path.join(dir, 'test.db')}`);
    db = new Database(handle);
    // the connections on the event loop checkpoint only as a fallback, far beyond SQLite's 1,000 pages
    expect(db.fastPathPragma('wal_autocheckpoint')).toBe(AUTOCHECKPOINT_FALLBACK_PAGES);
    expect(Number((await handle.knex.raw('PRAGMA wal_autocheckpoint'))[0].wal_autocheckpoint)).toBe(AUTOCHECKPOINT_FALLBACK_PAGES);
    await handle.knex.schema.createTable('filler', (t) => {
      t.increments('id');
      t.text('body');
    });
    for (let i = 0; i < 20; i++) await handle.knex('filler').insert(Array.from({ length: 50 }, () => ({ body: 'x'.repeat(1000) })));
    // a checkpoint after the writes copied every frame of the log (polled: the worker runs on its own timer)
    let copied = false;
    for (const until = Date.now() + 10_000; !copied && Date.now() < until; ) {
      const last = db.lastCheckpoint;
      copied = last !== undefined && last.log >= 250 && last.checkpointed === last.log;
      if (!copied) await new Promise((r) => setTimeout(r, 20));
    }
    expect(db.lastCheckpoint).toMatchObject({ busy: 0 });
    expect(copied).toBe(true);
    // the database file itself holds the rows now (about 1 MB), not only the log
    expect(fs.statSync(path.join(dir, 'test.db')).size).toBeGreaterThan(1_000_000);
  });
});
