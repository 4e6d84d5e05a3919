/**
 * Registry credentials (src/trust/registry/registry-credentials-service.ts): the mapping of a
 * registry to the secret holding the broker's credentials for it. The routes are unchanged; the
 * mapping now lives in its own service and repository and takes its time from the injected clock.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { auth, expectProblem } from '../signing/helpers.js';

/** The broker's clock runs this far ahead of the wall clock. */
const CLOCK_OFFSET_MS = 5 * 24 * 3600 * 1000;

let tb: TestBroker;

describe('registry credentials', () => {
  beforeAll(async () => {
    tb = await startTestBroker({ clock: () => Date.now() + CLOCK_OFFSET_MS });
    for (const name of ['reg-a', 'reg-b']) {
      const res = await tb.request.post('/v1/secrets').set(auth(tb.adminKey)).send({ name, value: JSON.stringify({ username: 'u', password: 'p' }) });
      expect(res.status, res.text).toBe(201);
    }
  });
  afterAll(async () => {
    await tb?.close();
  });

  const put = (registry: string, body: unknown) => tb.request.put(`/v1/registry-credentials/${registry}`).set(auth(tb.adminKey)).send(body as object);
  const storedRow = async (registry: string) => (await tb.broker.services.db('registry_credentials').where({ registry }).first()) as { secret_name: string; created_at: number } | undefined;

  it('records the mapping at the time of the injected clock, and keeps it when the secret changes', async () => {
    const before = Date.now();
    const res = await put('registry.example:5000', { secret: 'reg-a' });
    expect(res.status, res.text).toBe(200);
    expect(res.body).toEqual({ registry: 'registry.example:5000', secret: 'reg-a' });
    const first = await storedRow('registry.example:5000');
    expect(first?.secret_name).toBe('reg-a');
    // the broker's clock, not the wall clock (Date.now() here would be before + a few ms)
    expect(Number(first?.created_at)).toBeGreaterThanOrEqual(before + CLOCK_OFFSET_MS);

    const again = await put('registry.example:5000', { secret: 'reg-b' });
    expect(again.status, again.text).toBe(200);
    const second = await storedRow('registry.example:5000');
    expect(second?.secret_name).toBe('reg-b');
    expect(Number(second?.created_at)).toBe(Number(first?.created_at));
  });

  it('lists mappings in registry order to auditors', async () => {
    expect((await put('a.example', { secret: 'reg-a' })).status).toBe(200);
    const auditor = await tb.apiKey('auditor');
    const res = await tb.request.get('/v1/registry-credentials').set(auth(auditor));
    expect(res.status, res.text).toBe(200);
    expect(res.body.items).toEqual([
      { registry: 'a.example', secret: 'reg-a' },
      { registry: 'registry.example:5000', secret: 'reg-b' },
    ]);
  });

  it('checks the registry before the body and the body before the secret', async () => {
    const badHost = await put('bad_host!', { secret: 'missing', extra: 1 });
    expectProblem(badHost, 400);
    expect(badHost.body.detail).toBe('registry must be a host or host:port');
    const badBody = await put('b.example', { secret: 'missing', extra: 1 });
    expectProblem(badBody, 400);
    expect(badBody.body.detail).toMatch(/^invalid body: /);
    const missing = await put('b.example', { secret: 'missing' });
    expectProblem(missing, 400);
    expect(missing.body.detail).toBe('secret missing does not exist');
    expect(await storedRow('b.example')).toBeUndefined();
  });
});
