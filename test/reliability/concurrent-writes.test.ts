/**
 * Issue 10, items 1 and 2: concurrent version writes and client reads of ONE secret.
 *
 * - No deadlock between a version write and the client-read audit batch (PostgreSQL): every
 *   write answers 201, never 500 or 503, and every read 200.
 * - A write reports what it wrote: the versions reported by the 201s are exactly the stored
 *   versions (no duplicate, no gap), and each response's version, ETag and checksum are those
 *   of the content that very request sent.
 *
 * The workload runs against real HTTP servers (several in-flight requests per connection
 * pool), on the suite's database (SQLite by default, PostgreSQL with
 * KEYWARDEN_TEST_DATABASE_URL), and on two broker instances sharing one PostgreSQL database
 * (the suite's PostgreSQL, or else a private cluster from support/pg-cluster.ts).
 *
 * The test checks behaviour (statuses, versions, contents), not which lock is taken. Because a
 * deadlock PostgreSQL breaks is retried (src/db/transaction-retry.ts) and then answers 201 like
 * any write, the statuses cannot show one: on PostgreSQL each run also gets a database of its
 * own, and the server's own counter (pg_stat_database.deadlocks) must not move. A deliberate
 * deadlock first shows the counter is read correctly.
 */
import crypto from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase } from '../../src/db/connection.js';
import { auth, markSensitive } from '../core/helpers.js';
import { TEST_DATABASE_URL, startTestBroker, type TestBroker, type TestDatabase } from '../support/broker.js';
import { pgClusterAvailable, startPgCluster, type PgCluster } from './support/pg-cluster.js';

const WRITERS = 8;
const WRITES_EACH = 15;
const READERS = 16;
const READS_EACH = 40;
const SECRET = 'contended.secret';
const INITIAL = 'initial-value-0';

interface Instance {
  tb: TestBroker;
  base: string;
  server: http.Server;
  closed?: boolean;
}

async function listen(tb: TestBroker): Promise<Instance> {
  const server = http.createServer(tb.broker.app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { tb, server, base: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

async function closeInstance(i: Instance | undefined): Promise<void> {
  if (!i) return;
  i.server.closeAllConnections();
  await new Promise<void>((resolve) => i.server.close(() => resolve()));
}

interface Sent {
  writer: number;
  value: string;
  status: number;
  body: any;
  etag: string | null;
}

interface Read {
  status: number;
  body: any;
}

async function call(base: string, method: string, path: string, headers: Record<string, string>, body?: unknown) {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: { ...headers, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    body: body !== undefined ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  let parsed: any;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    parsed = text;
  }
  return { status: res.status, body: parsed, etag: res.headers.get('etag'), contentType: res.headers.get('content-type') };
}

/**
 * Sets up the secret on `instances[0]`, then runs the writers and readers round-robin over
 * the instances, all at once, and checks everything the issue asks for.
 */
async function contend(instances: Instance[]): Promise<void> {
  const [first] = instances;
  const writerKey = auth(await first.tb.apiKey('writer'));
  const group = `contenders-${crypto.randomBytes(3).toString('hex')}`;
  expect((await call(first.base, 'POST', '/v1/groups', writerKey, { name: group })).status).toBe(201);
  const created = await call(first.base, 'POST', '/v1/secrets', writerKey, { name: SECRET, value: INITIAL, groups: [group] });
  expect(created.status, JSON.stringify(created.body)).toBe(201);
  expect(created.body.version).toBe(1);
  expect(created.etag).toBe('"1"');
  const client = await first.tb.client(`reader-${crypto.randomBytes(3).toString('hex')}`, [group]);
  markSensitive(client.clientSecret);
  const clientAuth = auth(client.token);

  const run = crypto.randomBytes(4).toString('hex');
  const sent: Sent[] = [];
  const reads: Read[][] = Array.from({ length: READERS }, () => []);
  const writer = async (w: number) => {
    const base = instances[w % instances.length].base;
    for (let j = 0; j < WRITES_EACH; j++) {
      const value = `w${w}-n${j}-${run}`;
      const res = await call(base, 'POST', `/v1/secrets/${SECRET}/versions`, writerKey, { value });
      sent.push({ writer: w, value, status: res.status, body: res.body, etag: res.etag });
    }
  };
  const reader = async (r: number) => {
    const base = instances[r % instances.length].base;
    for (let j = 0; j < READS_EACH; j++) {
      const res = await call(base, 'GET', `/v1/client/secrets/${SECRET}`, clientAuth);
      reads[r].push({ status: res.status, body: res.body });
    }
  };
  await Promise.all([...Array.from({ length: WRITERS }, (_, w) => writer(w)), ...Array.from({ length: READERS }, (_, r) => reader(r))]);

  // Soft assertions: a failure of one kind (say, a write that deadlocked) must not hide another
  // (a 201 that reports someone else's version).

  // every write answered 201: no deadlock surfaced as a 500 or a 503
  expect(sent).toHaveLength(WRITERS * WRITES_EACH);
  const failedWrites = sent.filter((s) => s.status !== 201);
  expect.soft(failedWrites.map((s) => `${s.status} ${JSON.stringify(s.body)}`), 'writes that did not answer 201').toEqual([]);
  const written = sent.filter((s) => s.status === 201);

  // the reported versions are exactly the stored ones: no duplicate, no gap
  const reported = written.map((s) => s.body.version as number);
  expect.soft(reported.length - new Set(reported).size, 'writes that reported a version another write reported too').toBe(0);
  const versions = await call(first.base, 'GET', `/v1/secrets/${SECRET}/versions`, writerKey);
  expect(versions.status).toBe(200);
  const stored = new Map<number, { checksum: string; size: number }>(versions.body.items.map((v: any) => [v.version, v]));
  const storedVersions = [...stored.keys()].sort((a, b) => a - b);
  expect.soft(storedVersions, 'stored versions are 1..n with no gap').toEqual(Array.from({ length: storedVersions.length }, (_, i) => i + 1));
  expect.soft([1, ...reported].sort((a, b) => a - b), 'reported versions (with the initial 1) are the stored ones').toEqual(storedVersions);

  // each response describes the version its own request wrote
  const valueOfVersion = new Map<number, string>([[1, INITIAL]]);
  const mismatches: string[] = [];
  for (const s of written) {
    const v = s.body.version as number;
    valueOfVersion.set(v, s.value);
    if (s.etag !== `"${v}"`) mismatches.push(`writer ${s.writer}: ETag ${s.etag} for version ${v}`);
    if (s.body.latestVersion !== v) mismatches.push(`writer ${s.writer}: latestVersion ${s.body.latestVersion} for version ${v}`);
    if (s.body.checksum !== stored.get(v)?.checksum || s.body.size !== Buffer.byteLength(s.value)) {
      mismatches.push(`writer ${s.writer}: checksum/size of version ${v} are not those of the stored version`);
    }
  }
  const contents = await Promise.all(
    reported.map((v) => call(first.base, 'GET', `/v1/secrets/${SECRET}/content?version=${v}`, writerKey)),
  );
  contents.forEach((c, i) => {
    expect(c.status).toBe(200);
    const content = Buffer.from(c.body.content, 'base64').toString('utf8');
    if (content !== written[i].value) mismatches.push(`writer ${written[i].writer} sent ${written[i].value} and was told version ${reported[i]}, which holds ${content}`);
  });
  expect.soft(mismatches, 'write responses that describe another write').toEqual([]);
  // a writer's own versions increase: each request commits before its next one starts
  for (let w = 0; w < WRITERS; w++) {
    const own = written.filter((s) => s.writer === w).map((s) => s.body.version as number);
    expect.soft(own, `writer ${w}'s versions`).toEqual([...own].sort((a, b) => a - b));
  }

  // every read is 200 with a value that was written, under the version it was written as
  const badReads: string[] = [];
  reads.forEach((list, r) => {
    let last = 0;
    for (const read of list) {
      if (read.status !== 200) {
        badReads.push(`reader ${r}: ${read.status} ${JSON.stringify(read.body)}`);
        continue;
      }
      const content = Buffer.from(read.body.content, 'base64').toString('utf8');
      if (valueOfVersion.get(read.body.version) !== content) badReads.push(`reader ${r}: version ${read.body.version} delivered ${content}`);
      if (read.body.version < last) badReads.push(`reader ${r}: version went back from ${last} to ${read.body.version}`);
      last = read.body.version;
    }
  });
  expect.soft(badReads, 'reads that failed or delivered a value not written as that version').toEqual([]);
  expect(reads.flat()).toHaveLength(READERS * READS_EACH);
}

/** Stops the listeners and brokers (each once), so that their PostgreSQL backends exit. */
async function closeInstances(list: Array<Instance | undefined>): Promise<void> {
  for (const i of list) {
    if (!i || i.closed) continue;
    i.closed = true;
    await closeInstance(i);
    await i.tb.close();
  }
}

describe('concurrent version writes and client reads of one secret, one instance (suite database)', () => {
  let one: Instance | undefined;
  let counted: DeadlockCountedDatabase | undefined;
  let deadlocksBefore = 0;

  beforeAll(async () => {
    if (TEST_DATABASE_URL) {
      counted = await deadlockCountedDatabase(TEST_DATABASE_URL);
      deadlocksBefore = await counted.deadlocks();
    }
    one = await listen(await startTestBroker(counted ? { db: counted } : {}));
  }, 60_000);
  afterAll(async () => {
    try {
      await closeInstances([one]);
    } finally {
      await counted?.dropDatabase();
    }
  });

  it(`${WRITERS} writers x ${WRITES_EACH} and ${READERS} readers x ${READS_EACH}: all 201/200, each write reports its own version${TEST_DATABASE_URL ? ', no deadlock' : ''}`, async () => {
    await contend([one!]);
    if (counted) {
      await closeInstances([one]);
      expect(await counted.deadlocks(), 'deadlocks PostgreSQL detected (and the broker retried)').toBe(deadlocksBefore);
    }
  }, 60_000);
});

interface DeadlockCountedDatabase extends TestDatabase {
  /**
   * pg_stat_database.deadlocks of this database, read once no connection to it is left: a
   * backend reports its pending counts at the latest when it exits.
   */
  deadlocks(): Promise<number>;
  dropDatabase(): Promise<void>;
}

/**
 * A schema in a database of its own on the given server: PostgreSQL counts deadlocks per
 * database, so other tests on the same server cannot add to this count. Before it is handed
 * out, one deliberate deadlock checks that the count is read correctly (it is then 1).
 */
async function deadlockCountedDatabase(serverUrl: string): Promise<DeadlockCountedDatabase> {
  const name = `kw_deadlock_${crypto.randomBytes(5).toString('hex')}`;
  const server = await openDatabase(serverUrl);
  try {
    await server.knex.raw(`CREATE DATABASE "${name}"`);
  } finally {
    await server.close();
  }
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  const counted: DeadlockCountedDatabase = {
    ...pgDatabase(url.toString()),
    async deadlocks() {
      const handle = await openDatabase(serverUrl);
      try {
        const until = Date.now() + 15_000;
        for (;;) {
          const open = await handle.knex.raw('SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = ?', [name]);
          if (open.rows[0].n === 0) break;
          if (Date.now() > until) throw new Error(`connections to ${name} stayed open`);
          await new Promise((r) => setTimeout(r, 100));
        }
        const row = await handle.knex.raw('SELECT deadlocks FROM pg_stat_database WHERE datname = ?', [name]);
        if (row.rows.length !== 1) throw new Error(`pg_stat_database has no row for ${name}`);
        return Number(row.rows[0].deadlocks);
      } finally {
        await handle.close();
      }
    },
    async dropDatabase() {
      const handle = await openDatabase(serverUrl);
      try {
        await handle.knex.raw(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      } finally {
        await handle.close();
      }
    },
  };
  try {
    await provokeDeadlock(url.toString());
    expect(await counted.deadlocks(), 'a deliberate deadlock shows in pg_stat_database').toBe(1);
  } catch (err) {
    await counted.dropDatabase();
    throw err;
  }
  return counted;
}

/** Two transactions lock two rows in opposite orders; PostgreSQL aborts one of them with 40P01. */
async function provokeDeadlock(url: string): Promise<void> {
  const handle = await openDatabase(url);
  try {
    const db = handle.knex;
    await db.raw('CREATE TABLE deadlock_probe (id int PRIMARY KEY)');
    await db.raw('INSERT INTO deadlock_probe VALUES (1), (2)');
    const [t1, t2] = [await db.transaction(), await db.transaction()];
    await t1.raw('UPDATE deadlock_probe SET id = id WHERE id = 1');
    await t2.raw('UPDATE deadlock_probe SET id = id WHERE id = 2');
    const results = await Promise.allSettled([t1.raw('UPDATE deadlock_probe SET id = id WHERE id = 2'), t2.raw('UPDATE deadlock_probe SET id = id WHERE id = 1')]);
    await Promise.allSettled([t1.rollback(), t2.rollback()]);
    const codes = results.map((r) => (r.status === 'rejected' ? (r.reason as { code?: string }).code : 'ok'));
    expect(codes.sort()).toEqual(['40P01', 'ok']);
  } finally {
    await handle.close();
  }
}

/** A fresh schema on the suite's PostgreSQL, or on a private cluster when the suite runs on SQLite. */
function pgDatabase(url: string): TestDatabase {
  const schema = `kw_test_${crypto.randomBytes(6).toString('hex')}`;
  return {
    url,
    schema,
    open: () => openDatabase(url, { schema }),
    async drop() {
      const handle = await openDatabase(url);
      try {
        await handle.knex.raw(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      } finally {
        await handle.close();
      }
    },
  };
}

const privateClusterNeeded = !TEST_DATABASE_URL;
const canRunOnPostgres = !privateClusterNeeded || pgClusterAvailable().ok;

describe.skipIf(!canRunOnPostgres)('the same with two broker instances on one PostgreSQL database', () => {
  let cluster: PgCluster | undefined;
  let counted: DeadlockCountedDatabase | undefined;
  let deadlocksBefore = 0;
  let a: Instance | undefined;
  let b: Instance | undefined;

  beforeAll(async () => {
    let url = TEST_DATABASE_URL;
    if (!url) {
      cluster = await startPgCluster();
      url = cluster.url();
    }
    counted = await deadlockCountedDatabase(url);
    deadlocksBefore = await counted.deadlocks();
    const rootKey = crypto.randomBytes(32).toString('base64');
    a = await listen(await startTestBroker({ db: counted, rootKey }));
    b = await listen(await startTestBroker({ db: counted, rootKey, keepDatabase: true }));
  }, 60_000);
  afterAll(async () => {
    try {
      await closeInstances([b, a]);
      await counted?.dropDatabase();
    } finally {
      await cluster?.destroy();
    }
  });

  it('writers and readers spread over both instances: all 201/200, each write reports its own version, no deadlock', async () => {
    await contend([a!, b!]);
    await closeInstances([b, a]);
    expect(await counted!.deadlocks(), 'deadlocks PostgreSQL detected (and the broker retried)').toBe(deadlocksBefore);
  }, 60_000);
});
