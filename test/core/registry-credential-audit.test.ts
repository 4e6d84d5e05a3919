import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuditEvent } from '../../src/audit/audit-types.js';
import { capture } from '../support/audit-events.js';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { pushTestImage, registryAvailable, startRegistry, startTokenAuthProxy, type TestRegistry, type TokenAuthProxy } from '../support/registry.js';
import { auth, markSensitive } from './helpers.js';

/**
 * "Every read is audited" includes the broker's own: when it decrypts a registry credential
 * (a secret named in /v1/registry-credentials) to sign an image or to run a release-gate check,
 * that is a `secret.read` by the broker, naming the secret, the registry and why, never the
 * value. Real docker-registry behind a token-auth proxy that demands the credential.
 */
const available = registryAvailable().ok;
const CREDS = { username: 'ci-bot', password: `pw-${Math.random().toString(36).slice(2)}-registry-secret` };

describe.skipIf(!available)('the broker’s own reads of registry credentials are audited', () => {
  let tb: TestBroker;
  let reg: TestRegistry;
  let proxy: TokenAuthProxy;

  beforeAll(async () => {
    reg = await startRegistry();
    proxy = await startTokenAuthProxy(reg.hostPort, CREDS);
    tb = await startTestBroker({ env: { KEYWARDEN_INSECURE_REGISTRIES: [reg.hostPort, proxy.hostPort].join(',') } });
    markSensitive(CREDS.password);
    const admin = auth(tb.adminKey);
    expect((await tb.request.post('/v1/signing-keys').set(admin).send({ name: 'release' })).status).toBe(201);
    expect((await tb.request.post('/v1/secrets').set(admin).send({ name: 'registry.ci-bot', value: JSON.stringify(CREDS) })).status).toBe(201);
    const mapped = await tb.request.put(`/v1/registry-credentials/${proxy.hostPort}`).set(admin).send({ secret: 'registry.ci-bot' });
    expect(mapped.status, mapped.text).toBe(200);
    await pushTestImage(reg.hostPort, 'org/app', 'v1');
  }, 120_000);
  afterAll(async () => {
    await Promise.all([tb?.close(), proxy?.close(), reg?.stop()]);
  });

  function credentialReads(events: AuditEvent[]) {
    return events.filter((e) => e.action === 'secret.read');
  }

  function expectCredentialRead(e: AuditEvent, purpose: 'signing' | 'gate') {
    expect(e).toMatchObject({
      actorKind: 'system',
      actorName: 'keywarden',
      action: 'secret.read',
      resourceKind: 'secret',
      resourceName: 'registry.ci-bot',
      outcome: 'allow',
    });
    expect(e.details).toEqual({ version: 1, via: 'broker', use: 'registry-credentials', registry: proxy.hostPort, purpose });
  }

  it('signing an image records secret.read (purpose signing) before the credential is used', async () => {
    const { result: res, events } = await capture(tb, () =>
      tb.request.post('/v1/signatures').set(auth(tb.adminKey)).send({ image: `${proxy.hostPort}/org/app:v1`, key: 'release' }),
    );
    expect(res.status, res.text).toBe(201);
    expect(proxy.tokenRequests.some((t) => t.authorized)).toBe(true);
    const reads = credentialReads(events);
    expect(reads.length).toBeGreaterThan(0);
    for (const e of reads) expectCredentialRead(e, 'signing');
    // recorded before the signature, which needed the credential
    expect(events.findIndex((e) => e.action === 'secret.read')).toBeLessThan(events.findIndex((e) => e.action === 'image.sign'));
    expect(JSON.stringify(events)).not.toContain(CREDS.password);
  });

  it('a release-gate check records secret.read (purpose gate)', async () => {
    const admin = auth(tb.adminKey);
    const policy = await tb.request.post('/v1/policies').set(admin).send({ name: 'proxied', images: [`${proxy.hostPort}/org/app`], cosign: { keys: ['release'] } });
    expect(policy.status, policy.text).toBe(201);
    const signer = auth(await tb.apiKey('signer'));
    const { result: res, events } = await capture(tb, () => tb.request.post('/v1/releases').set(signer).send({ image: `${proxy.hostPort}/org/app:v1` }));
    expect(res.status, res.text).toBe(200);
    expect(res.body.decision, JSON.stringify(res.body.checks)).toBe('allow');
    const reads = credentialReads(events);
    expect(reads.length).toBeGreaterThan(0);
    for (const e of reads) expectCredentialRead(e, 'gate');
    expect(JSON.stringify(events)).not.toContain(CREDS.password);
  });

  it('the reads show up for the secret in the audit API, without the value', async () => {
    const auditor = auth(await tb.apiKey('auditor'));
    const res = await tb.request.get('/v1/audit').query({ action: 'secret.read', limit: 1000 }).set(auditor);
    expect(res.status, res.text).toBe(200);
    const purposes = new Set(res.body.items.filter((e: any) => e.resourceName === 'registry.ci-bot').map((e: any) => e.details.purpose));
    expect([...purposes].sort()).toEqual(['gate', 'signing']);
    expect(res.text).not.toContain(CREDS.password);
  });
});
