import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { allowedMethods, type MountedRoute } from '../../src/http/routes.js';
import { vaultPrefixes } from '../../src/http/vault-errors.js';
import { auth, expectProblem } from '../core/helpers.js';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { contractViolations } from '../support/contract.js';

/** A wrong method on a path that exists is a 405 with Allow (from the mounted route tables), not a 404. */
describe('405 Method Not Allowed', () => {
  let tb: TestBroker;

  beforeAll(async () => {
    tb = await startTestBroker();
  });

  afterAll(async () => {
    await tb?.close();
  });

  it('answers a wrong method with 405, Allow and the allowed list, as a problem document', async () => {
    const res = await tb.request.delete('/v1/secrets').set(auth(tb.adminKey));
    const body = expectProblem(res, 405, 'method_not_allowed');
    expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(res.headers.allow).toBe('GET, HEAD, POST');
    expect(body.allowed).toEqual(['GET', 'HEAD', 'POST']);
    expect(body.detail).toBe('DELETE is not supported on /v1/secrets; it answers GET, HEAD, POST');
    // also without credentials (openapi.yaml is public), and on a templated path
    const templated = await tb.request.put('/v1/secrets/db.password');
    expectProblem(templated, 405, 'method_not_allowed');
    expect(templated.headers.allow).toBe('DELETE, GET, HEAD, PATCH');
    // HEAD where no GET is
    const head = await tb.request.head('/v1/auth/token');
    expect(head.status).toBe(405);
    expect(head.headers.allow).toBe('POST');
  });

  it('keeps 404 for paths no route answers, and serves the right method as before', async () => {
    expectProblem(await tb.request.get('/v1/nothing-here'), 404, 'route_not_found');
    expectProblem(await tb.request.delete('/v1/secrets/a/b/c'), 404, 'route_not_found');
    expect((await tb.request.get('/v1/secrets').set(auth(tb.adminKey))).status).toBe(200);
    expect((await tb.request.head('/healthz')).status).toBe(200);
  });

  it('lists exactly the methods the route tables define for every mounted path (native and Vault)', async () => {
    const routes = tb.broker.routes;
    const prefixes = vaultPrefixes(tb.config.vaultKvMount);
    const fill = (path: string) => path.replace(/\{[^}]+\}/g, 'zz-probe');
    // segment by segment: a literal, `{x}` any one segment, `{x+}` one or more
    const answers = (template: string, path: string) => {
      const t = template.split('/');
      const p = path.split('/');
      for (let i = 0; i < t.length; i++) {
        if (/^\{.+\+\}$/.test(t[i])) return p.length > i;
        if (i >= p.length || !(t[i] === p[i] || (/^\{.+\}$/.test(t[i]) && p[i] !== ''))) return false;
      }
      return p.length === t.length;
    };
    const byPath = new Map<string, Set<string>>();
    for (const path of new Set(routes.map((r) => fill(r.path)))) {
      const methods = new Set<string>();
      for (const r of routes.filter((r) => answers(r.path, path))) {
        methods.add(r.method.toUpperCase());
        if (r.method === 'get') methods.add('HEAD');
      }
      byPath.set(path, methods);
    }
    const wrong: string[] = [];
    let probed = 0;
    for (const [path, methods] of byPath) {
      const method = ['DELETE', 'PATCH', 'PUT', 'POST', 'GET'].find((m) => !methods.has(m));
      if (!method) continue;
      probed++;
      const res = await tb.request[method.toLowerCase() as 'get'](path);
      const expected = [...methods].sort().join(', ');
      const vault = prefixes.some((p) => path.startsWith(p));
      if (res.status !== 405) wrong.push(`${method} ${path}: ${res.status} ${res.text.slice(0, 200)}`);
      else if (res.headers.allow !== expected) wrong.push(`${method} ${path}: Allow ${res.headers.allow}, routes define ${expected}`);
      else if (vault && (res.headers['content-type'] !== 'application/json' || !Array.isArray(res.body.errors))) wrong.push(`${method} ${path}: not Vault's error shape: ${res.text}`);
      else if (!vault && res.body.code !== 'method_not_allowed') wrong.push(`${method} ${path}: code ${res.body.code}`);
    }
    expect(wrong, wrong.join('\n')).toEqual([]);
    expect(probed).toBeGreaterThan(40);
  });

  it('on the Vault-compatible API it is Vault\'s 405 in Vault\'s shape, with Allow', async () => {
    const res = await tb.request.delete('/v1/auth/approle/login');
    expect(res.status).toBe(405);
    expect(res.headers['content-type']).toBe('application/json');
    expect(res.headers.allow).toBe('POST');
    expect(res.body).toEqual({ errors: ['DELETE is not supported on /v1/auth/approle/login; it answers POST'] });
  });

  it('matches paths as Express routes them: case-insensitive, a trailing slash, {name} one segment, {name+} the rest', () => {
    const routes: MountedRoute[] = [
      { method: 'get', path: '/v1/things', access: 'public' },
      { method: 'post', path: '/v1/things', access: ['writer'] },
      { method: 'delete', path: '/v1/things/{name}', access: ['writer'] },
      { method: 'put', path: '/v1/kv/data/{path+}', access: ['writer'] },
    ];
    expect(allowedMethods(routes, '/v1/things')).toEqual(['GET', 'HEAD', 'POST']);
    expect(allowedMethods(routes, '/V1/Things/')).toEqual(['GET', 'HEAD', 'POST']);
    expect(allowedMethods(routes, '/v1/things/a')).toEqual(['DELETE']);
    expect(allowedMethods(routes, '/v1/things/a/b')).toEqual([]);
    expect(allowedMethods(routes, '/v1/kv/data/a/b/c')).toEqual(['PUT']);
    expect(allowedMethods(routes, '/v1/kv/data/')).toEqual([]);
    expect(allowedMethods(routes, '/v1/thingsx')).toEqual([]);
  });

  it('the contract hook takes a 405 only on a documented path, and a 415 only from an operation with a request body', () => {
    const problem = (status: number, code: string, extra: Record<string, unknown>) =>
      JSON.stringify({ type: `https://keywarden.dev/problems/${code}`, title: 't', status, code, detail: 'd', ...extra });
    const notAllowed = problem(405, 'method_not_allowed', { allowed: ['GET', 'HEAD', 'POST'] });
    expect(contractViolations({ method: 'DELETE', url: '/v1/secrets', status: 405, contentType: 'application/problem+json', body: notAllowed })).toEqual([]);
    expect(contractViolations({ method: 'DELETE', url: '/v1/not-a-path', status: 405, contentType: 'application/problem+json', body: notAllowed })[0]).toMatch(/documents no operation at \/v1\/not-a-path/);
    expect(contractViolations({ method: 'DELETE', url: '/v1/secrets', status: 405, contentType: 'application/problem+json', body: problem(405, 'method_not_allowed', {}) })[0]).toMatch(/allowed/);
    expect(contractViolations({ method: 'DELETE', url: '/v1/sys/health', status: 405, contentType: 'application/json', body: '{"errors":["x"]}' })).toEqual([]);
    const unsupported = problem(415, 'unsupported_media_type', { accepted: ['application/json'] });
    expect(contractViolations({ method: 'POST', url: '/v1/groups', status: 415, contentType: 'application/problem+json', body: unsupported })).toEqual([]);
    expect(contractViolations({ method: 'GET', url: '/v1/groups', status: 415, contentType: 'application/problem+json', body: unsupported })[0]).toMatch(/documents no 415 response/);
    expect(contractViolations({ method: 'POST', url: '/v1/groups', status: 415, contentType: 'application/problem+json', body: problem(415, 'other', { accepted: [] }) })[0]).toMatch(/unsupported_media_type/);
  });
});
