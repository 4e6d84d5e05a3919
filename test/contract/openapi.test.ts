/**
 * Contract test: openapi.yaml must describe exactly the routes the broker mounts, with the same
 * access rules, problem+json errors, and a structurally valid OpenAPI 3.1 document.
 *
 * When you add a route with defineRoutes(), add its operation to openapi.yaml (under the tag of
 * its domain) with `x-keywarden-access` equal to the route's `access` (list admin explicitly).
 */
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import supertest from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { openApiFile } from '../../src/http/ops-routes.js';
import type { Access, MountedRoute } from '../../src/http/routes.js';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { assertFetchMatchesContract, assertMatchesContract, contractViolations, ContractViolation, OPENAPI_FILE } from '../support/contract.js';
import { drainServerSideViolations } from '../support/contract-hook.js';

const HTTP_METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'] as const;
const PROBLEM_REF = '#/components/schemas/Problem';
const PROBLEM_MEDIA_TYPE = 'application/problem+json';
const VAULT_ERROR_REF = '#/components/schemas/VaultError';

/** Public operations that need not document a problem+json 4xx (nothing to reject). */
const TRIVIAL_PUBLIC = new Set([
  'GET /healthz',
  'GET /readyz',
  'GET /metrics',
  'GET /openapi.yaml',
  'GET /docs',
  'GET /console',
  'GET /.well-known/jwks.json',
  'GET /.well-known/openid-configuration',
  'GET /v1/sys/mounts',
]);

type Json = any;

interface Operation {
  method: string;
  path: string;
  key: string;
  op: Json;
  pathItem: Json;
}

let tb: TestBroker;
/** The routes this broker's app mounts (defineRoutes records them per router). */
let mountedRoutes: readonly MountedRoute[];
let specText: string;
let spec: Json;
let operations: Operation[];

const opKey = (method: string, path: string) => `${method.toUpperCase()} ${path}`;

/** Resolves a local JSON pointer (#/a/b~1c) in the spec; undefined when it does not resolve. */
function resolvePointer(ref: string): Json {
  if (!ref.startsWith('#')) return undefined;
  if (ref === '#') return spec;
  if (!ref.startsWith('#/')) return undefined;
  let node: Json = spec;
  for (const raw of ref.slice(2).split('/')) {
    const part = decodeURIComponent(raw).replace(/~1/g, '/').replace(/~0/g, '~');
    if (node === null || typeof node !== 'object' || !Object.prototype.hasOwnProperty.call(node, part)) return undefined;
    node = node[part];
  }
  return node;
}

/** Follows $ref chains (for responses, parameters, ...) to the referenced object. */
function deref(node: Json, seen = new Set<string>()): Json {
  while (node && typeof node === 'object' && typeof node.$ref === 'string') {
    if (seen.has(node.$ref)) return undefined;
    seen.add(node.$ref);
    node = resolvePointer(node.$ref);
  }
  return node;
}

/** True when the schema is, refers to, or is allOf-composed from the Problem schema. */
function isProblemSchema(schema: Json, seen = new Set<string>()): boolean {
  if (!schema || typeof schema !== 'object') return false;
  if (typeof schema.$ref === 'string') {
    if (schema.$ref === PROBLEM_REF) return true;
    if (seen.has(schema.$ref)) return false;
    seen.add(schema.$ref);
    return isProblemSchema(resolvePointer(schema.$ref), seen);
  }
  return Array.isArray(schema.allOf) && schema.allOf.some((s: Json) => isProblemSchema(s, seen));
}

function describeAccess(access: unknown): string {
  return typeof access === 'string' ? access : JSON.stringify(access);
}

/** 'public' | 'client' | sorted role list with admin added (admin is implied on operator routes). */
function normalizeAccess(access: unknown): string {
  if (access === 'public' || access === 'client') return access;
  if (Array.isArray(access) && access.length > 0 && access.every((r) => typeof r === 'string')) {
    return [...new Set(['admin', ...access])].sort().join(',');
  }
  return `invalid:${JSON.stringify(access)}`;
}

function securitySchemesOf(op: Json): string[] | undefined {
  const security = op.security ?? spec.security;
  if (!Array.isArray(security)) return undefined;
  return security.flatMap((req: Json) => Object.keys(req ?? {}));
}

function collectRefs(node: Json, where: string, out: Array<{ ref: string; where: string }>): void {
  if (Array.isArray(node)) {
    node.forEach((n, i) => collectRefs(n, `${where}/${i}`, out));
  } else if (node && typeof node === 'object') {
    for (const [k, v] of Object.entries(node)) {
      if (k === '$ref' && typeof v === 'string') out.push({ ref: v, where });
      else collectRefs(v, `${where}/${k.replace(/~/g, '~0').replace(/\//g, '~1')}`, out);
    }
  }
}

beforeAll(async () => {
  tb = await startTestBroker();
  mountedRoutes = tb.broker.routes;
  specText = fs.readFileSync(openApiFile(), 'utf8');
  spec = YAML.parse(specText, { uniqueKeys: true, prettyErrors: true });
  operations = [];
  for (const [path, pathItem] of Object.entries<Json>(spec?.paths ?? {})) {
    for (const method of HTTP_METHODS) {
      if (pathItem && pathItem[method]) operations.push({ method, path, key: opKey(method, path), op: pathItem[method], pathItem });
    }
  }
});

afterAll(async () => {
  await tb?.close();
});

describe('openapi.yaml matches the mounted routes', () => {
  it('sees the mounted routes', () => {
    expect(mountedRoutes.length, 'no routes recorded by defineRoutes() on the broker\'s routers').toBeGreaterThan(0);
  });

  it('(a) documents every mounted route', () => {
    const documented = new Set(operations.map((o) => o.key));
    const missing = mountedRoutes
      .filter((r) => !documented.has(opKey(r.method, r.path)))
      .map((r) => `${opKey(r.method, r.path)} (access ${describeAccess(r.access)})`);
    expect(missing, `mounted routes missing from openapi.yaml:\n  ${missing.join('\n  ')}\n`).toEqual([]);
  });

  it('(b) documents no route that is not mounted', () => {
    const mounted = new Set(mountedRoutes.map((r) => opKey(r.method, r.path)));
    const extra = operations.filter((o) => !mounted.has(o.key)).map((o) => `${o.key} (${o.op.operationId ?? 'no operationId'})`);
    expect(extra, `openapi.yaml operations with no mounted route:\n  ${extra.join('\n  ')}\n`).toEqual([]);
  });

  it('(c) x-keywarden-access equals the route access (admin implied) and lists admin explicitly', () => {
    const byKey = new Map(operations.map((o) => [o.key, o]));
    const wrong: string[] = [];
    for (const r of mountedRoutes) {
      const o = byKey.get(opKey(r.method, r.path));
      if (!o) continue; // reported by (a)
      const documented = o.op['x-keywarden-access'];
      if (documented === undefined) {
        wrong.push(`${o.key}: no x-keywarden-access (route access ${describeAccess(r.access)})`);
      } else if (normalizeAccess(documented) !== normalizeAccess(r.access as Access)) {
        wrong.push(`${o.key}: x-keywarden-access ${describeAccess(documented)}, but the route allows ${describeAccess(r.access)}`);
      } else if (Array.isArray(documented) && !documented.includes('admin')) {
        wrong.push(`${o.key}: x-keywarden-access ${describeAccess(documented)} should list admin explicitly`);
      }
    }
    for (const o of operations) {
      if (o.op['x-keywarden-access'] === undefined && !wrong.some((w) => w.startsWith(`${o.key}:`))) {
        wrong.push(`${o.key}: no x-keywarden-access`);
      }
    }
    expect(wrong, `access mismatches:\n  ${wrong.join('\n  ')}\n`).toEqual([]);
  });

  it('security matches x-keywarden-access', () => {
    const schemes = spec.components?.securitySchemes ?? {};
    const wrong: string[] = [];
    for (const o of operations) {
      const access = o.op['x-keywarden-access'];
      const security = o.op.security ?? spec.security;
      const names = securitySchemesOf(o.op);
      for (const n of names ?? []) if (!schemes[n]) wrong.push(`${o.key}: security names unknown scheme ${n}`);
      if (access === 'public') {
        if (!Array.isArray(security) || security.length !== 0) wrong.push(`${o.key}: public, so security must be []`);
      } else if (access === 'client') {
        if (!names?.includes('clientToken') || names.includes('apiKey')) {
          wrong.push(`${o.key}: client route, so security must offer clientToken (or mtls) and not apiKey; has ${JSON.stringify(security)}`);
        }
      } else if (Array.isArray(access)) {
        if (!names?.includes('apiKey')) wrong.push(`${o.key}: operator route, so security must offer apiKey; has ${JSON.stringify(security)}`);
      }
    }
    expect(wrong, `security mismatches:\n  ${wrong.join('\n  ')}\n`).toEqual([]);
    expect(schemes.apiKey, 'apiKey scheme').toMatchObject({ type: 'http', scheme: 'bearer' });
    expect(schemes.clientToken, 'clientToken scheme').toMatchObject({ type: 'http', scheme: 'bearer' });
    expect(schemes.mtls, 'mtls scheme').toMatchObject({ type: 'mutualTLS' });
  });

  it('(d) every non-trivial operation documents problem+json 4xx errors (Vault\'s error shape on vault routes)', () => {
    const wrong: string[] = [];
    for (const o of operations) {
      const responses: Record<string, Json> = o.op.responses ?? {};
      const clientErrors = Object.entries(responses).filter(([status]) => /^4(\d\d|XX)$/.test(status));
      let problemCount = 0;
      // the Vault-compatible routes answer Vault's error shape instead (issue 14)
      const vault = Array.isArray(o.op.tags) && o.op.tags.includes('vault');
      for (const [status, response] of clientErrors) {
        const resolved = deref(response);
        if (vault) {
          if (resolved?.content?.['application/json']?.schema?.$ref === VAULT_ERROR_REF && !resolved?.content?.[PROBLEM_MEDIA_TYPE]) problemCount++;
          else wrong.push(`${o.key} ${status}: a vault route, so an application/json response with the VaultError schema`);
          continue;
        }
        const schema = resolved?.content?.[PROBLEM_MEDIA_TYPE]?.schema;
        if (isProblemSchema(schema)) problemCount++;
        else wrong.push(`${o.key} ${status}: not an ${PROBLEM_MEDIA_TYPE} response with the Problem schema`);
      }
      const trivial = o.op['x-keywarden-access'] === 'public' && TRIVIAL_PUBLIC.has(o.key);
      if (problemCount === 0 && !trivial) wrong.push(`${o.key}: no 4xx response referencing the Problem schema`);
    }
    expect(wrong, `operations without problem+json errors:\n  ${wrong.join('\n  ')}\n`).toEqual([]);
  });

  it('(f) serves openapi.yaml unchanged', async () => {
    const res = await tb.request.get('/openapi.yaml').buffer(true).parse((r, cb) => {
      let text = '';
      r.setEncoding('utf8');
      r.on('data', (chunk: string) => (text += chunk));
      r.on('end', () => cb(null, text));
    });
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^application\/yaml/);
    expect(res.body === specText, 'GET /openapi.yaml differs from the openapi.yaml file').toBe(true);
  });
});

describe('(e) openapi.yaml is structurally valid OpenAPI 3.1', () => {
  it('has the required top-level fields', () => {
    expect(spec.openapi).toBe('3.1.0');
    expect(typeof spec.info?.title, 'info.title').toBe('string');
    expect(typeof spec.info?.version, 'info.version').toBe('string');
    expect(spec.paths && typeof spec.paths === 'object', 'paths is an object').toBe(true);
  });

  it('resolves every $ref within the document', () => {
    const refs: Array<{ ref: string; where: string }> = [];
    collectRefs(spec, '#', refs);
    expect(refs.length).toBeGreaterThan(0);
    const broken = refs.filter((r) => resolvePointer(r.ref) === undefined).map((r) => `${r.where}: $ref ${r.ref}`);
    expect(broken, `unresolved $refs:\n  ${broken.join('\n  ')}\n`).toEqual([]);
  });

  it('declares every path template parameter as a required path parameter, and no others', () => {
    const wrong: string[] = [];
    for (const path of Object.keys(spec.paths)) {
      if (!path.startsWith('/')) wrong.push(`${path}: paths must start with /`);
      if (/:[A-Za-z_]/.test(path)) wrong.push(`${path}: use {param}, not :param`);
    }
    for (const o of operations) {
      const template = [...o.path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]);
      // operation-level parameters override path-level ones with the same name and location
      const params = new Map<string, Json>();
      for (const p of [...(o.pathItem.parameters ?? []), ...(o.op.parameters ?? [])]) {
        const resolved = deref(p);
        if (!resolved || typeof resolved.name !== 'string' || !['path', 'query', 'header', 'cookie'].includes(resolved.in)) {
          wrong.push(`${o.key}: malformed parameter ${JSON.stringify(p)}`);
          continue;
        }
        if (!resolved.schema && !resolved.content) wrong.push(`${o.key}: parameter ${resolved.name} has no schema`);
        params.set(`${resolved.in}:${resolved.name}`, resolved);
      }
      for (const name of template) {
        const p = params.get(`path:${name}`);
        if (!p) wrong.push(`${o.key}: path parameter {${name}} is not declared`);
        else if (p.required !== true) wrong.push(`${o.key}: path parameter {${name}} must be required: true`);
      }
      for (const p of params.values()) {
        if (p.in === 'path' && !template.includes(p.name)) wrong.push(`${o.key}: declares path parameter ${p.name} not in the template`);
      }
      const ownKeys = (o.op.parameters ?? []).map((p: Json) => deref(p)).filter(Boolean).map((p: Json) => `${p.in}:${p.name}`);
      if (new Set(ownKeys).size !== ownKeys.length) wrong.push(`${o.key}: duplicate parameters`);
    }
    expect(wrong, `parameter problems:\n  ${wrong.join('\n  ')}\n`).toEqual([]);
  });

  it('gives every operation an operationId, a declared tag and described responses', () => {
    const declaredTags = new Set((spec.tags ?? []).map((t: Json) => t.name));
    const ids = new Map<string, string>();
    const wrong: string[] = [];
    for (const o of operations) {
      const id = o.op.operationId;
      if (typeof id !== 'string' || !id) wrong.push(`${o.key}: no operationId`);
      else if (ids.has(id)) wrong.push(`${o.key}: operationId ${id} also used by ${ids.get(id)}`);
      else ids.set(id, o.key);
      if (!Array.isArray(o.op.tags) || o.op.tags.length === 0) wrong.push(`${o.key}: no tags`);
      for (const t of o.op.tags ?? []) if (!declaredTags.has(t)) wrong.push(`${o.key}: tag ${t} is not declared in the top-level tags`);
      const responses = o.op.responses;
      if (!responses || typeof responses !== 'object' || Object.keys(responses).length === 0) {
        wrong.push(`${o.key}: no responses`);
        continue;
      }
      if (!Object.keys(responses).some((s) => /^[23]/.test(s))) wrong.push(`${o.key}: no success response`);
      for (const [status, response] of Object.entries<Json>(responses)) {
        if (!/^([1-5]\d\d|[1-5]XX|default)$/.test(status)) wrong.push(`${o.key}: invalid response key ${status}`);
        const resolved = deref(response);
        if (typeof resolved?.description !== 'string') wrong.push(`${o.key} ${status}: response has no description`);
      }
      if (o.op.requestBody) {
        const body = deref(o.op.requestBody);
        if (!body?.content || Object.keys(body.content).length === 0) wrong.push(`${o.key}: requestBody has no content`);
      }
    }
    expect(wrong, `operation problems:\n  ${wrong.join('\n  ')}\n`).toEqual([]);
  });

  it('documents the token endpoint with form and JSON bodies and HTTP Basic client authentication', () => {
    const token = spec.paths['/v1/auth/token']?.post;
    expect(Object.keys(token?.requestBody?.content ?? {}).sort()).toEqual(['application/json', 'application/x-www-form-urlencoded']);
    expect(spec.components.securitySchemes.clientBasic).toMatchObject({ type: 'http', scheme: 'basic' });
    expect(token['x-keywarden-client-authentication']).toEqual(expect.arrayContaining(['client_secret_basic', 'client_secret_post']));
  });
});

describe('the response contract check (test/support/contract.ts) and its hook', () => {
  const problem = (status: number, code: string) =>
    JSON.stringify({ type: `https://keywarden.dev/problems/${code}`, title: 'Not found', status, code, detail: 'x', instance: 'req-1' });

  it('checks against the openapi.yaml the broker serves', () => {
    expect(fs.realpathSync(OPENAPI_FILE)).toBe(fs.realpathSync(openApiFile()));
  });

  it('passes responses that match openapi.yaml', () => {
    expect(contractViolations({ method: 'GET', url: '/healthz', status: 200, contentType: 'application/json; charset=utf-8', body: '{"status":"ok"}' })).toEqual([]);
    expect(contractViolations({ method: 'GET', url: '/v1/secrets?limit=5', status: 200, contentType: 'application/json', body: '{"items":[],"nextCursor":null}' })).toEqual([]);
    expect(contractViolations({ method: 'GET', url: '/v1/secrets/db.password', status: 404, contentType: 'application/problem+json', body: problem(404, 'not_found') })).toEqual([]);
    // HEAD is answered by the GET operation, without a body
    expect(contractViolations({ method: 'HEAD', url: '/healthz', status: 200, contentType: 'application/json' })).toEqual([]);
  });

  it('rejects a body that violates the schema, naming method, path, status and the schema error', () => {
    const problems = contractViolations({ method: 'GET', url: '/v1/secrets', status: 200, contentType: 'application/json', body: '{"items":"none"}' });
    expect(problems).toHaveLength(1);
    expect(problems[0]).toContain('GET /v1/secrets -> 200');
    expect(problems[0]).toMatch(/\/items must be array/);
    expect(problems[0]).toMatch(/must have required property 'nextCursor'/);
    expect(() => assertMatchesContract({ method: 'GET', url: '/healthz', status: 200, contentType: 'application/json', body: '{"status":"down"}' })).toThrow(ContractViolation);
  });

  it('rejects an undocumented status, an undocumented content type and a body that is not JSON', () => {
    expect(contractViolations({ method: 'GET', url: '/healthz', status: 418, contentType: 'application/json', body: '{}' })[0]).toMatch(/documents no 418 response/);
    expect(contractViolations({ method: 'GET', url: '/healthz', status: 200, contentType: 'text/html', body: '<p>ok</p>' })[0]).toMatch(/content type text\/html is not documented/);
    expect(contractViolations({ method: 'GET', url: '/healthz', status: 200, contentType: 'application/json', body: 'ok' })[0]).toMatch(/not valid JSON/);
  });

  it('accepts a 429 (stated once, components/responses/TooManyRequests) from operations that authenticate a credential, and only there', () => {
    const limited = JSON.stringify({ type: 'https://keywarden.dev/problems/rate_limited', title: 'Too many requests', status: 429, code: 'rate_limited', detail: 'x', instance: 'req-1', retryAfter: 30 });
    expect(contractViolations({ method: 'GET', url: '/v1/secrets', status: 429, contentType: 'application/problem+json', body: limited })).toEqual([]);
    expect(contractViolations({ method: 'GET', url: '/v1/secrets', status: 429, contentType: 'application/json', body: '{}' })[0]).toMatch(/must be a problem document/);
    // the Vault routes answer it in Vault's shape
    expect(contractViolations({ method: 'GET', url: '/v1/secret/data/app/db', status: 429, contentType: 'application/json', body: '{"errors":["too many failed authentication attempts; try again later"]}' })).toEqual([]);
    expect(contractViolations({ method: 'GET', url: '/v1/secret/data/app/db', status: 429, contentType: 'application/problem+json', body: limited })[0]).toMatch(/Vault's error/);
    // an operation that authenticates nobody (health) does not
    expect(contractViolations({ method: 'GET', url: '/healthz', status: 429, contentType: 'application/problem+json', body: limited })[0]).toMatch(/documents no 429 response/);
  });

  it('accepts only allowlisted problem documents for requests openapi.yaml does not describe', () => {
    expect(contractViolations({ method: 'GET', url: '/v1/nothing-here', status: 404, contentType: 'application/problem+json', body: problem(404, 'route_not_found') })).toEqual([]);
    expect(contractViolations({ method: 'GET', url: '/v1/nothing-here', status: 200, contentType: 'application/json', body: '{}' })[0]).toMatch(/no operation in openapi.yaml/);
    expect(contractViolations({ method: 'GET', url: '/v1/nothing-here', status: 404, contentType: 'application/problem+json', body: problem(404, 'surprise') })[0]).toMatch(/not in UNDOCUMENTED_REQUEST_RESPONSES/);
  });

  it('checks fetch responses of a broker in another process on request', async () => {
    const ok = new Response('{"status":"ok"}', { status: 200, headers: { 'Content-Type': 'application/json' } });
    await assertFetchMatchesContract('GET', 'http://127.0.0.1:1/healthz', ok);
    expect(await ok.json()).toEqual({ status: 'ok' }); // the body is still there for the test
    const bad = new Response('{"status":"ok","checks":{}}', { status: 503, headers: { 'Content-Type': 'application/json' } });
    await expect(assertFetchMatchesContract('GET', 'http://127.0.0.1:1/healthz', bad)).rejects.toThrow(/GET \/healthz -> 503 .*documents no 503 response/);
  });

  it('is hooked into supertest: a response that violates openapi.yaml rejects the request', async () => {
    // not an Express app, so only the client-side (supertest) check sees it
    const handler = (_req: http.IncomingMessage, res: http.ServerResponse) => {
      res.writeHead(200, { 'Content-Type': 'application/json' }).end('{"status":"down"}');
    };
    await expect(supertest(handler).get('/healthz')).rejects.toThrow(/GET \/healthz -> 200 application\/json: body does not match/);
    const conforming = (_req: http.IncomingMessage, res: http.ServerResponse) => {
      res.writeHead(200, { 'Content-Type': 'application/json' }).end('{"status":"ok"}');
    };
    expect((await supertest(conforming).get('/healthz')).status).toBe(200);
  });

  it('is hooked into every Express app response: fetch against a listening app records the violation', async () => {
    const app = express();
    app.get('/healthz', (_req, res) => void res.json({ status: 'down' }));
    const server = http.createServer(app);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const res = await fetch(`http://127.0.0.1:${port}/healthz`);
      expect(res.status).toBe(200);
      await res.text();
      // the hook's afterEach would fail this test with it; take it here instead
      const recorded = drainServerSideViolations();
      expect(recorded).toHaveLength(1);
      expect(recorded[0]).toContain('GET /healthz -> 200 application/json: body does not match');
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
