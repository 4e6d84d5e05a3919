import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { auth, expectProblem, markSensitive } from './helpers.js';

/**
 * The 401/403 matrix over every operator and client route. Allowed callers are sent a probe
 * that gets past authorization without changing state (an invalid body → 400, an unknown name
 * → 404, or a read → 200), which proves the route let them through; everyone else must get a
 * problem+json 401 or 403 with a stable code.
 */
type Caller = 'anonymous' | 'badApiKey' | 'badJwt' | 'client' | 'auditor' | 'writer' | 'signer' | 'admin';
type Route = { method: 'get' | 'post' | 'put' | 'patch' | 'delete'; path: string; body?: unknown; allow: 'client' | Array<'writer' | 'auditor' | 'signer' | 'admin'>; probe: number };

const ROUTES: Route[] = [
  { method: 'post', path: '/v1/secrets', body: { name: 'bad name!', value: 'x' }, allow: ['writer'], probe: 400 },
  { method: 'get', path: '/v1/secrets', allow: ['writer', 'auditor'], probe: 200 },
  { method: 'get', path: '/v1/secrets/s1', allow: ['writer', 'auditor'], probe: 200 },
  { method: 'patch', path: '/v1/secrets/s1', body: { bogus: 1 }, allow: ['writer'], probe: 400 },
  { method: 'delete', path: '/v1/secrets/no-such-secret', allow: ['writer'], probe: 404 },
  { method: 'post', path: '/v1/secrets/s1/versions', body: {}, allow: ['writer'], probe: 400 },
  { method: 'get', path: '/v1/secrets/s1/versions', allow: ['writer', 'auditor'], probe: 200 },
  { method: 'post', path: '/v1/secrets/s1/rollback', body: { version: 0 }, allow: ['writer'], probe: 400 },
  { method: 'get', path: '/v1/secrets/s1/content', allow: ['writer'], probe: 200 },
  { method: 'post', path: '/v1/groups', body: {}, allow: ['writer'], probe: 400 },
  { method: 'get', path: '/v1/groups', allow: ['writer', 'auditor'], probe: 200 },
  { method: 'get', path: '/v1/groups/g1', allow: ['writer', 'auditor'], probe: 200 },
  { method: 'patch', path: '/v1/groups/g1', body: { bogus: 1 }, allow: ['writer'], probe: 400 },
  { method: 'delete', path: '/v1/groups/no-such-group', allow: ['writer'], probe: 404 },
  { method: 'put', path: '/v1/groups/g1/secrets', body: { add: 's1' }, allow: ['writer'], probe: 400 },
  { method: 'put', path: '/v1/groups/g1/clients', body: { add: 5 }, allow: ['writer'], probe: 400 },
  { method: 'post', path: '/v1/clients', body: {}, allow: ['writer'], probe: 400 },
  { method: 'get', path: '/v1/clients', allow: ['writer', 'auditor'], probe: 200 },
  { method: 'get', path: '/v1/clients/c1', allow: ['writer', 'auditor'], probe: 200 },
  { method: 'patch', path: '/v1/clients/c1', body: { enabled: 'no' }, allow: ['writer'], probe: 400 },
  { method: 'delete', path: '/v1/clients/no-such-client', allow: ['writer'], probe: 404 },
  { method: 'put', path: '/v1/clients/c1/groups', body: { x: 1 }, allow: ['writer'], probe: 400 },
  { method: 'post', path: '/v1/clients/no-such-client/secret', allow: ['writer'], probe: 404 },
  { method: 'post', path: '/v1/api-keys', body: {}, allow: ['admin'], probe: 400 },
  { method: 'get', path: '/v1/api-keys', allow: ['admin'], probe: 200 },
  { method: 'delete', path: '/v1/api-keys/no-such-key', allow: ['admin'], probe: 404 },
  { method: 'post', path: '/v1/jwt-keys/rotate', allow: ['admin'], probe: 200 },
  { method: 'get', path: '/v1/client/secrets', allow: 'client', probe: 200 },
  { method: 'get', path: '/v1/client/secrets/s1', allow: 'client', probe: 200 },
  { method: 'post', path: '/v1/client/secrets/batch', body: { names: [] }, allow: 'client', probe: 400 },
  // the auditors' console additions (issue 16)
  { method: 'get', path: '/v1/reports/activity?window=hour', allow: ['auditor'], probe: 200 },
  { method: 'get', path: '/v1/reports/audit-events?max=1', allow: ['auditor'], probe: 200 },
  { method: 'get', path: '/v1/audit/status', allow: ['auditor'], probe: 200 },
  { method: 'get', path: '/v1/policies/no-such-policy/versions', allow: ['auditor', 'signer'], probe: 404 },
];

const CALLERS: Caller[] = ['anonymous', 'badApiKey', 'badJwt', 'client', 'auditor', 'writer', 'signer', 'admin'];

function expected(route: Route, caller: Caller): { status: number; code?: string } {
  if (caller === 'anonymous') return { status: 401, code: 'unauthenticated' };
  if (caller === 'badApiKey') return { status: 401, code: 'invalid_api_key' };
  if (caller === 'badJwt') return { status: 401, code: 'invalid_token' };
  if (route.allow === 'client') return caller === 'client' ? { status: route.probe } : { status: 403, code: 'forbidden' };
  if (caller === 'client') return { status: 403, code: 'forbidden' };
  if (caller === 'admin' || route.allow.includes(caller as 'writer')) return { status: route.probe };
  return { status: 403, code: 'forbidden' };
}

describe('authorization matrix', () => {
  let tb: TestBroker;
  const creds: Partial<Record<Caller, string>> = {};

  beforeAll(async () => {
    tb = await startTestBroker();
    const a = auth(tb.adminKey);
    expect((await tb.request.post('/v1/groups').set(a).send({ name: 'g1' })).status).toBe(201);
    expect((await tb.request.post('/v1/secrets').set(a).send({ name: 's1', value: 'matrix-secret-value', groups: ['g1'] })).status).toBe(201);
    markSensitive('matrix-secret-value');
    const client = await tb.client('c1', ['g1']);
    markSensitive(client.clientSecret);
    creds.client = client.token;
    creds.auditor = await tb.apiKey('auditor');
    creds.writer = await tb.apiKey('writer');
    creds.signer = await tb.apiKey('signer');
    creds.admin = tb.adminKey;
    creds.badApiKey = `kw_${'A'.repeat(43)}`;
    creds.badJwt = 'eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln';
    for (const k of Object.values(creds)) markSensitive(k!);
  });
  afterAll(async () => {
    await tb?.close();
  });

  it('covers every route in the issue once', () => {
    expect(new Set(ROUTES.map((r) => `${r.method} ${r.path}`)).size).toBe(ROUTES.length);
  });

  for (const route of ROUTES) {
    it(`${route.method.toUpperCase()} ${route.path}`, async () => {
      for (const caller of CALLERS) {
        let req = tb.request[route.method](route.path);
        if (caller !== 'anonymous') req = req.set(auth(creds[caller]!));
        const res = route.body !== undefined ? await req.send(route.body as object) : await req;
        const want = expected(route, caller);
        if (want.status >= 400) {
          const body = expectProblem(res, want.status, want.code);
          if (want.status === 401) expect(res.headers['www-authenticate']).toMatch(/^Bearer /);
          if (route.probe === 400 && want.status === 403) expect(body.code).not.toBe('invalid_request');
        } else {
          expect(res.status, `${caller}: ${res.text.slice(0, 200)}`).toBe(want.status);
        }
      }
    });
  }

  it('an unknown route is a problem too', async () => {
    expectProblem(await tb.request.get('/v1/nope').set(auth(tb.adminKey)), 404, 'route_not_found');
  });

  it('the auditor may read metadata but never a value', async () => {
    const res = await tb.request.get('/v1/secrets/s1/content').set(auth(creds.auditor!));
    expectProblem(res, 403, 'forbidden');
    const meta = await tb.request.get('/v1/secrets/s1').set(auth(creds.auditor!));
    expect(meta.status).toBe(200);
    expect(JSON.stringify(meta.body)).not.toContain('matrix-secret-value');
  });
});
