import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuditEvent } from '../../src/audit/audit-types.js';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { allEvents, auth, expectProblemCode } from './audit-helpers.js';

/** GET /v1/audit: filters, ordering and cursor pagination, compared with the stored log. */
describe('audit query', () => {
  let tb: TestBroker;
  let now = Date.parse('2033-01-10T00:00:00.000Z');
  const T0 = now;
  const HOUR = 3_600_000;
  let AU: Record<string, string>;
  let writer: { id: string; key: string };
  let alice: { clientId: string; token: string };
  let events: AuditEvent[];

  const q = async (query: Record<string, string | number>) => {
    const res = await tb.request.get('/v1/audit').query(query).set(AU);
    expect(res.status, res.text).toBe(200);
    return res.body as { items: AuditEvent[]; nextCursor: string | null };
  };
  const seqs = (list: AuditEvent[]) => list.map((e) => e.seq);
  const expected = (pred: (e: AuditEvent) => boolean) => seqs(events.filter(pred)).reverse(); // default order is desc

  beforeAll(async () => {
    tb = await startTestBroker({ clock: () => now });
    AU = auth(await tb.apiKey('auditor'));
    const created = await tb.request.post('/v1/api-keys').set(auth(tb.adminKey)).send({ name: 'query-writer', role: 'writer' });
    writer = { id: created.body.id, key: created.body.key };
    const W = auth(writer.key);
    now = T0 + HOUR;
    for (const g of ['g1', 'g2']) expect((await tb.request.post('/v1/groups').set(W).send({ name: g })).status).toBe(201);
    expect((await tb.request.post('/v1/secrets').set(W).send({ name: 'alpha', value: 'query-value-1', groups: ['g1'] })).status).toBe(201);
    expect((await tb.request.post('/v1/secrets').set(W).send({ name: 'beta', value: 'query-value-2', groups: ['g2'] })).status).toBe(201);
    now = T0 + 2 * HOUR;
    alice = await tb.client('alice', ['g1']);
    for (let i = 0; i < 3; i++) expect((await tb.request.get('/v1/client/secrets/alpha').set(auth(alice.token))).status).toBe(200);
    expect((await tb.request.get('/v1/client/secrets/beta').set(auth(alice.token))).status).toBe(404);
    now = T0 + 3 * HOUR;
    expect((await tb.request.patch('/v1/secrets/alpha').set(W).send({ description: 'x' })).status).toBe(200);
    expect((await tb.request.get('/v1/secrets').set(auth('kw_not-a-real-key-000000000000000'))).status).toBe(401);
    events = await allEvents(tb);
    expect(events.length).toBeGreaterThan(15);
  });
  afterAll(async () => {
    await tb?.close();
  });

  it('without filters: newest first, up to limit; order=asc reverses', async () => {
    const all = await q({ limit: 1000 });
    expect(seqs(all.items)).toEqual(seqs(events).reverse());
    expect(all.nextCursor).toBeNull();
    const asc = await q({ order: 'asc', limit: 1000 });
    expect(asc.items).toEqual(events);
    const def = await q({});
    expect(def.items).toHaveLength(Math.min(100, events.length));
  });

  it('filters by actor (name or id) and actorKind', async () => {
    expect(seqs((await q({ actor: 'alice', limit: 1000 })).items)).toEqual(expected((e) => e.actorName === 'alice'));
    expect(seqs((await q({ actor: alice.clientId, limit: 1000 })).items)).toEqual(expected((e) => e.actorId === alice.clientId));
    expect(seqs((await q({ actor: writer.id, limit: 1000 })).items)).toEqual(expected((e) => e.actorId === writer.id));
    const clientEvents = (await q({ actorKind: 'client', limit: 1000 })).items;
    expect(clientEvents.length).toBeGreaterThanOrEqual(5);
    expect(clientEvents.every((e) => e.actorKind === 'client')).toBe(true);
    expect((await q({ actor: 'nobody' })).items).toEqual([]);
  });

  it('filters by exact action and by an action family (secret.*)', async () => {
    const reads = (await q({ action: 'secret.read', limit: 1000 })).items;
    expect(seqs(reads)).toEqual(expected((e) => e.action === 'secret.read'));
    expect(reads).toHaveLength(4);
    const family = (await q({ action: 'secret.*', limit: 1000 })).items;
    expect(seqs(family)).toEqual(expected((e) => e.action.startsWith('secret.')));
    expect(new Set(family.map((e) => e.action))).toEqual(new Set(['secret.create', 'secret.read', 'secret.update']));
    expect(seqs((await q({ action: 'auth.*', limit: 1000 })).items)).toEqual(expected((e) => e.action.startsWith('auth.')));
    expect((await q({ action: 'secret' })).items).toEqual([]); // no implicit prefix match
    // LIKE wildcards in the prefix are literal
    expect((await q({ action: 'secret_*' })).items).toEqual([]);
    expect((await q({ action: 'secret_read' })).items).toEqual([]);
    expect(seqs((await q({ action: 'secret.rea*', limit: 1000 })).items)).toEqual(expected((e) => e.action === 'secret.read'));
  });

  it('filters by resource, resourceKind and outcome, and combinations', async () => {
    expect(seqs((await q({ resource: 'alpha', limit: 1000 })).items)).toEqual(expected((e) => e.resourceName === 'alpha'));
    expect(seqs((await q({ resourceKind: 'group', limit: 1000 })).items)).toEqual(expected((e) => e.resourceKind === 'group'));
    const denies = (await q({ outcome: 'deny', limit: 1000 })).items;
    expect(seqs(denies)).toEqual(expected((e) => e.outcome === 'deny'));
    expect(denies.map((e) => e.action).sort()).toEqual(['auth.failure', 'secret.read']);
    const combined = (await q({ actor: 'alice', action: 'secret.read', resource: 'alpha', outcome: 'allow', limit: 1000 })).items;
    expect(combined).toHaveLength(3);
    expect(seqs(combined)).toEqual(expected((e) => e.actorName === 'alice' && e.action === 'secret.read' && e.resourceName === 'alpha' && e.outcome === 'allow'));
  });

  it('since is inclusive, until exclusive', async () => {
    const iso = (t: number) => new Date(t).toISOString();
    const window = (await q({ since: iso(T0 + 2 * HOUR), until: iso(T0 + 3 * HOUR), limit: 1000 })).items;
    expect(seqs(window)).toEqual(expected((e) => e.ts >= T0 + 2 * HOUR && e.ts < T0 + 3 * HOUR));
    expect(window.length).toBeGreaterThan(0);
    expect(window.every((e) => e.ts === T0 + 2 * HOUR)).toBe(true);
    expect(seqs((await q({ since: iso(T0 + 3 * HOUR), limit: 1000 })).items)).toEqual(expected((e) => e.ts >= T0 + 3 * HOUR));
    expect(seqs((await q({ until: iso(T0 + HOUR), limit: 1000 })).items)).toEqual(expected((e) => e.ts < T0 + HOUR));
    // offsets other than Z are understood
    const plus2 = new Date(T0 + 2 * HOUR).toISOString().replace('T02:00:00.000Z', 'T04:00:00.000+02:00');
    expect(seqs((await q({ since: plus2, limit: 1000 })).items)).toEqual(expected((e) => e.ts >= T0 + 2 * HOUR));
  });

  it('cursor pagination walks the whole log once, in both orders and with filters', async () => {
    for (const [order, filter] of [
      ['desc', {}],
      ['asc', {}],
      ['desc', { action: 'secret.*' }],
    ] as const) {
      const seen: number[] = [];
      let cursor: string | null = null;
      let pages = 0;
      do {
        const page = await q({ order, limit: 4, ...filter, ...(cursor ? { cursor } : {}) });
        expect(page.items.length).toBeLessThanOrEqual(4);
        seen.push(...seqs(page.items));
        cursor = page.nextCursor;
        pages++;
        expect(pages).toBeLessThan(50);
      } while (cursor);
      const want = seqs(events.filter((e) => !('action' in filter) || e.action.startsWith('secret.')));
      expect(seen).toEqual(order === 'asc' ? want : want.reverse());
    }
  });

  it('rejects bad filters with a 400 problem', async () => {
    for (const query of [
      { action: 'Secret.Read' },
      { action: 'secret.*.*' },
      { action: "secret'; drop table audit_events; --" },
      { outcome: 'maybe' },
      { actorKind: 'robot' },
      { since: 'yesterday' },
      { until: '2033-01-10' },
      { order: 'sideways' },
      { limit: 0 },
      { limit: 5000 },
      { limit: 'ten' },
      { cursor: 'not-a-cursor' },
      { cursor: Buffer.from('"string"').toString('base64url') },
      { resourceKind: 'Bad Kind' },
      { unknown: 'x' },
      { actor: 'x'.repeat(201) },
    ]) {
      const res = await tb.request.get('/v1/audit').query(query).set(AU);
      expectProblemCode(res, 400, 'invalid_request');
    }
    // repeated parameters are not silently merged
    const dup = await tb.request.get('/v1/audit?action=secret.read&action=group.create').set(AU);
    expect(dup.status).toBe(400);
  });
});
