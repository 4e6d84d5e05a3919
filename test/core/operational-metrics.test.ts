/**
 * The operational figures on /metrics (issue 15): deliveries and denials, token issuances by
 * grant type, rate-limit refusals, gate decisions and cache hits, audit append latency and the
 * audit queue (the database's view, across instances), root key provider calls, cache hits and
 * errors, the database pool and database failures. Each is driven for real through an
 * in-process broker and checked by its exact increment; nothing identifying (secret, client,
 * image names, values, tokens) may appear in the output. The example alert rules in
 * packaging/prometheus/ name only metrics the broker serves.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { CachingKeyProvider } from '../../src/crypto/caching-key-provider.js';
import { KeyProviderError, type KeyProvider, type WrappedKey } from '../../src/crypto/key-provider.js';
import { LocalKeyProvider } from '../../src/crypto/local-key-provider.js';
import { Database } from '../../src/db/database.js';
import { createMetrics } from '../../src/http/metrics.js';
import { dialectUnderTest, freshDatabase, startTestBroker, type TestBroker } from '../support/broker.js';
import { auth, b64, markSensitive } from './helpers.js';

const REPO_ROOT = path.resolve(import.meta.dirname, '../..');
const DIGEST = `sha256:${'d'.repeat(64)}`;

/** A local root key whose unwraps can be made to fail, as an unreachable Vault would. */
class FlakyKeyProvider implements KeyProvider {
  failUnwrap = false;
  constructor(private readonly inner: LocalKeyProvider) {}
  get kind() {
    return this.inner.kind;
  }
  wrap(dataKey: Buffer): Promise<WrappedKey> {
    return this.inner.wrap(dataKey);
  }
  unwrap(wrapped: Buffer, keyVersion: string): Promise<Buffer> {
    if (this.failUnwrap) return Promise.reject(new KeyProviderError('key provider unreachable (test)'));
    return this.inner.unwrap(wrapped, keyVersion);
  }
  currentVersion() {
    return this.inner.currentVersion();
  }
  rotate() {
    return this.inner.rotate();
  }
  check() {
    return this.inner.check();
  }
}

type Samples = Map<string, number>;

/** Every sample of an exposition as `name{a="x",b="y"}` (labels sorted) → value. */
function parseSamples(text: string): Samples {
  const out: Samples = new Map();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`unparsable metrics line: ${line}`);
    const labels = m[2] ? [...m[2].matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)].map(([, k, v]) => `${k}="${v}"`).sort() : [];
    out.set(`${m[1]}{${labels.join(',')}}`, Number(m[3]));
  }
  return out;
}

function key(name: string, labels: Record<string, string> = {}): string {
  return `${name}{${Object.entries(labels)
    .map(([k, v]) => `${k}="${v}"`)
    .sort()
    .join(',')}}`;
}

/** The value of one series; a missing series fails the test (every series here exists from the start). */
function value(samples: Samples, name: string, labels: Record<string, string> = {}): number {
  const v = samples.get(key(name, labels));
  if (v === undefined) throw new Error(`no series ${key(name, labels)} in /metrics`);
  return v;
}

async function scrape(tb: TestBroker): Promise<{ text: string; samples: Samples }> {
  const res = await tb.request.get('/metrics');
  expect(res.status).toBe(200);
  return { text: res.text, samples: parseSamples(res.text) };
}

/** Increments of the named series between two scrapes. */
function delta(before: Samples, after: Samples, name: string, labels: Record<string, string> = {}): number {
  return value(after, name, labels) - value(before, name, labels);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('operational metrics on /metrics', () => {
  let tb: TestBroker;
  let flaky: FlakyKeyProvider;
  let client: { clientId: string; clientSecret: string; token: string };
  let admin: Record<string, string>;
  const names = { a: 'ops-metrics.alpha-secret', b: 'ops-metrics.beta-secret', c: 'ops-metrics.gamma-secret', missing: 'ops-metrics.absent-secret' };
  const values = { a: 'alpha-value-4b1d9e', b: 'beta-value-77c2aa', c: 'gamma-value-e0f311' };
  const leaks: string[] = [];
  const rootKey = crypto.randomBytes(32).toString('base64');

  beforeAll(async () => {
    flaky = new FlakyKeyProvider(LocalKeyProvider.fromEnv(rootKey));
    tb = await startTestBroker({
      rootKey,
      // the data key cache (as in front of Vault) over a provider that can fail
      keyProvider: new CachingKeyProvider(flaky),
      env: { KEYWARDEN_AUTH_MAX_FAILURES_PER_CLIENT: '2', KEYWARDEN_AUDIT_SEQUENCE_INTERVAL_MS: '0' },
    });
    admin = auth(tb.adminKey);
    expect((await tb.request.post('/v1/groups').set(admin).send({ name: 'ops-metrics-group' })).status).toBe(201);
    for (const k of ['a', 'b', 'c'] as const) {
      const res = await tb.request.post('/v1/secrets').set(admin).send({ name: names[k], value: values[k], groups: ['ops-metrics-group'] });
      expect(res.status, res.text).toBe(201);
    }
    client = await tb.client('ops-metrics-client', ['ops-metrics-group']);
    markSensitive(...Object.values(values), client.clientSecret, client.token);
    leaks.push(...Object.values(names), ...Object.values(values), ...Object.values(values).map((v) => b64(v)), client.clientId, client.clientSecret, client.token, tb.adminKey, 'ops-metrics-client', 'ops-metrics-group');
  });
  afterAll(async () => {
    await tb?.close();
  });

  it('counts deliveries, denials and failures by route and reason, and the root key calls behind the data key cache', async () => {
    const c = auth(client.token);
    const before = (await scrape(tb)).samples;
    expect((await tb.request.get(`/v1/client/secrets/${names.a}`).set(c)).status).toBe(200); // cache miss
    expect((await tb.request.get(`/v1/client/secrets/${names.a}`).set(c)).status).toBe(200); // cache hit
    expect((await tb.request.post('/v1/client/secrets/batch').set(c).send({ names: [names.a, names.b] })).status).toBe(200); // hit, miss
    expect((await tb.request.get(`/v1/client/secrets/${names.missing}`).set(c)).status).toBe(404);
    expect((await tb.request.post('/v1/client/secrets/batch').set(c).send({ names: [names.a, names.missing] })).status).toBe(404);
    // a client that is no delegate asks for another client's secret
    const notDelegated = await tb.request.post('/v1/client/delegated/secrets/read').set(c).send({ client: 'ops-metrics-other', secret: names.a });
    expect(notDelegated.status, notDelegated.text).toBe(403);
    flaky.failUnwrap = true;
    try {
      expect((await tb.request.get(`/v1/client/secrets/${names.c}`).set(c)).status).toBe(503); // miss, provider fails
    } finally {
      flaky.failUnwrap = false;
    }
    const after = (await scrape(tb)).samples;
    const d = (route: string, outcome: string, reason: string) => delta(before, after, 'keywarden_secret_deliveries_total', { route, outcome, reason });
    expect(d('client', 'allow', 'granted')).toBe(2);
    expect(d('batch', 'allow', 'granted')).toBe(2);
    expect(d('client', 'deny', 'not_granted')).toBe(1);
    // only the refused name of the batch: the other was not handed out either, but not refused
    expect(d('batch', 'deny', 'not_granted')).toBe(1);
    expect(d('delegated', 'deny', 'not_delegated')).toBe(1);
    expect(d('client', 'error', 'key_provider')).toBe(1);
    expect(d('batch', 'error', 'key_provider')).toBe(0);
    expect(d('vault', 'allow', 'granted')).toBe(0);

    expect(delta(before, after, 'keywarden_root_key_cache_lookups_total', { result: 'hit' })).toBe(2);
    expect(delta(before, after, 'keywarden_root_key_cache_lookups_total', { result: 'miss' })).toBe(3);
    expect(delta(before, after, 'keywarden_root_key_operation_duration_seconds_count', { provider: 'local', op: 'unwrap' })).toBe(3);
    expect(delta(before, after, 'keywarden_root_key_errors_total', { provider: 'local', op: 'unwrap' })).toBe(1);
    expect(delta(before, after, 'keywarden_root_key_errors_total', { provider: 'local', op: 'wrap' })).toBe(0);
    expect(delta(before, after, 'keywarden_root_key_operation_duration_seconds_count', { provider: 'local', op: 'wrap' })).toBe(0);

    // one group commit per read that got as far as the audit log (the failed unwrap did not)
    expect(delta(before, after, 'keywarden_audit_append_duration_seconds_count', { path: 'read_batch' })).toBe(6);
    expect(delta(before, after, 'keywarden_audit_append_duration_seconds_sum', { path: 'read_batch' })).toBeGreaterThan(0);
    expect(delta(before, after, 'keywarden_audit_append_duration_seconds_count', { path: 'transaction' })).toBe(0);
  });

  it('counts reads through the Vault KV v2 mount on the vault route', async () => {
    const vault = { 'X-Vault-Token': client.token };
    const kvPath = (name: string) => name.replaceAll('.', '/');
    const before = (await scrape(tb)).samples;
    const read = await tb.request.get(`/v1/secret/data/${kvPath(names.b)}`).set(vault);
    expect(read.status, read.text).toBe(200);
    expect(read.body.data.data.value).toBe(b64(values.b));
    expect((await tb.request.get(`/v1/secret/data/${kvPath(names.missing)}`).set(vault)).status).toBe(404);
    const after = (await scrape(tb)).samples;
    const d = (outcome: string, reason: string) => delta(before, after, 'keywarden_secret_deliveries_total', { route: 'vault', outcome, reason });
    expect(d('allow', 'granted')).toBe(1);
    expect(d('deny', 'not_granted')).toBe(1);
    expect(delta(before, after, 'keywarden_secret_deliveries_total', { route: 'client', outcome: 'allow', reason: 'granted' })).toBe(0);
  });

  it('measures the wrap of a new version and the audit insert inside its transaction', async () => {
    const before = (await scrape(tb)).samples;
    markSensitive('alpha-value-2-5d8e0c');
    expect((await tb.request.post(`/v1/secrets/${names.a}/versions`).set(admin).send({ value: 'alpha-value-2-5d8e0c' })).status).toBe(201);
    const after = (await scrape(tb)).samples;
    expect(delta(before, after, 'keywarden_root_key_operation_duration_seconds_count', { provider: 'local', op: 'wrap' })).toBe(1);
    expect(delta(before, after, 'keywarden_audit_append_duration_seconds_count', { path: 'transaction' })).toBe(1);
  });

  it('counts token requests by grant type and outcome, and rate-limit refusals by scope', async () => {
    const token = (form: Record<string, string>) => tb.request.post('/v1/auth/token').type('form').send(form);
    const before = (await scrape(tb)).samples;
    expect((await token({ grant_type: 'client_credentials', client_id: client.clientId, client_secret: client.clientSecret })).status).toBe(200);
    expect((await token({ grant_type: 'client_credentials', client_id: client.clientId, client_secret: 'not-the-secret' })).status).toBe(401);
    // a second grant type: a bootstrap token exchanged for an access token
    const boot = await tb.request.post('/v1/clients/ops-metrics-client/bootstrap-tokens').set(admin).send({});
    expect(boot.status, boot.text).toBe(201);
    markSensitive(boot.body.token);
    leaks.push(boot.body.token);
    const exchanged = await token({ grant_type: 'urn:keywarden:bootstrap', bootstrap_token: boot.body.token });
    expect(exchanged.status, exchanged.text).toBe(200);
    leaks.push(exchanged.body.access_token);
    // a grant type the broker does not offer: the caller's string never becomes a label
    expect((await token({ grant_type: 'password-ops-metrics-probe', username: 'u', password: 'p' })).status).toBe(400);
    // KEYWARDEN_AUTH_MAX_FAILURES_PER_CLIENT=2: two failures, then 429
    const guess = { grant_type: 'client_credentials', client_id: 'kwc_opsmetricsguess', client_secret: 'guess-guess-guess' };
    expect((await token(guess)).status).toBe(401);
    expect((await token(guess)).status).toBe(401);
    expect((await token(guess)).status).toBe(429);
    const after = await scrape(tb);
    const d = (grant_type: string, outcome: string) => delta(before, after.samples, 'keywarden_token_issuances_total', { grant_type, outcome });
    expect(d('client_credentials', 'allow')).toBe(1);
    expect(d('client_credentials', 'deny')).toBe(4);
    expect(d('bootstrap', 'allow')).toBe(1);
    expect(d('bootstrap', 'deny')).toBe(0);
    expect(d('unsupported', 'deny')).toBe(1);
    expect(d('token_exchange', 'allow')).toBe(0);
    expect(delta(before, after.samples, 'keywarden_rate_limit_refusals_total', { scope: 'client' })).toBe(1);
    expect(delta(before, after.samples, 'keywarden_rate_limit_refusals_total', { scope: 'address' })).toBe(0);
    expect(after.text).not.toContain('password-ops-metrics-probe');
    expect(after.text).not.toContain('opsmetricsguess');
    // the record path of the audit log: at least the issue and the three authentication failures
    expect(delta(before, after.samples, 'keywarden_audit_append_duration_seconds_count', { path: 'record' })).toBeGreaterThanOrEqual(4);
  });

  it('counts gate decisions by result and cache lookups by hit or miss', async () => {
    const signer = auth(await tb.apiKey('signer'));
    // no checks: decided from the digest alone, and cached; no registry is contacted
    const allowPolicy = await tb.request.post('/v1/policies').set(admin).send({ name: 'ops-metrics-open', images: ['registry.ops-metrics.test/team/*'], mode: 'enforce' });
    expect(allowPolicy.status, allowPolicy.text).toBe(201);
    // rules on a registry no policy names literally: refused before any traffic, in warn mode
    const warnPolicy = await tb.request.post('/v1/policies').set(admin).send({ name: 'ops-metrics-warn', images: ['*.ops-metrics-warn.test/app'], mode: 'warn', rules: { nonRootUser: true } });
    expect(warnPolicy.status, warnPolicy.text).toBe(201);
    const decide = async (image: string) => {
      const res = await tb.request.post('/v1/releases').set(signer).send({ image });
      expect(res.status, res.text).toBe(200);
      return res.body as { decision: string; cached: boolean };
    };
    const before = (await scrape(tb)).samples;
    expect(await decide(`registry.ops-metrics.test/team/app@${DIGEST}`)).toMatchObject({ decision: 'allow', cached: false });
    expect(await decide(`registry.ops-metrics.test/team/app@${DIGEST}`)).toMatchObject({ decision: 'allow', cached: true });
    expect(await decide(`r.ops-metrics-warn.test/app@${DIGEST}`)).toMatchObject({ decision: 'warn' });
    expect(await decide(`unmatched.ops-metrics.test/app@${DIGEST}`)).toMatchObject({ decision: 'deny' });
    const after = await scrape(tb);
    expect(delta(before, after.samples, 'keywarden_gate_decisions_total', { result: 'allow' })).toBe(2);
    expect(delta(before, after.samples, 'keywarden_gate_decisions_total', { result: 'warn' })).toBe(1);
    expect(delta(before, after.samples, 'keywarden_gate_decisions_total', { result: 'deny' })).toBe(1);
    expect(delta(before, after.samples, 'keywarden_gate_cache_lookups_total', { result: 'hit' })).toBe(1);
    expect(delta(before, after.samples, 'keywarden_gate_cache_lookups_total', { result: 'miss' })).toBe(1);
    for (const s of ['ops-metrics.test', 'ops-metrics-warn', 'ops-metrics-open', DIGEST.slice(7, 30)]) expect(after.text).not.toContain(s);
  });

  it('reports the pool and the database failure kinds, every kind present from the start', async () => {
    const { samples } = await scrape(tb);
    for (const kind of ['unavailable', 'timeout', 'storage_full', 'read_only', 'busy']) expect(value(samples, 'keywarden_db_errors_total', { kind })).toBeGreaterThanOrEqual(0);
    for (const state of ['used', 'free', 'pending']) expect(value(samples, 'keywarden_db_pool_connections', { state })).toBeGreaterThanOrEqual(0);
    expect(value(samples, 'keywarden_db_pool_max_connections')).toBe(dialectUnderTest === 'sqlite' ? 1 : 10);
  });

  it('shows the audit queue as the database holds it, events of other instances included', async () => {
    // a second instance on the same database appends; this instance's gauge must see it
    const other = await startTestBroker({ db: tb.db, rootKey, keepDatabase: true, env: { KEYWARDEN_AUDIT_SEQUENCE_INTERVAL_MS: '0' } });
    try {
      await tb.broker.services.auditSequencer.flush();
      for (const n of [1, 2, 3]) expect((await other.request.post('/v1/groups').set(auth(other.adminKey)).send({ name: `ops-metrics-queue-${n}` })).status).toBe(201);
      const queued = async () => Number(((await tb.broker.services.db('audit_events').whereNull('leaf_index').count('* as n').first()) as { n: number | string }).n);
      expect(await queued()).toBe(3);
      // a scrape reuses the figure for up to a second
      await sleep(1100);
      expect(value((await scrape(tb)).samples, 'keywarden_audit_queue_depth')).toBe(3);
      await tb.broker.services.auditSequencer.flush();
      await sleep(1100);
      expect(value((await scrape(tb)).samples, 'keywarden_audit_queue_depth')).toBe(0);
    } finally {
      await other.close();
    }
  });

  it("exports the event loop's delay since the previous scrape, a stall of the loop included", async () => {
    await scrape(tb); // the figures are since the previous scrape
    // hold the loop (the broker serves in this process) for 40 ms
    const until = performance.now() + 40;
    while (performance.now() < until);
    const { samples } = await scrape(tb);
    // sampled every 2 ms: a 40 ms stall reads as at least 38 ms
    expect(value(samples, 'keywarden_nodejs_eventloop_lag_max_seconds')).toBeGreaterThanOrEqual(0.035);
    expect(value(samples, 'keywarden_nodejs_eventloop_lag_p99_seconds')).toBeGreaterThan(0);
    const { samples: next } = await scrape(tb);
    // reset by the scrape: the stall is not reported twice
    expect(value(next, 'keywarden_nodejs_eventloop_lag_max_seconds')).toBeLessThan(0.035);
  });

  it('carries no secret or client names, values, credentials, tokens or image names', async () => {
    const { text } = await scrape(tb);
    for (const v of leaks) expect(text.includes(v), `metrics contain ${v.slice(0, 12)}…`).toBe(false);
    // label values are the bounded enums only
    const free = new Set<string>();
    for (const [series] of parseSamples(text)) {
      if (!series.startsWith('keywarden_') || series.startsWith('keywarden_http_') || series.startsWith('keywarden_nodejs_') || series.startsWith('keywarden_process_')) continue;
      for (const [, v] of series.matchAll(/="([^"]*)"/g)) if (!/^[a-z0-9_.+-]*$/i.test(v!)) free.add(`${series}`);
    }
    expect([...free]).toEqual([]);
  });

  it('names only served metrics in the example alert rules (packaging/prometheus/keywarden-alerts.yml)', async () => {
    const doc = parseYaml(fs.readFileSync(path.join(REPO_ROOT, 'packaging/prometheus/keywarden-alerts.yml'), 'utf8')) as { groups: Array<{ name: string; rules: Array<{ alert: string; expr: string; for?: string; labels?: Record<string, string> }> }> };
    const rules = doc.groups.flatMap((g) => g.rules);
    expect(rules.length).toBeGreaterThanOrEqual(5);
    const served = new Set([...parseSamples((await scrape(tb)).text).keys()].map((k) => k.slice(0, k.indexOf('{'))));
    const alerts = new Set<string>();
    for (const rule of rules) {
      expect(rule.alert, JSON.stringify(rule)).toMatch(/^Keywarden[A-Za-z0-9]+$/);
      expect(alerts.has(rule.alert), rule.alert).toBe(false);
      alerts.add(rule.alert);
      expect(['warning', 'critical']).toContain(rule.labels?.severity);
      const used = [...rule.expr.matchAll(/\bkeywarden_[a-z0-9_]+/g)].map((m) => m[0]);
      expect(used.length, rule.alert).toBeGreaterThan(0);
      for (const name of used) expect(served.has(name), `${rule.alert} uses ${name}, which /metrics does not serve`).toBe(true);
    }
  });
});

describe('database pool gauges and failure counts (db/database.ts)', () => {
  it('reports used and waiting connections, and counts a connection that could not be had as a timeout', async () => {
    const testDb = freshDatabase();
    const handle = await testDb.open({ poolMax: 1, timeouts: { acquireMs: 250 } });
    const metrics = createMetrics();
    const database = new Database(handle, { fastPath: false, onFailure: (kind) => metrics.telemetry.databaseError(kind) });
    metrics.observePool(() => database.poolStats());
    const read = async () => parseSamples(await metrics.registry.metrics());
    try {
      await database.ping();
      let release!: () => void;
      const held = new Promise<void>((r) => (release = r));
      let started!: () => void;
      const inside = new Promise<void>((r) => (started = r));
      const trx = database.transaction(async () => {
        started();
        await held;
      });
      await inside;
      const waiting = database.ping().then(
        () => 'answered',
        (err: Error) => err.name,
      );
      await sleep(20);
      const during = await read();
      expect(value(during, 'keywarden_db_pool_connections', { state: 'used' })).toBe(1);
      expect(value(during, 'keywarden_db_pool_connections', { state: 'free' })).toBe(0);
      expect(value(during, 'keywarden_db_pool_connections', { state: 'pending' })).toBe(1);
      expect(value(during, 'keywarden_db_pool_max_connections')).toBe(1);
      expect(await waiting).toBe('KnexTimeoutError');
      release();
      await trx;
      const after = await read();
      expect(value(after, 'keywarden_db_errors_total', { kind: 'timeout' })).toBe(1);
      expect(value(after, 'keywarden_db_errors_total', { kind: 'unavailable' })).toBe(0);
      expect(value(after, 'keywarden_db_pool_connections', { state: 'used' })).toBe(0);
      expect(value(after, 'keywarden_db_pool_connections', { state: 'pending' })).toBe(0);
      // a failure that is no database failure (a syntax error here) is not counted
      await expect(database.readAll('select * from no_such_table_ops_metrics', [])).rejects.toThrow();
      const last = await read();
      expect(['unavailable', 'timeout', 'storage_full', 'read_only', 'busy'].reduce((n, kind) => n + value(last, 'keywarden_db_errors_total', { kind }), 0)).toBe(1);
    } finally {
      await database.close();
      await handle.close();
      await testDb.drop();
    }
  });

  it.runIf(dialectUnderTest === 'postgres')('counts a statement the server cancelled (statement_timeout) as a timeout', async () => {
    const testDb = freshDatabase();
    const handle = await testDb.open({ timeouts: { statementMs: 100 } });
    const metrics = createMetrics();
    const database = new Database(handle, { onFailure: (kind) => metrics.telemetry.databaseError(kind) });
    try {
      await expect(database.readAll('select pg_sleep(1)', [])).rejects.toMatchObject({ code: '57014' });
      expect(value(parseSamples(await metrics.registry.metrics()), 'keywarden_db_errors_total', { kind: 'timeout' })).toBe(1);
    } finally {
      await database.close();
      await handle.close();
      await testDb.drop();
    }
  });
});
