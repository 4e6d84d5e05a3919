/**
 * Issue 10, item 3: a database that is down or stuck gives 503, fast.
 *
 * Faults made for real, on a private PostgreSQL cluster (support/pg-cluster.ts) and on a SQLite
 * file in a small tmpfs:
 * - PostgreSQL stopped (`pg_ctl stop -m immediate`): reads, writes, token requests and admin
 *   calls answer 503 problem+json with a database code and Retry-After, at once; /readyz 503.
 * - PostgreSQL frozen (SIGSTOP: connections stay open, nothing answers): the same, within the
 *   configured time limits (500 ms here), also under concurrent load; /readyz within ~1 s.
 * - A statement stuck behind a lock: statement_timeout ends it, 503 database_timeout, while
 *   /readyz stays 200 (the database itself answers).
 * - Read-only (default_transaction_read_only, as on a standby): writes 503 database_read_only.
 * - After restart or thaw the same broker instance (no restart) serves again within about a
 *   second, and every write acknowledged before the outage is there.
 * - SQLite on a full file system: writes answer 503 storage_full, reads that write nothing still
 *   work, /readyz reports the storage as full; after space is freed, writes work again.
 */
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Response } from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { openDatabase } from '../../src/db/connection.js';
import { openApiFile } from '../../src/http/ops-routes.js';
import { auth, expectProblem, markSensitive } from '../core/helpers.js';
import { startTestBroker, type TestBroker, type TestDatabase } from '../support/broker.js';
import { pgClusterAvailable, startPgCluster, type PgCluster } from './support/pg-cluster.js';

/** Small limits, so the test is quick; the bounds below are generous multiples of them. */
const ACQUIRE_TIMEOUT_MS = 500;
const STATEMENT_TIMEOUT_MS = 500;
const TIMEOUT_ENV = {
  KEYWARDEN_DB_ACQUIRE_TIMEOUT_MS: String(ACQUIRE_TIMEOUT_MS),
  KEYWARDEN_DB_STATEMENT_TIMEOUT_MS: String(STATEMENT_TIMEOUT_MS),
};
/** No request may wait much longer than one acquire plus one statement; this slow shared machine gets a wide margin. */
const REQUEST_BOUND_MS = 2500;
/** /readyz answers within 1 s; the same margin. */
const READYZ_BOUND_MS = 2500;
/** Recovery takes well under a second; the margin again. */
const RECOVERY_BOUND_MS = 5000;

const DATABASE_CODES = ['database_unavailable', 'database_timeout', 'database_busy', 'storage_full', 'database_read_only'];

/** Words of driver messages that must never reach a response. */
const DRIVER_WORDS = ['ECONNREFUSED', 'Connection terminated', 'timeout expired', 'Query read timeout', 'select ', 'insert ', 'SQLITE_', '127.0.0.1:', 'KnexTimeoutError', 'canceling statement'];

async function timed(run: () => PromiseLike<Response>): Promise<{ res: Response; ms: number }> {
  const started = performance.now();
  const res = await run();
  return { res, ms: performance.now() - started };
}

/** A 503 problem with a stable database code and Retry-After, no driver text, answered within the bound. */
function expectDatabaseProblem(what: string, { res, ms }: { res: Response; ms: number }, codes = DATABASE_CODES): void {
  const body = expectProblem(res, 503);
  expect(codes, `${what}: ${body.code}`).toContain(body.code);
  expect(res.headers['retry-after'], what).toMatch(/^[1-9][0-9]*$/);
  for (const word of DRIVER_WORDS) expect(res.text.includes(word), `${what} leaks "${word}": ${res.text}`).toBe(false);
  expect(ms, `${what} took ${Math.round(ms)} ms`).toBeLessThan(REQUEST_BOUND_MS);
}

async function expectReadyzDown(tb: TestBroker, databaseStates: string[]): Promise<void> {
  const { res, ms } = await timed(() => tb.request.get('/readyz'));
  expect(res.status).toBe(503);
  expect(res.body.status).toBe('not ready');
  expect(databaseStates).toContain(res.body.checks.database);
  expect(ms, `/readyz took ${Math.round(ms)} ms`).toBeLessThan(READYZ_BOUND_MS);
}

/** Polls `probe` until it answers 200; returns how long that took. Bounded. */
async function timeUntilOk(probe: () => PromiseLike<Response>): Promise<number> {
  const started = performance.now();
  let last: Response | undefined;
  while (performance.now() - started < RECOVERY_BOUND_MS * 2) {
    last = await probe();
    if (last.status === 200) return performance.now() - started;
    expect(last.status, last.text).toBe(503);
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`no recovery: last answer ${last?.status} ${last?.text}`);
}

// ------------------------------------------------------------------ PostgreSQL

const pgTools = pgClusterAvailable();

describe.skipIf(!pgTools.ok)('PostgreSQL stopped or frozen: 503 fast, recovery without restart', () => {
  let cluster: PgCluster;
  let tb: TestBroker;
  let writer: Record<string, string>;
  let admin: Record<string, string>;
  let app: { clientId: string; clientSecret: string; token: string };
  /** Versions of `outage.secret` whose 201 the broker sent, with their checksums. */
  const acknowledged = new Map<number, string>();
  let writeCount = 0;

  beforeAll(async () => {
    cluster = await startPgCluster();
    const url = cluster.url();
    const db: TestDatabase = { url, open: (options) => openDatabase(url, options), drop: async () => undefined };
    tb = await startTestBroker({ db, env: TIMEOUT_ENV });
    admin = auth(tb.adminKey);
    writer = auth(await tb.apiKey('writer'));
    expect((await tb.request.post('/v1/groups').set(admin).send({ name: 'app' })).status).toBe(201);
    app = await tb.client('app-client', ['app']);
    markSensitive(app.clientSecret, app.token, tb.adminKey);
    const created = await tb.request.post('/v1/secrets').set(writer).send({ name: 'outage.secret', value: 'outage-value-0', groups: ['app'] });
    expect(created.status).toBe(201);
    acknowledged.set(created.body.version, created.body.checksum);
  });

  afterAll(async () => {
    await cluster?.thaw().catch(() => undefined);
    await tb?.close().catch(() => undefined);
    await cluster?.destroy();
  });

  const writeVersion = () =>
    tb.request
      .post('/v1/secrets/outage.secret/versions')
      .set(writer)
      .send({ value: `outage-value-${++writeCount}-${crypto.randomBytes(4).toString('hex')}` });

  /** One of each kind of request the issue names: reads, writes, token requests, admin calls. */
  const requests: Array<[string, () => PromiseLike<Response>]> = [
    ['client read', () => tb.request.get('/v1/client/secrets/outage.secret').set(auth(app.token))],
    ['operator read', () => tb.request.get('/v1/secrets/outage.secret').set(writer)],
    ['write', writeVersion],
    ['token request', () => tb.request.post('/v1/auth/token').type('form').send({ grant_type: 'client_credentials', client_id: app.clientId, client_secret: app.clientSecret })],
    ['admin list', () => tb.request.get('/v1/clients').set(admin)],
    ['admin write', () => tb.request.post('/v1/groups').set(admin).send({ name: `g-${crypto.randomBytes(3).toString('hex')}` })],
  ];

  async function writeAcknowledged(n: number): Promise<void> {
    for (let i = 0; i < n; i++) {
      const res = await writeVersion();
      expect(res.status, res.text).toBe(201);
      acknowledged.set(res.body.version, res.body.checksum);
    }
  }

  async function expectAllAcknowledgedWritesPresent(): Promise<void> {
    const res = await tb.request.get('/v1/secrets/outage.secret/versions').set(writer);
    expect(res.status).toBe(200);
    const stored = new Map<number, string>(res.body.items.map((v: any) => [v.version, v.checksum]));
    for (const [version, checksum] of acknowledged) expect(stored.get(version), `version ${version}`).toBe(checksum);
  }

  async function expectServing(): Promise<void> {
    for (const [what, run] of requests) {
      const res = await run();
      expect([200, 201], `${what}: ${res.status} ${res.text}`).toContain(res.status);
      if (what === 'write') acknowledged.set(res.body.version, res.body.checksum);
    }
    const ready = await tb.request.get('/readyz');
    expect(ready.status, ready.text).toBe(200);
  }

  it('serves normally before the outage', async () => {
    await writeAcknowledged(3);
    await expectServing();
  });

  it('stopped: every kind of request answers 503 problem+json with Retry-After at once, /readyz 503', async () => {
    await writeAcknowledged(2);
    await cluster.stop();
    for (const [what, run] of requests) expectDatabaseProblem(what, await timed(run), ['database_unavailable']);
    await expectReadyzDown(tb, ['unavailable']);
  });

  it('restarted: the same broker serves again within about a second, with every acknowledged write', async () => {
    await cluster.start();
    const ms = await timeUntilOk(() => tb.request.get('/v1/secrets/outage.secret').set(writer));
    console.info(`recovered ${Math.round(ms)} ms after PostgreSQL accepted connections again`);
    expect(ms).toBeLessThan(RECOVERY_BOUND_MS);
    await expectServing();
    await expectAllAcknowledgedWritesPresent();
  });

  it('frozen: requests answer 503 within the time limits instead of hanging, also many at once', async () => {
    await writeAcknowledged(2);
    // a pooled connection is open and idle now, so the first requests meet a server that takes
    // the query and never answers, later ones a handshake that never completes
    await cluster.freeze();
    for (const [what, run] of requests) expectDatabaseProblem(what, await timed(run), ['database_timeout', 'database_unavailable']);
    // more requests than the pool has connections: none waits much past the limits
    const burst = await Promise.all(Array.from({ length: 24 }, (_, i) => timed(requests[i % requests.length][1])));
    burst.forEach((r, i) => expectDatabaseProblem(`burst ${i} (${requests[i % requests.length][0]})`, r, ['database_timeout', 'database_unavailable']));
  });

  it('frozen: /readyz answers 503 within about a second, also when asked many times at once', async () => {
    const started = performance.now();
    const answers = await Promise.all(Array.from({ length: 8 }, () => tb.request.get('/readyz')));
    const ms = performance.now() - started;
    for (const res of answers) {
      expect(res.status).toBe(503);
      expect(['timeout', 'unavailable']).toContain(res.body.checks.database);
    }
    expect(ms).toBeLessThan(READYZ_BOUND_MS);
    await expectReadyzDown(tb, ['timeout', 'unavailable']);
  });

  it('thawed: the same broker serves again within about a second, with every acknowledged write', async () => {
    await cluster.thaw();
    const ms = await timeUntilOk(() => tb.request.get('/v1/secrets/outage.secret').set(writer));
    console.info(`recovered ${Math.round(ms)} ms after the frozen PostgreSQL was resumed`);
    expect(ms).toBeLessThan(RECOVERY_BOUND_MS);
    await expectServing();
    await expectAllAcknowledgedWritesPresent();
  });

  it('a statement stuck behind a lock ends at statement_timeout with 503 database_timeout; /readyz stays 200', async () => {
    // another session holds the secrets table exclusively for 3 s (psql runs in the background)
    const holder = cluster.psql('BEGIN; LOCK TABLE secrets IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(3); COMMIT;');
    try {
      await new Promise((r) => setTimeout(r, 300));
      expectDatabaseProblem('operator read behind a lock', await timed(() => tb.request.get('/v1/secrets/outage.secret').set(writer)), ['database_timeout']);
      const ready = await timed(() => tb.request.get('/readyz'));
      expect(ready.res.status, ready.res.text).toBe(200);
      expect(ready.ms).toBeLessThan(READYZ_BOUND_MS);
    } finally {
      await holder;
    }
    const after = await tb.request.get('/v1/secrets/outage.secret').set(writer);
    expect(after.status).toBe(200);
  });

  it('read-only (as on a standby): writes answer 503 database_read_only, reads work', async () => {
    // reloading the configuration applies it to the broker's open sessions too
    await cluster.psql('ALTER SYSTEM SET default_transaction_read_only = on');
    await cluster.psql('SELECT pg_reload_conf()');
    try {
      await new Promise((r) => setTimeout(r, 200));
      expectDatabaseProblem('write on a read-only database', await timed(writeVersion), ['database_read_only']);
      expect((await tb.request.get('/v1/secrets/outage.secret').set(writer)).status).toBe(200);
    } finally {
      await cluster.psql('ALTER SYSTEM RESET default_transaction_read_only');
      await cluster.psql('SELECT pg_reload_conf()');
    }
    await new Promise((r) => setTimeout(r, 200));
    await writeAcknowledged(1);
    await expectAllAcknowledgedWritesPresent();
  });
});

// ------------------------------------------------------------------ SQLite on a full disk

/**
 * A tmpfs of its own, so filling it touches nothing else. Needs root (or CAP_SYS_ADMIN): without
 * them, or without mount(8), the test is skipped; under KEYWARDEN_REQUIRE_TOOLS=1 a mount that
 * should work (root, mount present) but fails is an error.
 */
function mountSmallTmpfs(sizeMiB: number): { dir?: string; reason?: string } {
  const mountBinary = ['/usr/bin/mount', '/bin/mount'].find((p) => fs.existsSync(p));
  const isRoot = process.getuid?.() === 0;
  if (!mountBinary || !isRoot) {
    return { reason: `${mountBinary ? 'not running as root' : 'mount(8) not found'}; skipping the SQLite disk-full test` };
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kw-full-'));
  try {
    execFileSync(mountBinary, ['-t', 'tmpfs', '-o', `size=${sizeMiB}m,mode=0700`, 'tmpfs', dir], { stdio: 'pipe' });
    return { dir };
  } catch (err) {
    fs.rmSync(dir, { recursive: true, force: true });
    const reason = `cannot mount a tmpfs (${(err as { stderr?: Buffer }).stderr?.toString().trim() || (err as Error).message}); skipping the SQLite disk-full test`;
    if (process.env.KEYWARDEN_REQUIRE_TOOLS === '1') throw new Error(reason);
    return { reason };
  }
}

function unmount(dir: string): void {
  try {
    execFileSync('umount', [dir], { stdio: 'pipe' });
  } catch {
    execFileSync('umount', ['-l', dir], { stdio: 'pipe' });
  }
  fs.rmSync(dir, { recursive: true, force: true });
}

/** Writes a filler file until the file system refuses more; returns its path. */
function fillFileSystem(dir: string): string {
  const filler = path.join(dir, 'filler');
  const fd = fs.openSync(filler, 'w');
  try {
    for (const size of [256 * 1024, 4096, 512]) {
      const chunk = Buffer.alloc(size, 0x5a);
      for (let i = 0; i < 100_000; i++) {
        try {
          fs.writeSync(fd, chunk);
        } catch (err: any) {
          if (err?.code !== 'ENOSPC') throw err;
          break;
        }
      }
    }
  } finally {
    fs.closeSync(fd);
  }
  return filler;
}

const tmpfs = mountSmallTmpfs(16);
if (tmpfs.reason) console.warn(tmpfs.reason);

describe.skipIf(!tmpfs.dir)('SQLite on a full file system: writes 503 storage_full, reads work, /readyz says so', () => {
  let tb: TestBroker;
  let writer: Record<string, string>;
  let filler: string | undefined;

  beforeAll(async () => {
    const url = `sqlite:${path.join(tmpfs.dir!, 'keywarden.db')}`;
    const db: TestDatabase = { url, open: (options) => openDatabase(url, options), drop: async () => undefined };
    tb = await startTestBroker({ db, env: TIMEOUT_ENV });
    writer = auth(await tb.apiKey('writer'));
    const created = await tb.request.post('/v1/secrets').set(writer).send({ name: 'full.secret', value: 'full-value-0' });
    expect(created.status).toBe(201);
    expect((await tb.request.get('/readyz')).status).toBe(200);
  });

  afterAll(async () => {
    await tb?.close().catch(() => undefined);
    if (tmpfs.dir) unmount(tmpfs.dir);
  });

  it('writes answer 503 storage_full (never 500) once the disk is full', async () => {
    filler = fillFileSystem(tmpfs.dir!);
    const statuses: Array<{ status: number; code?: string }> = [];
    // space left inside files SQLite already has (the WAL) lets a few writes through: write
    // until one meets the full disk, a bounded number of times
    for (let i = 0; i < 200; i++) {
      const started = performance.now();
      const res = await tb.request
        .post('/v1/secrets/full.secret/versions')
        .set(writer)
        .send({ value: `full-value-${i + 1}-${crypto.randomBytes(2048).toString('hex')}` });
      const ms = performance.now() - started;
      statuses.push({ status: res.status, code: res.body?.code });
      if (res.status === 201) continue;
      expectDatabaseProblem('write on a full disk', { res, ms }, ['storage_full']);
      break;
    }
    expect(statuses.some((s) => s.status === 503), JSON.stringify(statuses)).toBe(true);
    expect(statuses.every((s) => s.status === 201 || s.code === 'storage_full'), JSON.stringify(statuses)).toBe(true);
    // a write of another kind meets the same
    const group = await timed(() => tb.request.post('/v1/groups').set(writer).send({ name: `g-${crypto.randomBytes(3).toString('hex')}` }));
    expectDatabaseProblem('admin write on a full disk', group, ['storage_full']);
  });

  it('reads that write nothing still work', async () => {
    const res = await tb.request.get('/v1/secrets/full.secret').set(writer);
    expect(res.status, res.text).toBe(200);
    expect((await tb.request.get('/v1/secrets/full.secret/versions').set(writer)).status).toBe(200);
  });

  it('/readyz reports the storage as full', async () => {
    const res = await tb.request.get('/readyz');
    expect(res.status).toBe(503);
    expect(res.body.checks).toMatchObject({ database: 'ok', storage: 'full' });
  });

  it('once space is freed, writes and /readyz recover without a restart', async () => {
    fs.rmSync(filler!);
    const res = await tb.request.post('/v1/secrets/full.secret/versions').set(writer).send({ value: 'full-value-after' });
    expect(res.status, res.text).toBe(201);
    const ready = await tb.request.get('/readyz');
    expect(ready.status, ready.text).toBe(200);
  });
});

// ------------------------------------------------------------------ the contract

describe('openapi.yaml documents the 503', () => {
  it('a reusable ServiceUnavailable response: problem+json with Retry-After, naming the database codes', () => {
    const spec = YAML.parse(fs.readFileSync(openApiFile(), 'utf8'));
    const response = spec.components.responses.ServiceUnavailable;
    expect(response).toBeDefined();
    expect(response.headers['Retry-After']).toBeDefined();
    expect(response.content['application/problem+json'].schema.$ref).toBe('#/components/schemas/Problem');
    for (const code of DATABASE_CODES) expect(response.description).toContain(`\`${code}\``);
  });

  it('every operation that reaches the database documents a 503 with Retry-After', () => {
    const spec = YAML.parse(fs.readFileSync(openApiFile(), 'utf8'));
    const noDatabase = new Set([
      'GET /healthz',
      'GET /metrics',
      'GET /openapi.yaml',
      'GET /docs',
      'GET /.well-known/openid-configuration',
      // the Vault-compatible mount discovery reports configuration; destroy is always refused
      'GET /v1/sys/mounts',
      'GET /v1/sys/internal/ui/mounts/{path}',
      'POST /v1/secret/destroy/{path+}',
      // counted and logged, never stored
      'POST /v1/console/csp-report',
    ]);
    // readiness probes answer an outage in their own shape (Vault's health: 503 with sealed: true)
    const probes = new Set(['/readyz', '/v1/sys/health']);
    const missing: string[] = [];
    for (const [p, item] of Object.entries<any>(spec.paths)) {
      for (const [method, op] of Object.entries<any>(item)) {
        if (!op?.responses || noDatabase.has(`${method.toUpperCase()} ${p}`)) continue;
        let response = op.responses['503'];
        while (response?.$ref) response = response.$ref.split('/').slice(1).reduce((node: any, key: string) => node?.[key], spec);
        if (!response?.headers?.['Retry-After'] && !probes.has(p)) missing.push(`${method.toUpperCase()} ${p}`);
      }
    }
    expect(missing).toEqual([]);
  });
});
