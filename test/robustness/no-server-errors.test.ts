import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import supertest from 'supertest';
import type { MountedRoute } from '../../src/http/routes.js';
import { vaultPrefixes } from '../../src/http/vault-errors.js';
import { bearer, startTestBroker, type TestBroker } from '../support/broker.js';

/**
 * Bad input must be a 4xx problem, never a 500 and never a crash. Every mounted route gets the
 * same battery of malformed bodies, queries and path parameters, as an admin (who passes every
 * authorization check and so reaches the deepest code) and as a client.
 */
const PATH_VALUES = ['x'.repeat(300), '..', '%00', 'a%2Fb', "'; drop table secrets;--", '%E0%A4%A', '-1', '0'];
const BODIES: unknown[] = [
  null,
  [],
  'string',
  42,
  { name: 123 },
  { name: 'ok', content: '***not base64***' },
  { name: 'ok', value: 'v', labels: 'nope' },
  { name: 'ok', value: 'v', expiry: 'yesterday' },
  { add: 'x', remove: {} },
  { names: [1, 2] },
  { version: 'one' },
  { image: 'not an image ref' },
  { image: '127.0.0.1:1/repo:tag' },
  { image: '127.0.0.1:1/repo@sha256:' + '0'.repeat(64) },
  { audience: '', ttl: -5 },
  { jti: '' },
  { grant_type: 'client_credentials', client_id: ['a'], client_secret: {} },
  { grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange', subject_token: 'a.b.c' },
  { grant_type: 'urn:keywarden:bootstrap', bootstrap_token: 'x'.repeat(1000) },
  { ['__proto__']: { polluted: true } },
  { name: 'ok', deeply: { nested: { object: { with: { many: ['levels'] } } } } },
];
const QUERIES = ['limit=-1', 'limit=abc', 'cursor=%%%', 'cursor=eyJ4Ijp9', 'since=not-a-date', 'label=a&label=b', 'before=never', 'days=0', 'image=:::', 'version=x'];

function fill(path: string, value: string): string {
  return path.replace(/\{[^}]+\}/g, value);
}

describe('no route answers bad input with a 5xx', () => {
  let t: TestBroker;
  let mountedRoutes: readonly MountedRoute[];
  let clientToken: string;

  beforeAll(async () => {
    t = await startTestBroker({ env: { KEYWARDEN_GATE_TIMEOUT_MS: '500' } });
    mountedRoutes = t.broker.routes;
    await t.request.post('/v1/groups').set(bearer(t.adminKey)).send({ name: 'g' });
    await t.request.post('/v1/secrets').set(bearer(t.adminKey)).send({ name: 's', value: 'v', groups: ['g'] });
    ({ token: clientToken } = await t.client('c', ['g']));
  }, 60_000);

  afterAll(async () => {
    await t?.close();
  });

  it('covers every mounted route', () => {
    expect(mountedRoutes.length).toBeGreaterThan(40);
  });

  it('answers malformed requests with 4xx problems', async () => {
    const failures: string[] = [];
    const agent = supertest(t.broker.app);
    const check = async (method: string, url: string, auth: Record<string, string>, body?: unknown, raw?: string) => {
      let req = (agent as any)[method](url).set(auth).timeout(15_000);
      if (raw !== undefined) req = req.set('content-type', 'application/json').send(raw);
      else if (body !== undefined) req = req.send(body as object);
      const res = await req;
      if (res.status >= 500 && !(res.status === 502 || res.status === 503 || res.status === 504)) {
        failures.push(`${method.toUpperCase()} ${url} body=${JSON.stringify(body ?? raw)?.slice(0, 80)} -> ${res.status} ${res.text.slice(0, 160)}`);
      }
      const vaultRoute = vaultPrefixes(t.config.vaultKvMount).some((prefix) => url.startsWith(prefix));
      if (res.status >= 400 && vaultRoute) {
        // the Vault-compatible routes answer in Vault's error shape, which Vault clients parse (issue 14)
        const body = (() => {
          try {
            return JSON.parse(res.text);
          } catch {
            return undefined;
          }
        })();
        if (res.headers['content-type'] !== 'application/json' || !Array.isArray(body?.errors)) {
          failures.push(`${method.toUpperCase()} ${url} -> ${res.status} without Vault's {"errors": [...]} (${res.headers['content-type']})`);
        }
      } else if (res.status >= 400 && !String(res.headers['content-type'] ?? '').includes('application/problem+json')) {
        failures.push(`${method.toUpperCase()} ${url} -> ${res.status} without problem+json (${res.headers['content-type']})`);
      }
    };
    for (const route of mountedRoutes) {
      if (route.path === '/v1/audit/export') continue;
      // the client token only reaches past authorization on client routes
      const auths = route.access === 'client' ? [bearer(clientToken)] : [bearer(t.adminKey)];
      for (const auth of auths) {
        if (route.path.includes('{')) {
          for (const value of PATH_VALUES) {
            await check(route.method, fill(route.path, value), auth, route.method === 'get' || route.method === 'delete' ? undefined : {});
          }
        }
        const base = fill(route.path, 's');
        if (route.method === 'get') for (const q of QUERIES) await check(route.method, `${base}?${q}`, auth);
        if (route.method !== 'get' && route.method !== 'delete') {
          for (const body of BODIES) await check(route.method, base, auth, body, JSON.stringify(body));
          await check(route.method, base, auth, undefined, '{"unterminated": ');
          await check(route.method, base, auth, undefined, '{"a":1}{"b":2}');
        }
      }
    }
    expect(failures, failures.join('\n')).toEqual([]);
  }, 240_000);
});
