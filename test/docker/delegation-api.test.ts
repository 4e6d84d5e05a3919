/**
 * The broker side of the Docker plugin (issue 13): the capabilities an admin gives a client
 * (actsFor, releaseGate), delegated secret reads and lists, the release gate for a client with
 * the container's effective user, and the plugin's own audit events. Grants and denials both,
 * against a real broker (SQLite, or PostgreSQL with KEYWARDEN_TEST_DATABASE_URL) and, for the
 * gate, a real docker-registry.
 */
import supertest from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuditEvent } from '../../src/audit/audit-types.js';
import { capture } from '../support/audit-events.js';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { upsertPolicy } from '../support/policies.js';
import { pushTestImage, registryAvailable, startRegistry, type TestRegistry } from '../support/registry.js';
import { auth, expectProblem, markSensitive, unb64 } from '../core/helpers.js';

const reg = registryAvailable();
const describeRegistry = reg.ok ? describe : describe.skip;

const CONTEXT = { source: 'secretprovider', service: 'payments', serviceId: 'svc1', task: 'payments.1', taskId: 'task1', image: 'registry.local/payments:1' } as const;

let tb: TestBroker;
let registry: TestRegistry | undefined;
let admin: Record<string, string>;
let writer: Record<string, string>;
/** access tokens by client name */
const token: Record<string, string> = {};

/** Creates a client as `who` with `body`, and (when created) gets it an access token. */
async function createClient(who: Record<string, string>, body: Record<string, unknown>) {
  const res = await tb.request.post('/v1/clients').set(who).send(body);
  if (res.status === 201) {
    markSensitive(res.body.clientSecret);
    const t = await supertest(tb.broker.app)
      .post('/v1/auth/token')
      .type('form')
      .send({ grant_type: 'client_credentials', client_id: res.body.clientId, client_secret: res.body.clientSecret });
    expect(t.status, t.text).toBe(200);
    token[String(body.name)] = t.body.access_token;
  }
  return res;
}

const as = (name: string) => auth(token[name]!);
const read = (caller: string, body: Record<string, unknown>) => tb.request.post('/v1/client/delegated/secrets/read').set(as(caller)).send(body);
const list = (caller: string, body: Record<string, unknown>) => tb.request.post('/v1/client/delegated/secrets/list').set(as(caller)).send(body);
const report = (caller: string, events: unknown[]) => tb.request.post('/v1/client/docker-plugin/events').set(as(caller)).send({ events });
const only = (events: AuditEvent[], action: string) => events.filter((e) => e.action === action);

beforeAll(async () => {
  if (reg.ok) registry = await startRegistry();
  tb = await startTestBroker({ env: registry ? { KEYWARDEN_INSECURE_REGISTRIES: registry.hostPort } : {} });
  admin = auth(tb.adminKey);
  writer = auth(await tb.apiKey('writer'));
  for (const g of ['payments', 'other']) expect((await tb.request.post('/v1/groups').set(writer).send({ name: g })).status).toBe(201);
  const secrets = [
    { name: 'payments.db', value: 'payments-db-password', groups: ['payments'], metadata: { mode: '0400', owner: '1000', group: '1000' } },
    { name: 'payments.tls', value: 'payments-tls-key-pem', groups: ['payments'], metadata: { mode: '0440' } },
    { name: 'other.key', value: 'other-key-value-xyz', groups: ['other'] },
  ];
  for (const s of secrets) {
    markSensitive(s.value);
    const res = await tb.request.post('/v1/secrets').set(writer).send({ ...s, labels: { app: s.name } });
    expect(res.status, res.text).toBe(201);
  }
  expect((await createClient(admin, { name: 'payments', groups: ['payments'] })).status).toBe(201);
  expect((await createClient(admin, { name: 'other', groups: ['other'] })).status).toBe(201);
  expect((await createClient(admin, { name: 'off', groups: ['payments'] })).status).toBe(201);
  expect((await tb.request.patch('/v1/clients/off').set(admin).send({ enabled: false })).status).toBe(200);
  // a delegate of its own: acting for it must not reach what it may act for
  expect((await createClient(admin, { name: 'relay', actsFor: ['other'] })).status).toBe(201);
  expect((await createClient(admin, { name: 'plugin', actsFor: ['payments', 'off', 'ghost', 'relay'], releaseGate: true })).status).toBe(201);
  expect((await createClient(admin, { name: 'plugin-no-gate', actsFor: ['payments'] })).status).toBe(201);
  expect((await createClient(admin, { name: 'plain', groups: ['payments'] })).status).toBe(201);
});

afterAll(async () => {
  await tb?.close();
  await registry?.stop();
});

describe('client capabilities: actsFor and releaseGate (admin only)', () => {
  it('a new client has none; an admin sets them, and GET and the list show them', async () => {
    const plain = await tb.request.get('/v1/clients/plain').set(writer);
    expect(plain.body).toMatchObject({ actsFor: [], releaseGate: false });
    const plugin = await tb.request.get('/v1/clients/plugin').set(writer);
    expect(plugin.body).toMatchObject({ actsFor: ['payments', 'off', 'ghost', 'relay'], releaseGate: true });
    const listed = await tb.request.get('/v1/clients').set(writer);
    expect(listed.body.items.find((c: { name: string }) => c.name === 'plugin-no-gate')).toMatchObject({ actsFor: ['payments'], releaseGate: false });
  });

  it('a writer may not set actsFor or releaseGate (403, audited); an admin may, and the change is audited', async () => {
    const created = await capture(tb, () => createClient(writer, { name: 'sneaky', actsFor: ['payments'] }));
    expectProblem(created.result, 403, 'admin_required');
    expect((await tb.request.get('/v1/clients/sneaky').set(admin)).status).toBe(404);
    expect(only(created.events, 'authz.deny')).toMatchObject([{ actorKind: 'operator', resourceName: 'sneaky', outcome: 'deny', details: { fields: ['actsFor'] } }]);

    expectProblem(await tb.request.patch('/v1/clients/plain').set(writer).send({ releaseGate: true }), 403, 'admin_required');
    expectProblem(await tb.request.patch('/v1/clients/plain').set(writer).send({ actsFor: [] }), 403, 'admin_required');
    expect((await tb.request.get('/v1/clients/plain').set(admin)).body).toMatchObject({ actsFor: [], releaseGate: false });
    // a writer still manages the rest of a delegate client
    expect((await tb.request.patch('/v1/clients/plugin').set(writer).send({ description: 'the docker plugin' })).status).toBe(200);

    const granted = await capture(tb, () => tb.request.patch('/v1/clients/plain').set(admin).send({ actsFor: ['other', 'other'], releaseGate: true }));
    expect(granted.result.status).toBe(200);
    expect(granted.result.body).toMatchObject({ actsFor: ['other'], releaseGate: true });
    expect(only(granted.events, 'client.update')).toMatchObject([{ resourceName: 'plain', details: { fields: ['actsFor', 'releaseGate'], actsFor: ['other'], releaseGate: true } }]);
    expect((await tb.request.patch('/v1/clients/plain').set(admin).send({ actsFor: [], releaseGate: false })).body).toMatchObject({ actsFor: [], releaseGate: false });
    expectProblem(await tb.request.patch('/v1/clients/plain').set(admin).send({ actsFor: ['bad name!'] }), 400, 'invalid_request');
  });

  it('deleting a client takes it out of every actsFor (a new client of that name inherits nothing)', async () => {
    expect((await createClient(admin, { name: 'short-lived' })).status).toBe(201);
    expect((await createClient(admin, { name: 'delegate-x', actsFor: ['short-lived', 'payments'] })).status).toBe(201);
    const removed = await capture(tb, () => tb.request.delete('/v1/clients/short-lived').set(writer));
    expect(removed.result.status).toBe(204);
    expect((await tb.request.get('/v1/clients/delegate-x').set(admin)).body.actsFor).toEqual(['payments']);
    expect(only(removed.events, 'client.update')).toMatchObject([{ resourceName: 'delegate-x', details: { fields: ['actsFor'], actsFor: ['payments'] } }]);
    expect((await createClient(admin, { name: 'short-lived', groups: ['payments'] })).status).toBe(201);
    expectProblem(await read('delegate-x', { client: 'short-lived', secret: 'payments.db' }), 403, 'not_delegated');
  });
});

describe('delegated secret reads', () => {
  it('a delegate reads a secret granted to the client it acts for, audited with service, task and image', async () => {
    const { result: res, events } = await capture(tb, () => read('plugin', { client: 'payments', secret: 'payments.db', context: CONTEXT }));
    expect(res.status, res.text).toBe(200);
    expect(res.headers['cache-control']).toBe('no-store');
    expect(unb64(res.body.content)).toBe('payments-db-password');
    expect(res.body).toMatchObject({ name: 'payments.db', version: 1, metadata: { mode: '0400', owner: '1000', group: '1000' }, labels: { app: 'payments.db' }, expiry: null });
    // the same body the client itself gets
    const own = await tb.request.get('/v1/client/secrets/payments.db').set(as('payments'));
    expect(res.body).toEqual(own.body);
    const [event] = only(events, 'secret.read');
    expect(event).toMatchObject({
      actorKind: 'client',
      actorName: 'plugin',
      resourceKind: 'secret',
      resourceName: 'payments.db',
      outcome: 'allow',
      details: { via: 'delegated', onBehalfOf: 'payments', version: 1, group: 'payments', ...CONTEXT },
    });
    // the last-read mark is the reading client's (the access report shows payments read it)
    const ids = Object.fromEntries((await tb.broker.services.db('clients').select('id', 'name')).map((r: { id: number; name: string }) => [r.name, Number(r.id)]));
    const marks = await tb.broker.services.db('secret_reads').select('client_id');
    expect(marks.map((m: { client_id: number }) => Number(m.client_id))).toContain(ids.payments);
    expect(marks.map((m: { client_id: number }) => Number(m.client_id))).not.toContain(ids.plugin);
  });

  it('a client without actsFor for that client gets 403 not_delegated, on the record', async () => {
    const { result, events } = await capture(tb, () => read('plain', { client: 'payments', secret: 'payments.db', context: CONTEXT }));
    expectProblem(result, 403, 'not_delegated');
    expect(only(events, 'secret.read')).toMatchObject([
      { actorName: 'plain', resourceName: 'payments.db', outcome: 'deny', reason: 'not_delegated', details: { via: 'delegated', onBehalfOf: 'payments', service: 'payments' } },
    ]);
    // a client is not implicitly its own delegate either
    expectProblem(await read('payments', { client: 'payments', secret: 'payments.db' }), 403, 'not_delegated');
  });

  it('a disabled, unknown or unlisted client: the same 403, revealing nothing', async () => {
    const strip = (body: Record<string, unknown>, name: string) => ({ ...body, instance: undefined, detail: String(body.detail).split(name).join('<c>') });
    const disabled = expectProblem(await read('plugin', { client: 'off', secret: 'payments.db' }), 403, 'not_delegated');
    const unknown = expectProblem(await read('plugin', { client: 'ghost', secret: 'payments.db' }), 403, 'not_delegated');
    const unlisted = expectProblem(await read('plugin', { client: 'other', secret: 'other.key' }), 403, 'not_delegated');
    expect(strip(disabled, 'off')).toEqual(strip(unknown, 'ghost'));
    expect(strip(unlisted, 'other')).toEqual(strip(unknown, 'ghost'));
    // one level: acting for relay does not reach what relay may act for
    expectProblem(await read('plugin', { client: 'other', secret: 'other.key' }), 403, 'not_delegated');
    expectProblem(await read('plugin', { client: 'relay', secret: 'other.key' }), 404, 'not_found');
  });

  it('a secret not granted to the client (or missing) is 404, as on the client route, and never delivered', async () => {
    const { result, events } = await capture(tb, () => read('plugin', { client: 'payments', secret: 'other.key', context: CONTEXT }));
    const body = expectProblem(result, 404);
    expect(result.text).not.toContain(Buffer.from('other-key-value-xyz').toString('base64'));
    const direct = expectProblem(await tb.request.get('/v1/client/secrets/other.key').set(as('payments')), 404);
    expect(body.code).toBe(direct.code);
    expect(only(events, 'secret.read')).toMatchObject([{ actorName: 'plugin', resourceName: 'other.key', outcome: 'deny', details: { via: 'delegated', onBehalfOf: 'payments' } }]);
    expectProblem(await read('plugin', { client: 'payments', secret: 'no-such-secret' }), 404, body.code);
  });

  it('strict bodies: unknown keys and bad context values are 400', async () => {
    expectProblem(await read('plugin', { client: 'payments', secret: 'payments.db', extra: 1 }), 400, 'invalid_request');
    expectProblem(await read('plugin', { client: 'payments', secret: 'payments.db', context: { source: 'elsewhere' } }), 400, 'invalid_request');
    expectProblem(await read('plugin', { client: 'payments', secret: 'payments.db', context: { service: 'x'.repeat(257) } }), 400, 'invalid_request');
    expectProblem(await read('plugin', { client: 'payments', secret: 'payments.db', context: { pid: '1' } }), 400, 'invalid_request');
    expectProblem(await list('plugin', { client: 'payments', includeContent: 'yes' }), 400, 'invalid_request');
    // operators do not use the client routes
    expectProblem(await tb.request.post('/v1/client/delegated/secrets/read').set(admin).send({ client: 'payments', secret: 'payments.db' }), 403);
  });
});

describe('delegated secret lists', () => {
  it('without content: every granted secret, no values, one secret.list event', async () => {
    const { result: res, events } = await capture(tb, () => list('plugin', { client: 'payments', context: { source: 'volume', volume: 'payments-api', container: 'c1' } }));
    expect(res.status, res.text).toBe(200);
    expect(res.body.client).toBe('payments');
    expect(res.body.items.map((i: { name: string }) => i.name)).toEqual(['payments.db', 'payments.tls']);
    expect(res.body.items[0]).toMatchObject({ version: 1, metadata: { mode: '0400', owner: '1000' }, labels: { app: 'payments.db' } });
    expect(res.body.items[0]).not.toHaveProperty('content');
    expect(res.text).not.toContain(Buffer.from('payments-db-password').toString('base64'));
    expect(only(events, 'secret.read')).toEqual([]);
    expect(only(events, 'secret.list')).toMatchObject([
      { actorName: 'plugin', resourceKind: 'client', resourceName: 'payments', outcome: 'allow', details: { via: 'delegated', onBehalfOf: 'payments', count: 2, volume: 'payments-api', container: 'c1' } },
    ]);
  });

  it('with content: the values, each an audited read', async () => {
    const { result: res, events } = await capture(tb, () => list('plugin', { client: 'payments', includeContent: true, context: { source: 'volume', volume: 'payments-api' } }));
    expect(res.status, res.text).toBe(200);
    expect(res.body.items.map((i: { name: string; content: string }) => [i.name, unb64(i.content)])).toEqual([
      ['payments.db', 'payments-db-password'],
      ['payments.tls', 'payments-tls-key-pem'],
    ]);
    const reads = only(events, 'secret.read');
    expect(reads.map((e) => e.resourceName).sort()).toEqual(['payments.db', 'payments.tls']);
    for (const e of reads) expect(e).toMatchObject({ actorName: 'plugin', outcome: 'allow', details: { via: 'delegated', onBehalfOf: 'payments', volume: 'payments-api' } });
    expect(only(events, 'secret.list')).toEqual([]);
  });

  it('the same 403 rules, audited as a secret.list deny', async () => {
    const { result, events } = await capture(tb, () => list('plain', { client: 'payments', includeContent: true }));
    expectProblem(result, 403, 'not_delegated');
    expect(only(events, 'secret.list')).toMatchObject([{ actorName: 'plain', resourceName: 'payments', outcome: 'deny' }]);
    expectProblem(await list('plugin', { client: 'off' }), 403, 'not_delegated');
    expectProblem(await list('plugin', { client: 'ghost', includeContent: true }), 403, 'not_delegated');
    // a delegated client with no grants: an empty list
    expect((await list('plugin', { client: 'relay', includeContent: true })).body).toEqual({ client: 'relay', items: [] });
  });
});

describe('plugin events', () => {
  const event = (over: Record<string, unknown> = {}) => ({ action: 'docker.volume.path', outcome: 'allow', resource: { kind: 'volume', name: 'payments-api' }, details: { container: 'c1' }, ...over });

  it('a delegate records its own events, marked reportedBy docker-plugin', async () => {
    const { result: res, events } = await capture(tb, () =>
      report('plugin', [event(), event({ action: 'docker.authz.allow', resource: undefined, details: { method: 'GET', uri: '/containers/json', reportedBy: 'someone-else' } }), event({ action: 'docker.volume.unmount', outcome: 'error', reason: 'not mounted' })]),
    );
    expect(res.status, res.text).toBe(202);
    expect(res.body).toEqual({ recorded: 3 });
    expect(events.map((e) => [e.action, e.actorName, e.outcome, e.details.reportedBy])).toEqual([
      ['docker.volume.path', 'plugin', 'allow', 'docker-plugin'],
      ['docker.authz.allow', 'plugin', 'allow', 'docker-plugin'],
      ['docker.volume.unmount', 'plugin', 'error', 'docker-plugin'],
    ]);
    expect(events[0]).toMatchObject({ resourceKind: 'volume', resourceName: 'payments-api', details: { container: 'c1' } });
    expect(events[2]!.reason).toBe('not mounted');
    // actsFor alone is enough
    expect((await report('plugin-no-gate', [event()])).status).toBe(202);
  });

  it('validation: the action must be docker.*, 1..100 events, details at most 4 KB', async () => {
    expectProblem(await report('plugin', [event({ action: 'secret.read' })]), 400, 'invalid_request');
    expectProblem(await report('plugin', [event({ action: 'docker.' })]), 400, 'invalid_request');
    expectProblem(await report('plugin', [event({ action: 'docker.Volume' })]), 400, 'invalid_request');
    expectProblem(await report('plugin', [event({ outcome: 'maybe' })]), 400, 'invalid_request');
    expectProblem(await report('plugin', [event({ reason: 'r'.repeat(501) })]), 400, 'invalid_request');
    expectProblem(await report('plugin', [event({ details: { blob: 'x'.repeat(4100) } })]), 400, 'invalid_request');
    expectProblem(await report('plugin', [event({ actor: 'admin' })]), 400, 'invalid_request');
    expectProblem(await report('plugin', []), 400, 'invalid_request');
    expectProblem(await report('plugin', Array.from({ length: 101 }, () => event())), 400, 'invalid_request');
    expect((await report('plugin', Array.from({ length: 100 }, () => event()))).body).toEqual({ recorded: 100 });
  });

  it('a client that is no delegate gets 403, on the record', async () => {
    const { result, events } = await capture(tb, () => report('plain', [event()]));
    expectProblem(result, 403, 'not_a_plugin');
    expect(events.map((e) => [e.action, e.actorName, e.outcome])).toEqual([['authz.deny', 'plain', 'deny']]);
    expectProblem(await tb.request.post('/v1/client/docker-plugin/events').set(admin).send({ events: [event()] }), 403);
  });
});

describe('the release gate for a client', () => {
  it('needs releaseGate: 403 release_gate_not_allowed otherwise, on the record', async () => {
    const { result, events } = await capture(tb, () => tb.request.post('/v1/client/releases').set(as('plugin-no-gate')).send({ image: 'r.example.com/x:1', context: { service: 'payments' } }));
    expectProblem(result, 403, 'release_gate_not_allowed');
    expect(events.map((e) => [e.action, e.actorName, e.outcome])).toEqual([['authz.deny', 'plugin-no-gate', 'deny']]);
    expect(only(events, 'release.decide')).toEqual([]);
    expectProblem(await tb.request.post('/v1/client/releases').set(as('plain')).send({ image: 'r.example.com/x:1' }), 403, 'release_gate_not_allowed');
    expectProblem(await tb.request.post('/v1/client/releases').set(as('plugin')).send({ image: 'r.example.com/x:1', context: { containerUser: 'x'.repeat(257) } }), 400);
    expectProblem(await tb.request.post('/v1/client/releases').set(as('plugin')).send({ image: 'r.example.com/x:1', user: 'root' }), 400);
  });

  it('a plugin with releaseGate gets the same decision body as POST /v1/releases (no policy: default deny)', async () => {
    const res = await tb.request.post('/v1/client/releases').set(as('plugin')).send({ image: 'r.example.com/none/app:1', context: { source: 'authz', container: 'c9' } });
    expect(res.status, res.text).toBe(200);
    expect(res.body).toMatchObject({ decision: 'deny', policy: null, decidedBy: 'client:plugin', checks: [{ type: 'policy', ok: false, code: 'no_policy' }] });
    expect(res.headers.location).toBe(`/v1/releases/${res.body.id}`);
    expect((await tb.request.get(`/v1/releases/${res.body.id}`).set(admin)).body).toEqual(res.body);
  });
});

describeRegistry('the release gate judges the container’s effective user (real registry)', () => {
  let R: string;
  const decideAs = async (image: string, context?: Record<string, string>) => {
    const res = await tb.request.post('/v1/client/releases').set(as('plugin')).send({ image, ...(context ? { context } : {}) });
    expect(res.status, res.text).toBe(200);
    return res.body as { id: string; decision: string; cached: boolean; decidedBy: string; checks: Array<{ type: string; ok: boolean; detail: string; code?: string }> };
  };
  const nonRoot = (d: { checks: Array<{ type: string; ok: boolean; detail: string; code?: string }> }) => d.checks.find((c) => c.type === 'nonRootUser');

  beforeAll(async () => {
    R = registry!.hostPort;
    await upsertPolicy(tb, admin, { name: 'docker-nonroot', images: [`${R}/dk/*`], rules: { nonRootUser: true } });
    await pushTestImage(R, 'dk/app', 'v1', { user: 'app' });
    await pushTestImage(R, 'dk/rootimg', 'v1', {});
  });

  it('root by --user is denied on a non-root image, whose own user is allowed; no cache entry answers for another user', async () => {
    const image = `${R}/dk/app:v1`;
    // the image's own user: allowed, then served from the cache
    const own = await decideAs(image, { service: 'payments', task: 'payments.1' });
    expect(own).toMatchObject({ decision: 'allow', cached: false, decidedBy: 'client:plugin' });
    expect(nonRoot(own)).toMatchObject({ ok: true, detail: 'image runs as "app"' });
    expect((await decideAs(image)).cached).toBe(true);

    // the same digest, --user root: denied, never taken from the allow above
    const { result: root, events } = await capture(tb, () => decideAs(image, { containerUser: 'root', service: 'payments', task: 'payments.1', image }));
    expect(root).toMatchObject({ decision: 'deny', cached: false });
    expect(nonRoot(root)).toMatchObject({ ok: false, code: 'runs_as_root', detail: 'container runs as root (user "root")' });
    expect(only(events, 'release.decide')).toMatchObject([
      { actorName: 'plugin', outcome: 'deny', details: { decision: 'deny', containerUser: 'root', context: { service: 'payments', task: 'payments.1', image } } },
    ]);
    // its own cache entry: a second root request is served from it, still a deny
    expect(await decideAs(image, { containerUser: 'root' })).toMatchObject({ decision: 'deny', cached: true });
    for (const user of ['0', '0:0', 'root:root', '00']) expect((await decideAs(image, { containerUser: user })).decision, user).toBe('deny');

    // "" is the image's user: the image's cached allow answers; so do operators, as before
    expect(await decideAs(image, { containerUser: '' })).toMatchObject({ decision: 'allow', cached: true });
    const operator = await tb.request.post('/v1/releases').set(writer).send({ image });
    expect(operator.body).toMatchObject({ decision: 'allow', cached: true });
    expect(await decideAs(image, { containerUser: '1000:1000' })).toMatchObject({ decision: 'allow' });
  });

  it('a root image is allowed only with a non-root --user', async () => {
    const image = `${R}/dk/rootimg:v1`;
    const own = await decideAs(image);
    expect(own.decision).toBe('deny');
    expect(nonRoot(own)).toMatchObject({ ok: false, detail: 'image runs as root (no User set)' });
    const asUser = await decideAs(image, { containerUser: '1000' });
    expect(asUser).toMatchObject({ decision: 'allow', cached: false });
    expect(nonRoot(asUser)).toMatchObject({ ok: true, detail: 'container runs as "1000"' });
    expect((await decideAs(image, { containerUser: '1000' })).cached).toBe(true);
    expect((await decideAs(image)).decision).toBe('deny');
  });

  it('a policy without nonRootUser ignores the container user', async () => {
    await upsertPolicy(tb, admin, { name: 'docker-any', images: [`${R}/dkany/*`], rules: { requiredLabels: { team: '*' } } });
    await pushTestImage(R, 'dkany/app', 'v1', { labels: { team: 'payments' } });
    const image = `${R}/dkany/app:v1`;
    expect(await decideAs(image)).toMatchObject({ decision: 'allow', cached: false });
    // the same cache entry, whatever the user: the policy does not judge it
    expect(await decideAs(image, { containerUser: 'root' })).toMatchObject({ decision: 'allow', cached: true });
  });
});
