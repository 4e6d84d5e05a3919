/**
 * Release gate API: policy CRUD and versioning, access control on every route, input validation,
 * the specificity rule, and `keywarden verify` as a child process.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listen, type RunningServer } from '../../src/http/server.js';
import { runsAsRoot } from '../../src/trust/gate/gate-checks.js';
import { selectPolicy, type PolicyDocument } from '../../src/trust/gate/policy-schema.js';
import { matchesImagePattern, matchesValueGlob } from '../../src/trust/glob.js';
import { bearer, startTestBroker, type TestBroker } from '../support/broker.js';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const DIGEST = `sha256:${'c'.repeat(64)}`;

describe('image patterns and specificity', () => {
  it('matches * within a segment and ** across segments', () => {
    expect(matchesImagePattern('127.0.0.1:5000/team/*', '127.0.0.1:5000/team/app')).toBe(true);
    expect(matchesImagePattern('127.0.0.1:5000/team/*', '127.0.0.1:5000/team/app/sub')).toBe(false);
    expect(matchesImagePattern('127.0.0.1:5000/**', '127.0.0.1:5000/team/app/sub')).toBe(true);
    expect(matchesImagePattern('127.0.0.1:5000/te?m/app', '127.0.0.1:5000/team/app')).toBe(true);
    expect(matchesImagePattern('127.0.0.1:5000/team/app', '127.0.0.1:5000/team/app2')).toBe(false);
    expect(matchesImagePattern('*.example.com/app', 'registry.example.com/app')).toBe(true);
  });

  it('picks the most specific policy', () => {
    const p = (name: string, ...images: string[]) => ({ name, version: 1, document: { name, images, mode: 'enforce' } as PolicyDocument });
    const policies = [p('all', 'r.io/**'), p('team', 'r.io/team/*'), p('exact', 'r.io/team/app'), p('deep', 'r.io/team/**'), p('prefix', 'r.io/team/ap*')];
    expect(selectPolicy(policies, 'r.io/team/app')?.policy.name).toBe('exact');
    expect(selectPolicy(policies, 'r.io/team/apx')?.policy.name).toBe('prefix');
    expect(selectPolicy(policies, 'r.io/team/web')?.policy.name).toBe('team');
    expect(selectPolicy(policies, 'r.io/team/web/x')?.policy.name).toBe('deep');
    expect(selectPolicy(policies, 'r.io/other')?.policy.name).toBe('all');
    expect(selectPolicy(policies, 'q.io/other')).toBeUndefined();
    // ties: alphabetical
    expect(selectPolicy([p('b', 'r.io/x/*'), p('a', 'r.io/*/y')], 'r.io/x/y')?.policy.name).toBe('b');
  });

  it('recognises root users and label globs', () => {
    for (const u of ['', 'root', '0', '0:0', 'root:wheel', '0:1000', ' 00 ']) expect(runsAsRoot(u), u).toBe(true);
    for (const u of ['app', '1000', '1000:0', 'nobody:nogroup']) expect(runsAsRoot(u), u).toBe(false);
    expect(matchesValueGlob('*', '')).toBe(true);
    expect(matchesValueGlob('https://*', 'https://x/y')).toBe(true);
    expect(matchesValueGlob('v?.*', 'v1.2')).toBe(true);
    expect(matchesValueGlob('https://*', 'http://x')).toBe(false);
  });
});

describe('release gate API', () => {
  let tb: TestBroker;
  let admin: Record<string, string>;
  let keys: Record<'writer' | 'auditor' | 'signer', Record<string, string>>;

  beforeAll(async () => {
    tb = await startTestBroker();
    admin = bearer(tb.adminKey);
    keys = {
      writer: bearer(await tb.apiKey('writer')),
      auditor: bearer(await tb.apiKey('auditor')),
      signer: bearer(await tb.apiKey('signer')),
    };
  });
  afterAll(async () => {
    await tb?.close();
  });

  const doc = (name: string, over: Record<string, unknown> = {}) => ({ name, images: ['r.example.com/team/*'], mode: 'enforce', ...over });

  it('creates, reads, lists, replaces and deletes versioned policies', async () => {
    const created = await tb.request.post('/v1/policies').set(admin).send(doc('crud', { rules: { nonRootUser: true } }));
    expect(created.status).toBe(201);
    expect(created.headers.location).toBe('/v1/policies/crud');
    expect(created.body).toMatchObject({ name: 'crud', version: 1, document: { name: 'crud', mode: 'enforce', rules: { nonRootUser: true } } });
    expect((await tb.request.post('/v1/policies').set(admin).send(doc('crud'))).status).toBe(409);

    const read = await tb.request.get('/v1/policies/crud').set(keys.auditor);
    expect(read.status).toBe(200);
    expect(read.headers.etag).toBe('"1"');
    expect((await tb.request.get('/v1/policies').set(keys.signer)).body.items.map((p: { name: string }) => p.name)).toContain('crud');

    const replaced = await tb.request.put('/v1/policies/crud').set(admin).send({ images: ['r.example.com/**'], mode: 'warn' });
    expect(replaced.status).toBe(200);
    expect(replaced.body).toMatchObject({ version: 2, document: { name: 'crud', mode: 'warn', images: ['r.example.com/**'] } });
    expect((await tb.request.put('/v1/policies/crud').set(admin).set('If-Match', '"1"').send(doc('crud'))).status).toBe(412);
    expect((await tb.request.put('/v1/policies/nope').set(admin).send(doc('nope'))).status).toBe(404);

    expect((await tb.request.delete('/v1/policies/crud').set(admin)).status).toBe(204);
    expect((await tb.request.get('/v1/policies/crud').set(admin)).status).toBe(404);
    expect((await tb.request.delete('/v1/policies/crud').set(admin)).status).toBe(404);
    // versions are never reused
    const again = await tb.request.post('/v1/policies').set(admin).send(doc('crud'));
    expect(again.body.version).toBe(4);
    const versions = await tb.broker.services.db('trust_policy_versions').where({ name: 'crud' }).orderBy('version');
    expect(versions.map((v: { change: string }) => v.change)).toEqual(['create', 'update', 'delete', 'create']);
    expect(versions[2].document).toBeNull();

    const events = await tb.broker.services.db('audit_events').where({ resource_kind: 'trust-policy', resource_name: 'crud' }).orderBy('seq');
    expect(events.map((e: { action: string }) => e.action)).toEqual(['policy.create', 'policy.update', 'policy.delete', 'policy.create']);
  });

  it('paginates policies', async () => {
    for (const n of ['page-a', 'page-b', 'page-c']) await tb.request.post('/v1/policies').set(admin).send(doc(n));
    const p1 = await tb.request.get('/v1/policies').query({ limit: 2 }).set(admin);
    expect(p1.body.items).toHaveLength(2);
    const p2 = await tb.request.get('/v1/policies').query({ limit: 2, cursor: p1.body.nextCursor }).set(admin);
    expect(p2.body.items[0].name > p1.body.items[1].name).toBe(true);
  });

  it('rejects bad input with 400 problems (never 500)', async () => {
    const bad: unknown[] = [
      {},
      [],
      'text',
      doc('x', { images: [] }),
      doc('x', { images: ['has space/*'] }),
      doc('x', { mode: 'audit' }),
      doc('x', { extra: 1 }),
      doc('bad name!'),
      doc('x', { cosign: { keys: [] } }),
      doc('x', { cosign: { keys: ['-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----'] } }),
      doc('x', { cosign: { keys: ['k'], threshold: 0 } }),
      doc('x', { notary: { server: 'not a url', rootKeys: ['k'] } }),
      doc('x', { notary: { server: 'http://n', rootKeys: [] } }),
      doc('x', { notary: { server: 'http://n', rootKeys: ['k'], threshold: 2, delegations: ['targets/a'] } }),
      doc('x', { rules: { maxAgeDays: -1 } }),
      doc('x', { rules: { requiredLabels: ['a'] } }),
      doc('x', { rules: { unknownRule: true } }),
    ];
    for (const body of bad) {
      const res = await tb.request.post('/v1/policies').set(admin).send(body as object);
      // a bare string goes out form-encoded: not JSON at all, so 415 before any validation
      expect(res.status, JSON.stringify(body)).toBe(typeof body === 'string' ? 415 : 400);
      expect(res.headers['content-type']).toMatch(/application\/problem\+json/);
    }
    const mismatch = await tb.request.put('/v1/policies/page-a').set(admin).send(doc('page-b'));
    expect(mismatch.status).toBe(400);
    const malformed = await tb.request.post('/v1/policies').set(admin).set('content-type', 'application/json').send('{"name":');
    expect(malformed.status).toBe(400);

    for (const body of [{}, { image: '' }, { image: 'nohost' }, { image: 'r.example.com/app' }, { image: 'r.example.com/App:v1' }, { image: 'x'.repeat(600) }, { image: 'r.example.com/app:v1', extra: 1 }, { image: 42 }]) {
      const res = await tb.request.post('/v1/releases').set(keys.signer).send(body);
      expect(res.status, JSON.stringify(body)).toBe(400);
    }
    for (const q of [{ limit: 0 }, { cursor: '!!!' }, { cursor: Buffer.from('"x"').toString('base64url') }, { digest: 'sha256:zz' }, { decision: 'maybe' }, { other: 1 }]) {
      expect((await tb.request.get('/v1/releases').query(q).set(keys.auditor)).status, JSON.stringify(q)).toBe(400);
    }
    expect((await tb.request.get('/v1/releases/not-an-id').set(keys.auditor)).status).toBe(400);
    expect((await tb.request.get('/v1/policies/bad%20name').set(keys.auditor)).status).toBe(400);
  });

  it('enforces access on every route (401 without credentials, 403 for other roles)', async () => {
    await tb.request.post('/v1/policies').set(admin).send(doc('acl'));
    const routes: Array<{ method: 'get' | 'post' | 'put' | 'delete'; path: string; body?: unknown; allowed: string[] }> = [
      { method: 'post', path: '/v1/policies', body: doc('acl-new'), allowed: [] },
      { method: 'get', path: '/v1/policies', allowed: ['auditor', 'signer'] },
      { method: 'get', path: '/v1/policies/acl', allowed: ['auditor', 'signer'] },
      { method: 'put', path: '/v1/policies/acl', body: doc('acl'), allowed: [] },
      { method: 'delete', path: '/v1/policies/acl', allowed: [] },
      { method: 'post', path: '/v1/releases', body: { image: `r.example.com/nopolicy@${DIGEST}` }, allowed: ['writer', 'signer'] },
      { method: 'get', path: '/v1/releases', allowed: ['writer', 'signer', 'auditor'] },
      { method: 'get', path: '/v1/releases/rd_none', allowed: ['writer', 'signer', 'auditor'] },
    ];
    const { token } = await tb.client('gate-client');
    for (const r of routes) {
      const anon = await tb.request[r.method](r.path).send(r.body as object);
      expect(anon.status, `${r.method} ${r.path} anonymous`).toBe(401);
      const badKey = await tb.request[r.method](r.path).set(bearer('kw_notarealkeynotarealkeynotarealkey')).send(r.body as object);
      expect(badKey.status, `${r.method} ${r.path} bad key`).toBe(401);
      const asClient = await tb.request[r.method](r.path).set(bearer(token)).send(r.body as object);
      expect(asClient.status, `${r.method} ${r.path} client`).toBe(403);
      for (const role of ['writer', 'auditor', 'signer'] as const) {
        const res = await tb.request[r.method](r.path).set(keys[role]).send(r.body as object);
        if (r.allowed.includes(role)) expect([200, 201, 204, 404], `${r.method} ${r.path} as ${role}`).toContain(res.status);
        else expect(res.status, `${r.method} ${r.path} as ${role}`).toBe(403);
      }
    }
  });

  it('decides without contacting anything when the policy has no remote checks', async () => {
    await tb.request.post('/v1/policies').set(admin).send({ name: 'open', images: ['r.example.com/open/*'] });
    const res = await tb.request.post('/v1/releases').set(keys.writer).send({ image: `r.example.com/open/app@${DIGEST}` });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ decision: 'allow', policy: 'open', policyVersion: 1, digest: DIGEST, checks: [], cached: false });
    expect(res.headers.location).toBe(`/v1/releases/${res.body.id}`);
    const denied = await tb.request.post('/v1/releases').set(keys.writer).send({ image: `r.example.com/closed/app@${DIGEST}` });
    expect(denied.body).toMatchObject({ decision: 'deny', policy: null });
    const ev = await tb.broker.services.db('audit_events').where({ action: 'release.decide', resource_name: `r.example.com/closed/app@${DIGEST}` }).first();
    expect(ev).toMatchObject({ outcome: 'deny' });
    expect(ev.reason).toMatch(/^policy: no trust policy matches/);
  });
});

describe('keywarden verify (child process)', () => {
  let tb: TestBroker;
  let server: RunningServer;
  let dir: string;

  beforeAll(async () => {
    tb = await startTestBroker();
    server = await listen(tb.broker.app, { listen: { host: '127.0.0.1', port: 0 } });
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kw-verify-'));
    expect((await tb.request.post('/v1/policies').set(bearer(tb.adminKey)).send({ name: 'open', images: ['r.example.com/open/*'] })).status).toBe(201);
    const warn = await tb.request
      .post('/v1/policies')
      .set(bearer(tb.adminKey))
      .send({ name: 'warn', mode: 'warn', images: ['r.example.com/warn/*'], notary: { server: 'https://127.0.0.1:9', rootKeys: ['a'.repeat(64)] } });
    expect(warn.status, warn.text).toBe(201);
  });
  afterAll(async () => {
    await server?.close();
    await tb?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  function run(args: string[], env: Record<string, string | undefined>): Promise<{ code: number | null; stdout: string; stderr: string }> {
    const cleanEnv: Record<string, string> = {};
    for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith('KEYWARDEN_')) cleanEnv[k] = v;
    for (const [k, v] of Object.entries(env)) if (v !== undefined) cleanEnv[k] = v;
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'src/cli/main.ts'), ...args], { cwd: REPO_ROOT, env: cleanEnv, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => (stdout += c));
    child.stderr.on('data', (c) => (stderr += c));
    return new Promise((resolve, reject) => {
      child.on('error', reject);
      child.on('close', (code) => resolve({ code, stdout, stderr }));
    });
  }

  it('exits 0 on allow, 1 on deny, 0 on warn, and prints the checks', async () => {
    const key = await tb.apiKey('signer');
    const env = { KEYWARDEN_ADDR: server.url, KEYWARDEN_API_KEY: key };
    const allow = await run(['verify', `r.example.com/open/app@${DIGEST}`], env);
    expect(allow.code, allow.stderr).toBe(0);
    expect(allow.stdout).toMatch(/decision: ALLOW/);

    const deny = await run(['verify', `r.example.com/closed/app@${DIGEST}`], env);
    expect(deny.code, deny.stderr).toBe(1);
    expect(deny.stdout).toMatch(/✗ policy: no trust policy matches r\.example\.com\/closed\/app/);
    expect(deny.stdout).toMatch(/decision: DENY/);

    const keyFile = path.join(dir, 'key');
    fs.writeFileSync(keyFile, `${key}\n`);
    const warn = await run(['verify', '--api-key-file', keyFile, `r.example.com/warn/app@${DIGEST}`], { KEYWARDEN_ADDR: server.url });
    expect(warn.code, warn.stderr).toBe(0);
    expect(warn.stdout).toMatch(/✗ notary: .*only a digest/);
    expect(warn.stdout).toMatch(/decision: WARN/);
  }, 180_000);

  it('exits 77 on 401/403, 69 when the broker is unreachable, 64 on usage errors', async () => {
    const auditor = await tb.apiKey('auditor');
    const img = `r.example.com/open/app@${DIGEST}`;
    const signer = await tb.apiKey('signer');
    const port = await new Promise<number>((resolve) => {
      const s = net.createServer();
      s.listen(0, '127.0.0.1', () => {
        const p = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
    const dead = `http://127.0.0.1:${port}`;
    const cases: Array<[string[], Record<string, string>, number]> = [
      [['verify', img], { KEYWARDEN_ADDR: server.url, KEYWARDEN_API_KEY: 'kw_notarealkeynotarealkeynotarealkey' }, 77],
      [['verify', img], { KEYWARDEN_ADDR: server.url, KEYWARDEN_API_KEY: auditor }, 77],
      [['verify', img, '--timeout', '2'], { KEYWARDEN_ADDR: dead, KEYWARDEN_API_KEY: signer }, 69],
      [['verify', img], { KEYWARDEN_API_KEY: signer }, 64],
      [['verify', img], { KEYWARDEN_ADDR: server.url }, 64],
      [['verify'], { KEYWARDEN_ADDR: server.url, KEYWARDEN_API_KEY: signer }, 64],
      [['verify', 'not-a-ref'], { KEYWARDEN_ADDR: server.url, KEYWARDEN_API_KEY: signer }, 64],
    ];
    const results = await Promise.all(cases.map(([args, env]) => run(args, env)));
    results.forEach((r, i) => expect(r.code, `${JSON.stringify(cases[i]![0])} ${r.stderr}`).toBe(cases[i]![2]));
  }, 180_000);
});
