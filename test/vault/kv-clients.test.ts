import { execFile } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listen, type RunningServer } from '../../src/http/server.js';
import { markSensitive } from '../core/helpers.js';
import { capture } from '../support/audit-events.js';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { hvacAvailable, SYSTEM_PYTHON } from '../support/hvac.js';

const run = promisify(execFile);
const here = path.dirname(fileURLToPath(import.meta.url));
const hvac = hvacAvailable();
const CAS = 'check-and-set parameter did not match the current version';

/**
 * The real Vault clients on Keywarden's KV v2, unchanged: node-vault (npm) and hvac (Debian's
 * python3-hvac) each run their script (test/vault/clients/*-kv.*, the README's snippets) against
 * a listening broker (so LIST goes through the server's LIST rewrite), and this checks what every
 * call returned or raised, and what the audit log says about it.
 */
describe('Vault clients on KV v2: write with cas, read, metadata, list, delete/undelete, ungranted read', () => {
  let tb: TestBroker;
  let server: RunningServer;
  let writerKey: string;
  let role: { clientId: string; clientSecret: string };

  beforeAll(async () => {
    tb = await startTestBroker();
    writerKey = await tb.apiKey('writer');
    markSensitive(writerKey);
    await tb.request.post('/v1/groups').set({ Authorization: `Bearer ${writerKey}` }).send({ name: 'payments' });
    const client = await tb.client('billing', ['payments']);
    role = { clientId: client.clientId, clientSecret: client.clientSecret };
    markSensitive(role.clientSecret);
    server = await listen(tb.broker.app, { listen: { host: '127.0.0.1', port: 0 }, tls: undefined });
  });
  afterAll(async () => {
    await server?.close();
    await tb?.close();
  });

  async function runClient(command: string, script: string, prefix: string): Promise<any> {
    const { stdout } = await run(command, [path.join(here, 'clients', script)], {
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        VAULT_ADDR: server.url,
        WRITER_TOKEN: writerKey,
        ROLE_ID: role.clientId,
        SECRET_ID: role.clientSecret,
        GROUP: 'payments',
        PREFIX: prefix,
      },
      timeout: 60_000,
    });
    return JSON.parse(stdout);
  }

  /** The audit trail a client run leaves, the same for both libraries. */
  function expectAudited(events: Awaited<ReturnType<typeof capture>>['events'], prefix: string) {
    const of = (action: string, name: string) => events.filter((e) => e.action === action && e.resourceName === name);
    expect(of('secret.create', `${prefix}.app.db`)).toHaveLength(1);
    expect(of('secret.version.create', `${prefix}.app.db`)).toHaveLength(1);
    // the ungranted read, the missing one, the one before the grant and the one after the delete: denied reads on the record
    expect(of('secret.read', `${prefix}.other`)).toEqual([expect.objectContaining({ outcome: 'deny', actorKind: 'client', actorName: 'billing' })]);
    expect(of('secret.read', `${prefix}.nothing`)).toEqual([expect.objectContaining({ outcome: 'deny' })]);
    const reads = of('secret.read', `${prefix}.app.db`);
    expect(reads.map((e) => `${e.outcome}:${(e.details as { version?: number }).version ?? ''}`)).toEqual(['deny:', 'allow:2', 'allow:1', 'deny:', 'allow:2']);
    expect(of('secret.delete', `${prefix}.app.db`)).toHaveLength(1);
    expect(of('secret.restore', `${prefix}.app.db`)).toHaveLength(1);
  }

  it('node-vault', async () => {
    const { result: r, events } = await capture(tb, () => runClient(process.execPath, 'node-vault-kv.mjs', 'nv'));
    expect(r.v1).toMatchObject({ version: 1, destroyed: false });
    expect(r.v2).toMatchObject({ version: 2 });
    expect(r.casMismatch.error).toMatchObject({ name: 'ApiResponseError', message: CAS, statusCode: 400 });
    // ungranted, missing, not yet granted, deleted: Vault's bare 404, which node-vault reports as "Status 404"
    for (const step of [r.beforeGrant, r.ungranted, r.missing, r.afterDelete]) expect(step.error).toMatchObject({ message: 'Status 404', statusCode: 404, body: { errors: [] } });
    expect(r.grant).toBe(200);
    expect(r.latest).toMatchObject({ data: { user: 'svc', password: 'p2' }, metadata: { version: 2 } });
    expect(r.first).toMatchObject({ data: { user: 'svc', password: 'p1' }, metadata: { version: 1 } });
    expect(r.metadata).toMatchObject({ current_version: 2 });
    expect(Object.keys(r.metadata.versions)).toEqual(['1', '2']);
    expect(r.restored).toMatchObject({ data: { password: 'p2' }, metadata: { version: 2 } });
    expect(r.destroy.error).toMatchObject({ statusCode: 400, message: expect.stringMatching(/destroy is not supported/) });
    expect(r.list).toEqual({ keys: ['db'] });
    expect(r.listGetFallback).toEqual({ keys: ['app/'] });
    expectAudited(events, 'nv');
  });

  it.skipIf(!hvac.ok)('hvac', async () => {
    const { result: r, events } = await capture(tb, () => runClient(SYSTEM_PYTHON, 'hvac-kv.py', 'py'));
    expect(r.v1).toMatchObject({ version: 1, destroyed: false });
    expect(r.v2).toMatchObject({ version: 2 });
    expect(r.cas_mismatch.error).toMatchObject({ name: 'InvalidRequest', errors: [CAS] });
    // hvac raises InvalidPath for Vault's 404, whatever the reason: ungranted and missing look alike
    for (const step of [r.before_grant, r.ungranted, r.missing, r.after_delete]) expect(step.error).toMatchObject({ name: 'InvalidPath' });
    expect(r.grant).toBe(200);
    expect(r.latest).toMatchObject({ data: { user: 'svc', password: 'p2' }, metadata: { version: 2 } });
    expect(r.first).toMatchObject({ data: { user: 'svc', password: 'p1' }, metadata: { version: 1 } });
    expect(r.metadata).toMatchObject({ current_version: 2 });
    expect(r.restored).toMatchObject({ data: { password: 'p2' } });
    expect(r.destroy.error).toMatchObject({ name: 'InvalidRequest', errors: [expect.stringMatching(/destroy is not supported/)] });
    expect(r.list).toEqual({ keys: ['db'] });
    expectAudited(events, 'py');
  });
});
